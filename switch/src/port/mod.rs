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
}

/// Maps an error from a port read or write to whether the device is gone for good.
pub fn is_device_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBADFD) | Some(libc::EIO) | Some(libc::ENXIO) | Some(libc::ENODEV) | Some(libc::ENETDOWN))
}
