//! The Internet checksum (RFC 1071) and the IPv6 pseudo-header that ICMPv6 adds to it.

/// Adds `data` to a running one's-complement sum as big-endian 16-bit words; an odd last byte
/// counts as the high half of a word (RFC 1071 §4.1). The sum is kept wide and folded once at
/// the end, which is exact for anything shorter than 2^48 bytes.
pub(crate) fn add(mut sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a running sum into the 16-bit checksum to store in a header.
pub(crate) fn finish(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 significant bits, so the cast keeps every one of them.
    !(sum as u16)
}

/// The checksum of `data` alone (IPv4 header, ICMPv4 message).
pub(crate) fn of(data: &[u8]) -> u16 {
    finish(add(0, data))
}

/// The running sum of the IPv6 pseudo-header (RFC 8200 §8.1) for an upper-layer message of
/// `len` bytes; continue it with [`add`] over the message itself.
pub(crate) fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], len: u32, next_header: u8) -> u64 {
    let sum = add(add(0, src), dst);
    add(sum, &len.to_be_bytes()) + u64::from(next_header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded), checksum 220d.
        assert_eq!(of(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0x220d);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(of(&[0x12, 0x34, 0x56]), of(&[0x12, 0x34, 0x56, 0x00]));
    }

    #[test]
    fn a_message_carrying_its_checksum_sums_to_zero() {
        let mut m = [0x45, 0x00, 0x00, 0x1c, 0xab, 0xcd, 0x00, 0x00, 0x40, 0x01, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let c = of(&m);
        m[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(of(&m), 0);
    }
}
