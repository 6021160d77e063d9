//! In-memory ports for tests and benchmarks: frames injected by the test, frames captured for it.

use std::io;
use std::os::fd::RawFd;

use crossbeam_queue::ArrayQueue;

use crate::packet::VNET_HDR_LEN;
use crate::port::{Port, PortKind};
use crate::sys::EventFd;

/// A port whose wire is two bounded queues. Injected frames make its eventfd readable, so the
/// worker polls it exactly like a TAP.
#[derive(Debug)]
pub struct MemPort {
    name: String,
    rx: ArrayQueue<Vec<u8>>,
    tx: ArrayQueue<Vec<u8>>,
    ready: EventFd,
}

impl MemPort {
    pub fn new(name: &str, capacity: usize) -> io::Result<Self> {
        Ok(Self { name: name.to_string(), rx: ArrayQueue::new(capacity), tx: ArrayQueue::new(capacity), ready: EventFd::new()? })
    }

    /// Queues a bare Ethernet frame for the switch to receive; false when the queue is full.
    pub fn inject(&self, eth: &[u8]) -> bool {
        let mut v = vec![0u8; VNET_HDR_LEN];
        v.extend_from_slice(eth);
        let ok = self.rx.push(v).is_ok();
        self.ready.notify();
        ok
    }

    /// Takes the next Ethernet frame the switch transmitted on this port.
    pub fn take(&self) -> Option<Vec<u8>> {
        self.tx.pop().map(|mut v| v.split_off(VNET_HDR_LEN.min(v.len())))
    }
}

impl Port for MemPort {
    fn kind(&self) -> PortKind {
        PortKind::Mem
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn queues(&self) -> usize {
        1
    }
    fn queue_fd(&self, _q: usize) -> RawFd {
        self.ready.raw()
    }
    fn recv(&self, _q: usize, buf: &mut [u8]) -> io::Result<usize> {
        match self.rx.pop() {
            Some(v) => {
                let n = v.len().min(buf.len());
                buf[..n].copy_from_slice(&v[..n]);
                Ok(n)
            }
            None => {
                self.ready.drain();
                // A frame pushed between pop and drain must not be stranded.
                if !self.rx.is_empty() {
                    self.ready.notify();
                }
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }
    fn send(&self, _q: usize, wire: &[u8]) -> io::Result<()> {
        self.tx.push(wire.to_vec()).map_err(|_| io::Error::from(io::ErrorKind::WouldBlock))
    }
}
