//! The names the embedded DNS answers for, network by network, and who may see them.
//!
//! Docker's embedded DNS and aardvark-dns publish, for every endpoint on a network with DNS
//! enabled, its name and its network-scoped aliases, also as `NAME.NETWORK`, and answer a
//! container only with names of the networks it is attached to. [`Names`] is one immutable
//! snapshot of all that, built by [`NamesBuilder`]; the daemon builds a new one on every change
//! and swaps it in whole, so lookups never see a half-applied change and need no lock.
//!
//! Lookups are case-insensitive (ASCII, as DNS is: RFC 4343); names are indexed lowercased
//! without a trailing dot. A name or alias that cannot be a DNS name (an empty label, a label
//! over 63 bytes, over 253 bytes in all) is not published: no query could ask for it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::HashMap;

use crate::NetId;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The longest name in presentation form without its trailing dot (RFC 1035 §2.3.4: 255 bytes
/// on the wire).
pub(crate) const MAX_NAME_TEXT: usize = 253;

/// Collects networks and endpoints, then [`NamesBuilder::build`]s the [`Names`] snapshot. The
/// order of calls does not matter, except that endpoints keep the order they were added in
/// (answers list addresses in that order, before rotation).
#[derive(Debug, Default)]
pub struct NamesBuilder {
    nets: Vec<(NetId, String)>,
    endpoints: Vec<EndpointIn>,
}

#[derive(Debug)]
struct EndpointIn {
    net: NetId,
    sandbox: String,
    name: String,
    aliases: Vec<String>,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

impl NamesBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A network whose names are published and which can be searched (DNS-enabled). `name` is
    /// the network's name (for NAME.NETWORK and PTR). Adding the same id again renames it.
    pub fn network(&mut self, id: NetId, name: &str) -> &mut Self {
        self.nets.retain(|(n, _)| *n != id);
        self.nets.push((id, name.to_owned()));
        self
    }

    /// An endpoint on `net`: `sandbox` identifies the container (its endpoints on several
    /// networks share it), `name` is the container/endpoint name, `aliases` network-scoped
    /// aliases. Endpoints of networks not added with [`NamesBuilder::network`] are ignored.
    pub fn endpoint(
        &mut self,
        net: NetId,
        sandbox: &str,
        name: &str,
        aliases: &[String],
        v4: Option<Ipv4Addr>,
        v6: Option<Ipv6Addr>,
    ) -> &mut Self {
        self.endpoints.push(EndpointIn { net, sandbox: sandbox.to_owned(), name: name.to_owned(), aliases: aliases.to_vec(), v4, v6 });
        self
    }

    pub fn build(self) -> Names {
        let mut names = Names::default();
        for (id, name) in self.nets {
            let dns_name = normalize(&name).filter(|n| valid_dns_name(n));
            names.nets.insert(id, Net { lower: dns_name.map(String::into_boxed_str), name: name.into_boxed_str() });
        }
        let mut sandboxes: Map<String, u32> = Map::default();
        for ep in self.endpoints {
            if !names.nets.contains_key(&ep.net) {
                continue;
            }
            let idx = names.endpoints.len() as u32;
            let next = sandboxes.len() as u32;
            let sandbox = *sandboxes.entry(ep.sandbox).or_insert(next);
            if sandbox == next {
                names.sandbox_nets.push(Vec::new());
            }
            let nets = &mut names.sandbox_nets[sandbox as usize];
            if !nets.contains(&ep.net) {
                nets.push(ep.net);
            }

            // The name and the aliases, lowercased, each once.
            let mut keys: Vec<String> = Vec::with_capacity(1 + ep.aliases.len());
            let mut ptr_name = None;
            for n in std::iter::once(&ep.name).chain(ep.aliases.iter()) {
                let Some(key) = normalize(n).filter(|k| valid_dns_name(k)) else { continue };
                if ptr_name.is_none() {
                    // As the endpoint calls itself, in its own case, for PTR answers.
                    ptr_name = Some(n.strip_suffix('.').unwrap_or(n).into());
                }
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            let addrs = usize::from(ep.v4.is_some()) + usize::from(ep.v6.is_some());
            names.records += keys.len() * addrs;
            for key in keys {
                names.by_name.entry(key.into_bytes().into_boxed_slice()).or_default().push(idx);
            }
            for ip in [ep.v4.map(IpAddr::V4), ep.v6.map(IpAddr::V6)].into_iter().flatten() {
                names.by_addr.entry(ip).or_default().push(idx);
                names.by_client.insert((ep.net, ip), sandbox);
            }
            names.endpoints.push(Endpoint { net: ep.net, ptr_name, v4: ep.v4, v6: ep.v6 });
        }
        names
    }
}

/// One snapshot of every published name; immutable once built.
#[derive(Debug, Default)]
pub struct Names {
    /// The DNS-enabled networks.
    nets: Map<NetId, Net>,
    endpoints: Vec<Endpoint>,
    /// Lowercased name or alias → the endpoints that carry it, in the order they were added.
    by_name: Map<Box<[u8]>, Vec<u32>>,
    /// Address → the endpoints that have it (for PTR).
    by_addr: Map<IpAddr, Vec<u32>>,
    /// (network, address) → the sandbox of the endpoint with that address there (for scope).
    by_client: Map<(NetId, IpAddr), u32>,
    /// Sandbox → the DNS-enabled networks it has endpoints on, in the order they were added.
    sandbox_nets: Vec<Vec<NetId>>,
    records: usize,
}

#[derive(Debug)]
struct Net {
    name: Box<str>,
    /// The name lowercased, if it can be the last labels of a DNS name (else no NAME.NETWORK).
    lower: Option<Box<str>>,
}

#[derive(Debug)]
struct Endpoint {
    net: NetId,
    /// The name PTR answers give (the endpoint's name, else its first alias), original case.
    ptr_name: Option<Box<str>>,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

impl Names {
    /// Whether `net` was added with [`NamesBuilder::network`] (its names are published).
    pub fn is_enabled(&self, net: NetId) -> bool {
        self.nets.contains_key(&net)
    }

    /// The networks a querier on `net` with source address `client` may see: the ingress
    /// network first, then every other DNS-enabled network the same sandbox has an endpoint on.
    /// An unknown client (not an endpoint's address on `net`, e.g. a link-local IPv6 source)
    /// sees only `net`. IPv4-mapped IPv6 clients count as their IPv4 address.
    pub fn scope(&self, net: NetId, client: IpAddr) -> Vec<NetId> {
        let mut scope = vec![net];
        if let Some(&sandbox) = self.by_client.get(&(net, client.to_canonical())) {
            scope.extend(self.sandbox_nets[sandbox as usize].iter().filter(|&&n| n != net));
        }
        scope
    }

    /// Addresses for `name` (any case, with or without trailing dot) within `scope`: the
    /// endpoints of the scope's networks whose name or alias it is, and else, for
    /// `NAME.NETWORK` with NETWORK a network in scope, the endpoints of that network named
    /// NAME. As Docker does, the whole name is tried first, then the splits from the right
    /// (`a.b.c` is `a.b` on network `c`, then `a` on network `b.c`); the first that matches
    /// wins. IPv4 addresses and IPv6 addresses in scope order (ingress network first), then in
    /// the order the endpoints were added. `Some(empty)` when the name is local but its
    /// endpoints have no address; None if the name is not local.
    pub fn lookup(&self, scope: &[NetId], name: &str) -> Option<Vec<IpAddr>> {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.len() > MAX_NAME_TEXT {
            return None;
        }
        let mut buf = [0u8; MAX_NAME_TEXT];
        let key = &mut buf[..name.len()];
        key.copy_from_slice(name.as_bytes());
        key.make_ascii_lowercase();
        self.lookup_lower(scope, key)
    }

    /// [`Names::lookup`] for a name already lowercased, without a trailing dot.
    pub(crate) fn lookup_lower(&self, scope: &[NetId], key: &[u8]) -> Option<Vec<IpAddr>> {
        if key.is_empty() {
            return None;
        }
        if let Some(found) = self.collect(scope, key, |_| true) {
            return Some(found);
        }
        let mut rest = key;
        while let Some(dot) = rest.iter().rposition(|&b| b == b'.') {
            let (prefix, suffix) = (&key[..dot], &key[dot + 1..]);
            rest = prefix;
            let named = |n: &NetId| self.nets.get(n).and_then(|n| n.lower.as_deref()).is_some_and(|l| l.as_bytes() == suffix);
            if prefix.is_empty() || !scope.iter().any(named) {
                continue;
            }
            if let Some(found) = self.collect(scope, prefix, named) {
                return Some(found);
            }
        }
        None
    }

    /// The addresses of the endpoints named `key` on the networks of `scope` that `on` accepts.
    fn collect(&self, scope: &[NetId], key: &[u8], on: impl Fn(&NetId) -> bool) -> Option<Vec<IpAddr>> {
        let eps = self.by_name.get(key)?;
        let mut found = false;
        let mut addrs = Vec::new();
        for net in scope.iter().filter(|n| on(n)) {
            for ep in eps.iter().map(|&i| &self.endpoints[i as usize]).filter(|ep| ep.net == *net) {
                found = true;
                addrs.extend(ep.v4.map(IpAddr::V4));
                addrs.extend(ep.v6.map(IpAddr::V6));
            }
        }
        found.then_some(addrs)
    }

    /// Reverse: the name for an address within scope, `name.network` (no trailing dot): the
    /// endpoint's name (its first alias if the name cannot be a DNS name), and its network's
    /// name unless that cannot be part of a DNS name or makes the whole too long. Several
    /// endpoints with the address: the first in scope order.
    pub fn reverse(&self, scope: &[NetId], ip: IpAddr) -> Option<String> {
        // Not canonicalized: the reverse name of ::ffff:a.b.c.d is not that of a.b.c.d.
        let eps = self.by_addr.get(&ip)?;
        for net in scope {
            for ep in eps.iter().map(|&i| &self.endpoints[i as usize]).filter(|ep| ep.net == *net) {
                let Some(name) = ep.ptr_name.as_deref() else { continue };
                let network = self.nets.get(net).filter(|n| n.lower.is_some()).map(|n| &*n.name);
                return Some(match network {
                    Some(network) if name.len() + 1 + network.len() <= MAX_NAME_TEXT => format!("{name}.{network}"),
                    _ => name.to_owned(),
                });
            }
        }
        None
    }

    /// The name → address records published: each distinct name or alias of an endpoint once
    /// per address it has (its `NAME.NETWORK` forms and PTRs are not counted).
    pub fn len(&self) -> usize {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The number of DNS-enabled networks.
    pub fn networks(&self) -> usize {
        self.nets.len()
    }
}

/// `name` lowercased without its trailing dot; None if empty.
fn normalize(name: &str) -> Option<String> {
    let n = name.strip_suffix('.').unwrap_or(name);
    (!n.is_empty()).then(|| n.to_ascii_lowercase())
}

/// Whether `name` (without trailing dot) is a name a query can ask: labels of 1 to 63 bytes,
/// at most 253 bytes in all.
pub(crate) fn valid_dns_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_TEXT && name.split('.').all(|l| !l.is_empty() && l.len() <= 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NetId = 1;
    const B: NetId = 2;
    const OFF: NetId = 3;

    fn v4(d: u8) -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(10, 0, 0, d))
    }

    fn ip(d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, d))
    }

    /// web on A (10.0.0.2, alias "www"), db on A and B (10.0.0.3 / .4), api on B only
    /// (10.0.0.5, with an IPv6 address), ghost on the non-DNS network OFF.
    fn names() -> Names {
        let mut b = NamesBuilder::new();
        b.network(A, "neta").network(B, "NetB");
        b.endpoint(A, "sb-web", "web", &["www".into()], v4(2), None);
        b.endpoint(A, "sb-db", "db", &[], v4(3), None);
        b.endpoint(B, "sb-db", "db", &[], v4(4), None);
        b.endpoint(B, "sb-api", "Api", &[], v4(5), Some("fd00::5".parse().unwrap()));
        b.endpoint(OFF, "sb-ghost", "ghost", &[], v4(9), None);
        b.build()
    }

    #[test]
    fn scope_is_the_ingress_then_the_sandboxs_other_networks() {
        let n = names();
        assert_eq!(n.scope(A, ip(2)), vec![A]);
        assert_eq!(n.scope(A, ip(3)), vec![A, B]);
        assert_eq!(n.scope(B, ip(4)), vec![B, A]);
        assert_eq!(n.scope(A, ip(77)), vec![A], "unknown client");
        assert_eq!(n.scope(B, ip(3)), vec![B], "db's A address is not its address on B");
        assert_eq!(n.scope(A, "::ffff:10.0.0.3".parse().unwrap()), vec![A, B], "v4-mapped");
        assert!(n.is_enabled(A) && !n.is_enabled(OFF));
    }

    #[test]
    fn lookup_by_name_alias_and_network() {
        let n = names();
        assert_eq!(n.lookup(&[A], "web"), Some(vec![ip(2)]));
        assert_eq!(n.lookup(&[A], "WWW."), Some(vec![ip(2)]));
        assert_eq!(n.lookup(&[A], "web.neta"), Some(vec![ip(2)]));
        assert_eq!(n.lookup(&[A], "web.NETA."), Some(vec![ip(2)]));
        assert_eq!(n.lookup(&[A], "api"), None, "api is on B only");
        assert_eq!(n.lookup(&[A], "api.netb"), None, "NAME.NETWORK needs the network in scope");
        assert_eq!(n.lookup(&[A, B], "api.netb"), Some(vec![ip(5), "fd00::5".parse().unwrap()]));
        assert_eq!(n.lookup(&[A, B], "web.netb"), None, "web is not on B");
        assert_eq!(n.lookup(&[A, B], "db"), Some(vec![ip(3), ip(4)]));
        assert_eq!(n.lookup(&[B, A], "db"), Some(vec![ip(4), ip(3)]), "ingress network first");
        assert_eq!(n.lookup(&[A, B], "db.netb"), Some(vec![ip(4)]));
        assert_eq!(n.lookup(&[OFF], "ghost"), None, "not a DNS network");
        assert_eq!(n.lookup(&[A], ""), None);
        assert_eq!(n.lookup(&[A], "."), None);
        // web, www: 1 each; db: 2 endpoints; Api: 2 addresses.
        assert_eq!(n.len(), 6);
    }

    #[test]
    fn reverse_gives_name_dot_network() {
        let n = names();
        assert_eq!(n.reverse(&[A], ip(2)).as_deref(), Some("web.neta"));
        assert_eq!(n.reverse(&[A, B], ip(5)).as_deref(), Some("Api.NetB"));
        assert_eq!(n.reverse(&[A], ip(5)), None, "out of scope");
        assert_eq!(n.reverse(&[OFF], ip(9)), None);
    }

    #[test]
    fn dotted_names_and_networks_split_from_the_right() {
        let mut b = NamesBuilder::new();
        b.network(A, "a.b").network(B, "b");
        b.endpoint(A, "s1", "x", &[], v4(1), None);
        b.endpoint(B, "s2", "x.a", &[], v4(2), None);
        let n = b.build();
        // x.a.b: not a name; "x.a" on network "b" comes before "x" on network "a.b".
        assert_eq!(n.lookup(&[A, B], "x.a.b"), Some(vec![ip(2)]));
        assert_eq!(n.lookup(&[A], "x.a.b"), Some(vec![ip(1)]));
    }

    #[test]
    fn invalid_names_are_not_published() {
        let mut b = NamesBuilder::new();
        b.network(A, "a");
        let long = "x".repeat(64);
        b.endpoint(A, "s", &long, &["ok".into(), "bad..dots".into()], v4(1), None);
        let n = b.build();
        assert_eq!(n.lookup(&[A], &long), None);
        assert_eq!(n.lookup(&[A], "ok"), Some(vec![ip(1)]));
        assert_eq!(n.reverse(&[A], ip(1)).as_deref(), Some("ok.a"));
        assert_eq!(n.len(), 1);
    }
}
