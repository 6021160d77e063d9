//! vswitch's embedded DNS, sans-IO: names and aliases per network, scoping by querier, local
//! answers, and the cache of upstream answers.
//!
//! Like the router's services: no sockets, no threads, no clock (time is a parameter). The
//! daemon serves DNS at each network's gateway address over UDP and TCP and calls this crate on
//! its slow-path thread:
//!
//! 1. [`answer`] a query from the current [`Names`] snapshot (built by [`NamesBuilder`],
//!    swapped whole on every change). [`Outcome::Reply`]: send `out`. [`Outcome::Drop`]: send
//!    nothing. [`Outcome::Forward`]: the name is not local;
//! 2. for a forwarded query, try [`Cache::get`]; on a miss send the query upstream (with an id
//!    of the daemon's choosing, [`set_id`]), and when the answer comes, [`Cache::put`] it with
//!    the query as sent, put the client's id back and, over UDP, [`fit`] it to [`udp_limit`];
//!    on a timeout, [`error_reply`] with SERVFAIL.
//!
//! Semantics follow Docker's embedded DNS and aardvark-dns: see [`answer`] for what is
//! answered locally and [`Names`] for which names a querier sees. Messages are parsed and
//! written with hickory-proto; the forwarding helpers and the cache instead read and patch the
//! upstream's bytes in place (`wire`), so that what the upstream said is passed on unchanged.
//! Nothing here panics on any input: the fuzz target `dns_message` (in `fuzz/`) feeds
//! arbitrary bytes to every entry point.
//!
//! Benchmarks: `cargo bench -p vswitch-dns` (`answer()` for a local A query among 1000 names,
//! and a [`Cache::get`] hit).

#![forbid(unsafe_code)]

mod answer;
mod cache;
mod msg;
mod names;
mod wire;

/// The hickory-proto this crate speaks (its `ResponseCode` and `RecordType` are in the API).
pub use hickory_proto;

pub use answer::{answer, Outcome};
pub use cache::{Cache, CacheStats, DEFAULT_BYTES_PER_ENTRY, DEFAULT_MAX_TTL};
pub use msg::{error_reply, fit, id, question, set_id, udp_limit, EDNS_PAYLOAD, UDP_MAX, UDP_MIN};
pub use names::{Names, NamesBuilder};

/// A network's id, as the switch numbers them.
pub type NetId = u32;

/// The TTL of local answers: 0, like aardvark-dns, so that names vanish the moment an endpoint
/// disconnects (nothing downstream keeps them).
pub const LOCAL_TTL: u32 = 0;

#[cfg(test)]
mod test_util {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};

    /// A standard query for `name`, as a stub resolver sends it (RD set, id 0x1001).
    pub(crate) fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        query_with(name, qtype, |_| {})
    }

    /// [`query`], changed by `f` before it is written.
    pub(crate) fn query_with(name: &str, qtype: RecordType, f: impl FnOnce(&mut Message)) -> Vec<u8> {
        let mut m = Message::new(0x1001, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        // from_ascii keeps the case (parse() maps names through IDNA, which lowercases).
        let name = Name::from_ascii(name).unwrap();
        m.add_query(Query::query(name, qtype));
        f(&mut m);
        m.to_vec().unwrap()
    }
}
