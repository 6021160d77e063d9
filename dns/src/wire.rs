//! Byte-level reading of DNS messages (RFC 1035 §4.1): the header, questions, resource records
//! and the EDNS OPT record, without building a message.
//!
//! The helpers of the forwarding path and the cache work on the bytes an upstream server sent:
//! they must pass them on unchanged (a re-encoded message would lose records the parser does not
//! know, and change compression) and only patch fields in place (id, TTLs, the question's case).
//! Every read is bounds-checked; nothing here panics or allocates.

use std::ops::Range;

pub(crate) const HEADER_LEN: usize = 12;
/// The record type of EDNS's OPT pseudo-record (RFC 6891).
pub(crate) const TYPE_OPT: u16 = 41;
pub(crate) const TYPE_SOA: u16 = 6;
/// Type, class, TTL and RDLENGTH after a record's owner name.
const RR_FIXED_LEN: usize = 10;
/// An OPT record with no options: root owner, type, class (payload), TTL (flags), RDLENGTH.
pub(crate) const OPT_LEN: usize = 11;
/// The longest name on the wire (RFC 1035 §2.3.4).
pub(crate) const MAX_NAME_LEN: usize = 255;

pub(crate) const FLAG_QR: u16 = 0x8000;
pub(crate) const OPCODE_MASK: u16 = 0x7800;
pub(crate) const FLAG_TC: u16 = 0x0200;
pub(crate) const FLAG_RD: u16 = 0x0100;
pub(crate) const FLAG_RA: u16 = 0x0080;
pub(crate) const FLAG_CD: u16 = 0x0010;
pub(crate) const RCODE_MASK: u16 = 0x000f;
/// The DO bit in the flags half of an OPT record's TTL (RFC 3225).
pub(crate) const EDNS_DO: u16 = 0x8000;

pub(crate) fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

pub(crate) fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// The fixed 12 bytes at the start of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) id: u16,
    pub(crate) flags: u16,
    pub(crate) qd: u16,
    pub(crate) an: u16,
    pub(crate) ns: u16,
    pub(crate) ar: u16,
}

impl Header {
    pub(crate) fn read(msg: &[u8]) -> Option<Self> {
        Some(Self { id: be16(msg, 0)?, flags: be16(msg, 2)?, qd: be16(msg, 4)?, an: be16(msg, 6)?, ns: be16(msg, 8)?, ar: be16(msg, 10)? })
    }

    pub(crate) fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        for (i, v) in [self.id, self.flags, self.qd, self.an, self.ns, self.ar].into_iter().enumerate() {
            b[2 * i..2 * i + 2].copy_from_slice(&v.to_be_bytes());
        }
        b
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    pub(crate) fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }

    pub(crate) fn opcode(&self) -> u8 {
        ((self.flags & OPCODE_MASK) >> 11) as u8
    }

    pub(crate) fn rcode(&self) -> u8 {
        (self.flags & RCODE_MASK) as u8
    }

    pub(crate) fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// The offset just past a name at `at`, which may end in a compression pointer (not followed:
/// only its two bytes are skipped).
pub(crate) fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => {
                at += 1 + usize::from(len);
                if at > msg.len() {
                    return None;
                }
            }
            0xc0 => {
                msg.get(at + 1)?;
                return Some(at + 2);
            }
            // 0x40 and 0x80 are the obsolete extended label types (RFC 6891 §5): not valid.
            _ => return None,
        }
    }
}

/// The offset just past an uncompressed name at `at` (labels of at most 63 bytes, at most 255
/// bytes in all). A question at offset 12 has nothing before it to point to, so a compressed
/// question name is treated as malformed rather than followed.
pub(crate) fn plain_name(msg: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    loop {
        let len = *msg.get(i)?;
        if len & 0xc0 != 0 {
            return None;
        }
        i += 1 + usize::from(len);
        if i - at > MAX_NAME_LEN || i > msg.len() {
            return None;
        }
        if len == 0 {
            return Some(i);
        }
    }
}

/// One question of a message: where its (uncompressed) name lies, and its type and class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Question {
    pub(crate) name: Range<usize>,
    pub(crate) qtype: u16,
    pub(crate) qclass: u16,
}

impl Question {
    /// The offset just past the question.
    pub(crate) fn end(&self) -> usize {
        self.name.end + 4
    }
}

/// The question at `at`, its name uncompressed.
pub(crate) fn question_at(msg: &[u8], at: usize) -> Option<Question> {
    let end = plain_name(msg, at)?;
    Some(Question { name: at..end, qtype: be16(msg, end)?, qclass: be16(msg, end + 2)? })
}

/// The first question of a message that has at least one.
pub(crate) fn first_question(msg: &[u8]) -> Option<Question> {
    let h = Header::read(msg)?;
    if h.qd == 0 {
        return None;
    }
    question_at(msg, HEADER_LEN)
}

/// One resource record: where it starts and ends, its type, class and TTL (and where the TTL
/// is, to patch it), and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rr {
    pub(crate) start: usize,
    pub(crate) rtype: u16,
    pub(crate) class: u16,
    pub(crate) ttl_at: usize,
    pub(crate) ttl: u32,
    pub(crate) rdata: Range<usize>,
}

impl Rr {
    pub(crate) fn end(&self) -> usize {
        self.rdata.end
    }
}

/// The record at `at` (its owner name may be compressed).
pub(crate) fn read_rr(msg: &[u8], at: usize) -> Option<Rr> {
    let fixed = skip_name(msg, at)?;
    let rtype = be16(msg, fixed)?;
    let class = be16(msg, fixed + 2)?;
    let ttl = be32(msg, fixed + 4)?;
    let rdlen = usize::from(be16(msg, fixed + 8)?);
    let data = fixed + RR_FIXED_LEN;
    if data + rdlen > msg.len() {
        return None;
    }
    Some(Rr { start: at, rtype, class, ttl_at: fixed + 4, ttl, rdata: data..data + rdlen })
}

/// A message's EDNS OPT record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opt {
    /// The UDP payload size it advertises (the record's class).
    pub(crate) payload: u16,
    /// The upper 8 bits of the extended RCODE.
    pub(crate) ext_rcode: u8,
    pub(crate) version: u8,
    /// The flags (DO is the top bit).
    pub(crate) flags: u16,
    pub(crate) rdata: Range<usize>,
}

impl Opt {
    fn of(rr: &Rr) -> Self {
        let [ext_rcode, version, f0, f1] = rr.ttl.to_be_bytes();
        Self { payload: rr.class, ext_rcode, version, flags: u16::from_be_bytes([f0, f1]), rdata: rr.rdata.clone() }
    }

    pub(crate) fn dnssec_ok(&self) -> bool {
        self.flags & EDNS_DO != 0
    }
}

/// What a walk over a whole message found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    /// The first OPT record of the additional section.
    pub(crate) opt: Option<Opt>,
    /// The offset just past the question section.
    pub(crate) questions_end: usize,
    /// The offset just past the last record; bytes after it are not part of the message.
    pub(crate) end: usize,
}

/// Walks every section of `msg`, calling `each(section, record)` for every record (section 0:
/// answer, 1: authority, 2: additional). None if the counts and the bytes disagree.
pub(crate) fn walk(msg: &[u8], mut each: impl FnMut(usize, &Rr)) -> Option<Scan> {
    let h = Header::read(msg)?;
    let mut at = HEADER_LEN;
    for _ in 0..h.qd {
        at = skip_name(msg, at)?.checked_add(4)?;
        if at > msg.len() {
            return None;
        }
    }
    let questions_end = at;
    let mut opt = None;
    for (section, count) in [h.an, h.ns, h.ar].into_iter().enumerate() {
        for _ in 0..count {
            let rr = read_rr(msg, at)?;
            if section == 2 && rr.rtype == TYPE_OPT && opt.is_none() {
                opt = Some(Opt::of(&rr));
            }
            each(section, &rr);
            at = rr.end();
        }
    }
    Some(Scan { opt, questions_end, end: at })
}

/// Appends an OPT record with no options: `payload`, extended RCODE bits, version 0, `flags`.
pub(crate) fn write_opt(out: &mut Vec<u8>, payload: u16, ext_rcode: u8, flags: u16) {
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&[ext_rcode, 0]);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_skipped_and_bounded() {
        // "a" "bc" root, then a pointer.
        let msg = [1, b'a', 2, b'b', b'c', 0, 0xc0, 0x00];
        assert_eq!(skip_name(&msg, 0), Some(6));
        assert_eq!(skip_name(&msg, 6), Some(8));
        assert_eq!(plain_name(&msg, 0), Some(6));
        assert_eq!(plain_name(&msg, 6), None, "a pointer is not a plain name");
        assert_eq!(skip_name(&[3, b'a'], 0), None, "label past the end");
        assert_eq!(skip_name(&[0x40], 0), None, "extended label type");
        assert_eq!(skip_name(&[0xc0], 0), None, "half a pointer");
        // 5 labels of 63 bytes: 320 bytes on the wire, more than 255.
        let mut long = Vec::new();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'x'; 63]);
        }
        long.push(0);
        assert!(skip_name(&long, 0).is_some());
        assert_eq!(plain_name(&long, 0), None);
    }

    #[test]
    fn walk_finds_the_opt_record() {
        let mut msg = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        msg.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        write_opt(&mut msg, 1232, 0, EDNS_DO);
        let scan = walk(&msg, |_, _| {}).unwrap();
        let opt = scan.opt.unwrap();
        assert_eq!((opt.payload, opt.version, opt.dnssec_ok()), (1232, 0, true));
        assert_eq!(scan.questions_end, HEADER_LEN + 7);
        assert_eq!(scan.end, msg.len());
        // The count says two additional records; there is one.
        msg[11] = 2;
        assert_eq!(walk(&msg, |_, _| {}), None);
    }
}
