//! The bounded hand-off of frames from the workers to one consumer thread (the slow path, the
//! NAT engine): buffers cycle between a free ring and a full ring, and a burst costs one wake-up.
//!
//! Workers never wait: a frame is copied into a buffer taken from the free ring; when none is
//! free (or the full ring is) the frame is dropped and the caller counts why. After start-up
//! nothing is allocated; a buffer's pages are touched only as far as frames reach.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::counters::Drop;
use crate::packet::PacketBuf;
use crate::sys::EventFd;
use crate::{NetId, PortId};

/// A frame handed off: `buf` as the producer filled it, from `port` in `net`.
#[derive(Debug)]
pub struct HandedFrame {
    pub buf: PacketBuf,
    pub net: NetId,
    pub port: PortId,
}

#[derive(Debug)]
pub(crate) struct Handoff {
    free: ArrayQueue<PacketBuf>,
    full: ArrayQueue<HandedFrame>,
    /// Readable (level-triggered) while a wake-up is owed to the consumer.
    pub wake: EventFd,
    /// Set by the first push after the consumer began draining, so that a burst costs one
    /// eventfd write, not one per frame; cleared by [`Handoff::begin_drain`]. While it is set,
    /// a notification is in the eventfd.
    pending: AtomicBool,
    /// What a push that finds no room counts.
    full_reason: Drop,
}

impl Handoff {
    /// `slots` buffers of `frame_capacity` bytes each.
    pub(crate) fn new(slots: usize, frame_capacity: usize, full_reason: Drop) -> std::io::Result<Self> {
        let free = ArrayQueue::new(slots);
        for _ in 0..slots {
            let _ = free.push(PacketBuf::with_frame_capacity(frame_capacity));
        }
        Ok(Self { free, full: ArrayQueue::new(slots), wake: EventFd::new()?, pending: AtomicBool::new(false), full_reason })
    }

    /// Fills a free buffer with `fill` and queues it for the consumer.
    pub(crate) fn push(&self, net: NetId, port: PortId, fill: impl FnOnce(&mut PacketBuf)) -> Result<(), Drop> {
        let Some(mut buf) = self.free.pop() else { return Err(self.full_reason) };
        fill(&mut buf);
        match self.full.push(HandedFrame { buf, net, port }) {
            Ok(()) => {
                // After the push: a drain that began before it either sees the frame or has
                // cleared `pending` first, so this swap finds it false and wakes the consumer.
                if !self.pending.swap(true, Ordering::AcqRel) {
                    self.wake.notify();
                }
                Ok(())
            }
            Err(f) => {
                let _ = self.free.push(f.buf);
                Err(self.full_reason)
            }
        }
    }

    /// Called by the consumer when woken, before it pops: from here on a push wakes it again,
    /// so it must pop until the ring is empty (or wake itself with [`Handoff::notify`]).
    pub(crate) fn begin_drain(&self) {
        self.wake.drain();
        // A swap, not a store: reading the pushers' release makes their frames visible to the
        // pops that follow.
        self.pending.swap(false, Ordering::AcqRel);
    }

    /// Wakes the consumer (more left than one round takes; work finished elsewhere).
    pub(crate) fn notify(&self) {
        self.wake.notify();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.full.is_empty()
    }

    pub(crate) fn pop(&self) -> Option<HandedFrame> {
        self.full.pop()
    }

    pub(crate) fn recycle(&self, buf: PacketBuf) {
        let _ = self.free.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_recycled_and_one_wake_per_drain() {
        let h = Handoff::new(4, 64, Drop::SlowPathFull).unwrap();
        let readable = || {
            let mut fds = [libc::pollfd { fd: h.wake.raw(), events: libc::POLLIN, revents: 0 }];
            // SAFETY: one valid pollfd, zero timeout.
            unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) == 1 }
        };
        assert!(!readable());
        for i in 0..4 {
            assert!(h.push(1, i, |b| b.fill_plain(&[i as u8; 20])).is_ok());
        }
        assert_eq!(h.push(1, 9, |_| ()), Err(Drop::SlowPathFull), "no free buffer: refused");
        assert!(readable(), "the first push woke the consumer");
        h.begin_drain();
        assert!(!readable());
        let f = h.pop().unwrap();
        assert_eq!((f.net, f.port, f.buf.wire()[10]), (1, 0, 0));
        h.recycle(f.buf);
        assert!(h.push(2, 5, |b| b.fill_plain(&[5; 20])).is_ok());
        assert!(readable(), "a push after the drain began wakes again");
        let mut n = 0;
        while let Some(f) = h.pop() {
            h.recycle(f.buf);
            n += 1;
        }
        assert_eq!((n, h.is_empty()), (4, true));
    }
}
