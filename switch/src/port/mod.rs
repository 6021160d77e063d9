//! Ports: one trait for every way a frame enters or leaves the switch.
//!
//! A port has one or more queues, each with a pollable fd; worker `k` reads and writes queue
//! `k % queues()`, so with multiqueue TAPs no two workers share a queue. Every queue moves
//! `[virtio_net_hdr][Ethernet frame]` (see `packet`).

use std::io;
use std::os::fd::RawFd;

pub mod afpacket;
pub mod mem;
pub mod tap;

pub use afpacket::AfPacket;
pub use mem::MemPort;
pub use tap::{Tap, TapError, TapOptions};

/// What kind of device a port is, for people reading `stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    Tap,
    AfPacket,
    Mem,
}

impl PortKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PortKind::Tap => "tap",
            PortKind::AfPacket => "afpacket",
            PortKind::Mem => "mem",
        }
    }
}

/// A device the switch forwards between. Implementations never block: `recv` returns
/// `WouldBlock` when the queue is empty and `send` returns it when the device is full.
pub trait Port: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> PortKind;
    /// The device name as the user knows it (the TAP's name inside the sandbox, the veth's name).
    fn name(&self) -> &str;
    fn queues(&self) -> usize;
    /// The fd a worker polls for queue `q` (`q < queues()`).
    fn queue_fd(&self, q: usize) -> RawFd;
    /// Reads one `[vnet hdr][frame]` into `buf`, returning its length.
    fn recv(&self, q: usize, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one `[vnet hdr][frame]`.
    fn send(&self, q: usize, wire: &[u8]) -> io::Result<()>;
    /// Called when a queue reports an error condition: clears what can be cleared and says
    /// whether the device still exists. A link that is merely down is not gone.
    fn check(&self, _q: usize) -> Health {
        Health::Gone
    }
}

/// What a port's error condition means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Still there (the link went down, or a transient error was cleared): keep polling.
    Alive,
    /// The device was destroyed: stop polling it.
    Gone,
}

/// The device was destroyed (a TAP whose interface was deleted, a socket whose device vanished).
pub fn is_device_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBADFD) | Some(libc::ENXIO) | Some(libc::ENODEV))
}

/// The device exists but its link is down (TAP not IFF_UP answers EIO; packet sockets ENETDOWN).
pub fn is_link_down(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ENETDOWN))
}
