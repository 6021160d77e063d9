//! The slirp engine's epoll: level-triggered for its wake-up eventfds, edge-triggered (read and write) for host sockets.
//!
//! `vswitch_switch::sys::Epoll` registers for level-triggered readability only; host TCP
//! sockets also need writability (a connect completing, a full send buffer draining), and
//! level-triggered writability would wake the engine for every idle socket. Edge-triggered
//! readiness is remembered per socket by the caller instead (readable/writable until a call
//! answers EAGAIN). Sockets leave the epoll set when they are closed (the kernel forgets a closed
//! file), so there is no removal. The only `unsafe` of the engine lives here, one kernel call per block.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Readiness reported for one registered fd.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Event {
    pub(crate) token: u64,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// EPOLLERR or EPOLLHUP: the socket failed or both halves are closed; a read or write says which.
    pub(crate) error: bool,
}

#[derive(Debug)]
pub(crate) struct Poller {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Poller {
    pub(crate) fn new(capacity: usize) -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; the result is a fresh fd nobody else owns.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fd was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)] })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a valid epoll_event that outlives the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) })?;
        Ok(())
    }

    /// Level-triggered readability (an eventfd: drained by its owner).
    pub(crate) fn add_level(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, token)
    }

    /// Edge-triggered readability and writability (a host socket).
    pub(crate) fn add_edge(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Waits up to `timeout_ms` (-1: forever) and appends what is ready to `out`.
    pub(crate) fn wait(&mut self, timeout_ms: i32, out: &mut Vec<Event>) -> io::Result<()> {
        let cap = self.events.len().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: events points to `cap` writable epoll_event slots that live through the call.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), self.events.as_mut_ptr(), cap, timeout_ms) };
        let n = match cvt(n) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        for ev in &self.events[..n] {
            // Copies: the struct is packed on x86-64.
            let (flags, token) = (ev.events, ev.u64);
            out.push(Event {
                token,
                readable: flags & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0,
                writable: flags & libc::EPOLLOUT as u32 != 0,
                error: flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0,
            });
        }
        Ok(())
    }
}
