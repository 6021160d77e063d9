//! Packet buffers: headroom for encapsulation, then the virtio-net header, then the Ethernet frame.
//!
//! Every port moves frames as `[virtio_net_hdr (10 B)][Ethernet frame]`, so a 64 KB GSO frame
//! read from one TAP (or AF_PACKET socket) is written to another untouched: the header tells the
//! receiving kernel how to segment it and where the partial checksum lives.

use crate::Mac;

/// Room in front of every frame for pushing an outer header (VXLAN needs 50 bytes).
pub const HEADROOM: usize = 64;
/// `struct virtio_net_hdr` without `num_buffers`; TAPs are set to this size so TAP and AF_PACKET agree.
pub const VNET_HDR_LEN: usize = 10;
/// Largest frame a port may hand us: a 64 KB GSO super-frame plus Ethernet and one VLAN tag.
pub const MAX_FRAME: usize = 65535 + 14 + 4;
/// Bytes of one buffer.
pub const BUF_SIZE: usize = HEADROOM + VNET_HDR_LEN + MAX_FRAME;
/// Smallest frame we forward: an Ethernet header.
pub const ETH_HDR_LEN: usize = 14;

/// virtio_net_hdr flag: the frame carries a partial checksum to be completed by the receiver.
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// virtio_net_hdr gso types we accept (NONE, TCPV4, UDP, TCPV6, UDP_L4), ECN bit aside.
const VNET_GSO_KNOWN: [u8; 5] = [0, 1, 3, 4, 5];
const VNET_GSO_ECN: u8 = 0x80;

/// One packet buffer. Allocated once per worker at start; its pages are touched only as far as
/// frames reach, so an idle worker's pool costs address space, not resident memory.
pub struct PacketBuf {
    buf: Box<[u8]>,
    /// Bytes of `[vnet hdr][frame]` currently held, starting at `HEADROOM`.
    len: usize,
}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBuf").field("len", &self.len).finish()
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketBuf {
    pub fn new() -> Self {
        Self::with_frame_capacity(MAX_FRAME)
    }

    /// A buffer for frames of at most `frame` bytes (the slow path needs no 64 KB buffers).
    pub fn with_frame_capacity(frame: usize) -> Self {
        Self { buf: vec![0u8; HEADROOM + VNET_HDR_LEN + frame.min(MAX_FRAME)].into_boxed_slice(), len: 0 }
    }

    /// Largest Ethernet frame this buffer holds.
    pub fn frame_capacity(&self) -> usize {
        self.buf.len() - HEADROOM - VNET_HDR_LEN
    }

    /// The region a port reads `[vnet hdr][frame]` into.
    pub fn rx_area(&mut self) -> &mut [u8] {
        &mut self.buf[HEADROOM..]
    }

    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.buf.len() - HEADROOM);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `[vnet hdr][frame]`, what a port writes.
    pub fn wire(&self) -> &[u8] {
        &self.buf[HEADROOM..HEADROOM + self.len]
    }

    /// The same, writable (the router rewrites MACs and TTL in place).
    pub fn wire_mut(&mut self) -> &mut [u8] {
        &mut self.buf[HEADROOM..HEADROOM + self.len]
    }

    /// Copies a bare Ethernet frame in behind a zeroed virtio-net header (no offloads);
    /// a frame longer than the buffer is cut at its capacity (callers check first).
    pub fn fill_plain(&mut self, frame: &[u8]) {
        let n = frame.len().min(self.frame_capacity());
        self.buf[HEADROOM..HEADROOM + VNET_HDR_LEN].fill(0);
        self.buf[HEADROOM + VNET_HDR_LEN..HEADROOM + VNET_HDR_LEN + n].copy_from_slice(&frame[..n]);
        self.len = VNET_HDR_LEN + n;
    }
}

/// Read-only view of `[vnet hdr][frame]` as it came off a port. Constructed only through
/// [`Frame::parse`], after which no accessor can index out of bounds.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    wire: &'a [u8],
}

/// Why a frame was refused at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than a virtio-net header plus an Ethernet header.
    Runt,
    /// The virtio-net header names a GSO type the kernel would reject.
    BadVnetHeader,
}

impl<'a> Frame<'a> {
    pub fn parse(wire: &'a [u8]) -> Result<Self, ParseError> {
        if wire.len() < VNET_HDR_LEN + ETH_HDR_LEN {
            return Err(ParseError::Runt);
        }
        let gso = wire[1] & !VNET_GSO_ECN;
        if !VNET_GSO_KNOWN.contains(&gso) {
            return Err(ParseError::BadVnetHeader);
        }
        Ok(Self { wire })
    }

    pub fn eth(&self) -> &'a [u8] {
        &self.wire[VNET_HDR_LEN..]
    }

    pub fn dst(&self) -> Mac {
        Mac::from_slice(&self.wire[VNET_HDR_LEN..VNET_HDR_LEN + 6])
    }

    pub fn src(&self) -> Mac {
        Mac::from_slice(&self.wire[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12])
    }

    pub fn ethertype(&self) -> u16 {
        u16::from_be_bytes([self.wire[VNET_HDR_LEN + 12], self.wire[VNET_HDR_LEN + 13]])
    }

    /// True when the frame is a GSO super-frame the receiver will segment.
    pub fn is_gso(&self) -> bool {
        self.wire[1] & !VNET_GSO_ECN != 0
    }

    /// Length of the Ethernet frame, header included.
    pub fn eth_len(&self) -> usize {
        self.wire.len() - VNET_HDR_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(gso: u8, eth: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; VNET_HDR_LEN];
        v[1] = gso;
        v.extend_from_slice(eth);
        v
    }

    const ARP_BCAST: [u8; 14] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 10, 0, 0, 2, 0x08, 0x06];

    #[test]
    fn parses_addresses_and_type() {
        let w = wire(0, &ARP_BCAST);
        let f = Frame::parse(&w).unwrap();
        assert!(f.dst().is_broadcast());
        assert_eq!(f.src(), Mac([0x02, 0x42, 10, 0, 0, 2]));
        assert_eq!(f.ethertype(), 0x0806);
        assert!(!f.is_gso());
        assert_eq!(f.eth_len(), 14);
    }

    #[test]
    fn refuses_runts_and_unknown_gso() {
        assert_eq!(Frame::parse(&wire(0, &ARP_BCAST[..13])).unwrap_err(), ParseError::Runt);
        assert_eq!(Frame::parse(&[]).unwrap_err(), ParseError::Runt);
        assert_eq!(Frame::parse(&wire(2, &ARP_BCAST)).unwrap_err(), ParseError::BadVnetHeader);
        assert!(Frame::parse(&wire(1 | 0x80, &ARP_BCAST)).unwrap().is_gso());
    }

    #[test]
    fn fill_plain_prepends_zero_header() {
        let mut b = PacketBuf::new();
        b.fill_plain(&ARP_BCAST);
        assert_eq!(b.len(), VNET_HDR_LEN + 14);
        assert_eq!(&b.wire()[..VNET_HDR_LEN], &[0u8; VNET_HDR_LEN]);
        assert_eq!(&b.wire()[VNET_HDR_LEN..], &ARP_BCAST);
    }
}
