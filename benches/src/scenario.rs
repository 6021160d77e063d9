//! vswitch-bench's scenarios: each a topology and one workload, the vswitch system it measures, the peers it compares with, and the figure that decides.

use serde::{Deserialize, Serialize};

use crate::report::{Family, Workload};
use crate::systems::Kind;

/// The figure a scenario is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// Key in a run's `metrics`.
    pub key: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
}

/// What one unit of a scenario's work is, for the CPU it costs: `per_second` turns the run's
/// metrics into units per second (`None` where the scenario measures no throughput).
#[derive(Debug, Clone, Copy)]
pub struct Work {
    /// Name of the unit, e.g. `Gbit`, `Mpkt`.
    pub unit: &'static str,
    /// Metric key holding the rate, and the factor that turns it into units per second.
    pub key: &'static str,
    pub scale: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub family: Family,
    pub workload: Workload,
    /// vswitch's own system in this scenario.
    pub subject: Kind,
    /// What it is compared with, in the order the report lists them.
    pub peers: &'static [Kind],
    /// vswitch's drop-in replacements of peers (the vswitchd binary in a peer's personality,
    /// with the peer's own command line), each compared with the peer it replaces.
    pub drop_ins: &'static [Kind],
    /// MTUs it runs at by default (the first is the one used when only one is wanted).
    pub mtus: &'static [u32],
    /// Whether an IPv6 variant exists.
    pub ipv6: bool,
    pub metric: Metric,
    pub work: Option<Work>,
}

const GBPS: Metric = Metric { key: "gbps", unit: "Gbit/s", higher_is_better: true };
const GBIT: Work = Work { unit: "Gbit", key: "gbps", scale: 1.0 };
const L2_PEERS: &[Kind] = &[Kind::Bridge, Kind::Ovs, Kind::Null];
const L3_PEERS: &[Kind] = &[Kind::KernelRouter, Kind::Null];
const NAT_PEERS: &[Kind] = &[Kind::Pasta, Kind::Slirp4netns];
const NAT_DROP_INS: &[Kind] = &[Kind::VswitchPasta, Kind::VswitchSlirp4netns];
const BOTH_MTUS: &[u32] = &[1500, 65520];
const MTU_1500: &[u32] = &[1500];

/// A NAT scenario measuring TCP throughput at both MTUs, vswitch against pasta and slirp4netns
/// and their drop-ins: they differ only in the path and the direction.
const fn nat_throughput(name: &'static str, about: &'static str, workload: Workload) -> Scenario {
    Scenario {
        name,
        about,
        family: Family::Nat,
        workload,
        subject: Kind::Vswitch,
        peers: NAT_PEERS,
        drop_ins: NAT_DROP_INS,
        mtus: BOTH_MTUS,
        ipv6: false,
        metric: GBPS,
        work: Some(GBIT),
    }
}

/// Every scenario, in the order `--list` and `run all` use.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "l2-tcp",
        about: "TCP throughput (iperf3) between two namespaces on one network",
        family: Family::Net,
        workload: Workload::Tcp,
        subject: Kind::Vswitch,
        peers: L2_PEERS,
        drop_ins: &[],
        mtus: BOTH_MTUS,
        ipv6: true,
        metric: GBPS,
        work: Some(GBIT),
    },
    Scenario {
        name: "l2-pps",
        about: "64-byte UDP packets per second received (batched sender and receiver), one network",
        family: Family::Net,
        workload: Workload::Udp,
        subject: Kind::Vswitch,
        peers: L2_PEERS,
        drop_ins: &[],
        mtus: MTU_1500,
        ipv6: true,
        metric: Metric { key: "rx_kpps", unit: "kpps", higher_is_better: true },
        work: Some(Work { unit: "Mpkt", key: "rx_kpps", scale: 1e-3 }),
    },
    Scenario {
        name: "l2-rtt",
        about: "UDP request/response round trip, one datagram in flight, one network (p50)",
        family: Family::Net,
        workload: Workload::Rtt,
        subject: Kind::Vswitch,
        peers: L2_PEERS,
        drop_ins: &[],
        mtus: MTU_1500,
        ipv6: true,
        metric: Metric { key: "p50_us", unit: "µs", higher_is_better: false },
        work: None,
    },
    Scenario {
        name: "l3-tcp",
        about: "TCP throughput between two namespaces on two networks, routed",
        family: Family::Net,
        workload: Workload::Tcp,
        subject: Kind::VswitchRouted,
        peers: L3_PEERS,
        drop_ins: &[],
        mtus: BOTH_MTUS,
        ipv6: true,
        metric: GBPS,
        work: Some(GBIT),
    },
    nat_throughput(
        "nat-out",
        "TCP throughput from a namespace to a server on the host's loopback, through the slirp engine",
        Workload::NatOut,
    ),
    nat_throughput("nat-out-rev", "nat-out with the data flowing host → namespace (iperf3 -R)", Workload::NatOutRev),
    nat_throughput("portfwd-in", "TCP throughput from the host's 127.0.0.1 into a namespace through a published port", Workload::PortfwdIn),
    nat_throughput("portfwd-in-rev", "portfwd-in with the data flowing namespace → the host's client (iperf3 -R)", Workload::PortfwdInRev),
    Scenario {
        name: "nat-rr",
        about: "TCP request/response, 1 byte each way, namespace → host loopback (p50)",
        family: Family::Nat,
        workload: Workload::NatRr,
        subject: Kind::Vswitch,
        peers: NAT_PEERS,
        drop_ins: NAT_DROP_INS,
        mtus: MTU_1500,
        ipv6: false,
        metric: Metric { key: "p50_us", unit: "µs", higher_is_better: false },
        work: None,
    },
    Scenario {
        name: "conn-rate",
        about: "new TCP connections per second through a published port (8 in flight)",
        family: Family::Nat,
        workload: Workload::ConnRate,
        subject: Kind::Vswitch,
        peers: NAT_PEERS,
        drop_ins: NAT_DROP_INS,
        mtus: MTU_1500,
        ipv6: false,
        metric: Metric { key: "conn_per_s", unit: "conn/s", higher_is_better: true },
        work: Some(Work { unit: "Mconn", key: "conn_per_s", scale: 1e-6 }),
    },
    Scenario {
        name: "dns-qps",
        about: "DNS queries per second for names the server knows (128 in flight)",
        family: Family::Dns,
        workload: Workload::DnsLocal,
        subject: Kind::Vswitch,
        peers: &[Kind::Dnsmasq],
        drop_ins: &[],
        mtus: MTU_1500,
        ipv6: false,
        metric: Metric { key: "kqps", unit: "kqps", higher_is_better: true },
        work: Some(Work { unit: "Mquery", key: "kqps", scale: 1e-3 }),
    },
    Scenario {
        name: "dns-cached-qps",
        about: "DNS queries per second for upstream names answered from the cache",
        family: Family::Dns,
        workload: Workload::DnsCached,
        subject: Kind::Vswitch,
        peers: &[Kind::Dnsmasq],
        drop_ins: &[],
        mtus: MTU_1500,
        ipv6: false,
        metric: Metric { key: "kqps", unit: "kqps", higher_is_better: true },
        work: Some(Work { unit: "Mquery", key: "kqps", scale: 1e-3 }),
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

/// Resolves names (`all` for every scenario) in the order given, without repeats; the error
/// names the unknown one and lists the known ones.
pub fn resolve(names: &[String]) -> Result<Vec<&'static Scenario>, String> {
    let mut out: Vec<&'static Scenario> = Vec::new();
    for n in names {
        let add: Vec<&'static Scenario> = if n == "all" {
            ALL.iter().collect()
        } else {
            vec![find(n).ok_or_else(|| {
                format!("unknown scenario {n:?}; expected one of: all, {}", ALL.iter().map(|s| s.name).collect::<Vec<_>>().join(", "))
            })?]
        };
        for s in add {
            if !out.iter().any(|o| o.name == s.name) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// IPv4 or IPv6 addresses on the measured path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Ip {
    #[serde(rename = "ipv4")]
    V4,
    #[serde(rename = "ipv6")]
    V6,
}

impl Ip {
    pub fn as_str(self) -> &'static str {
        match self {
            Ip::V4 => "ipv4",
            Ip::V6 => "ipv6",
        }
    }
}

/// One way of running a scenario: an MTU and an address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Variant {
    pub mtu: u32,
    pub ip: Ip,
}

impl Variant {
    /// e.g. `mtu 1500` or `mtu 65520 ipv6`.
    pub fn label(self) -> String {
        match self.ip {
            Ip::V4 => format!("mtu {}", self.mtu),
            Ip::V6 => format!("mtu {} ipv6", self.mtu),
        }
    }
}

impl Scenario {
    /// The variants to run: the scenario's MTUs that are in `mtus` (all of them when `mtus` is
    /// empty), times the asked address families it has.
    pub fn variants(&self, mtus: &[u32], ips: &[Ip]) -> Vec<Variant> {
        let mut out = Vec::new();
        for &mtu in self.mtus.iter().filter(|m| mtus.is_empty() || mtus.contains(m)) {
            for &ip in ips.iter().filter(|&&ip| ip == Ip::V4 || self.ipv6) {
                out.push(Variant { mtu, ip });
            }
        }
        out
    }

    /// Subject first, then the peers, then the drop-ins.
    pub fn systems(&self) -> Vec<Kind> {
        std::iter::once(self.subject).chain(self.peers.iter().copied()).chain(self.drop_ins.iter().copied()).collect()
    }

    /// (drop-in, the peer it replaces) for each drop-in.
    pub fn drop_in_pairs(&self) -> Vec<(Kind, Kind)> {
        self.drop_ins.iter().filter_map(|&d| Some((d, *self.peers.iter().find(|p| Some(p.as_str()) == d.personality())?))).collect()
    }
}

/// Whether a system's figure depends on the worker count (it is measured once per count of a
/// `--workers` sweep): vswitchd's modes, and OVS, given as many threads.
pub fn scales(kind: Kind) -> bool {
    kind.uses_vswitchd() || kind == Kind::Ovs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_resolve() {
        for (i, s) in ALL.iter().enumerate() {
            assert!(ALL[..i].iter().all(|o| o.name != s.name), "{} twice", s.name);
            assert_eq!(find(s.name).map(|f| f.name), Some(s.name));
            assert!(s.family == s.workload.family(), "{}: workload of another family", s.name);
            assert!(s.systems().iter().all(|p| p.takes_part(s.family)), "{}", s.name);
            assert_eq!(s.drop_in_pairs().len(), s.drop_ins.len(), "{}: a drop-in without the peer it replaces", s.name);
        }
        let names: Vec<String> = ["l2-tcp", "all", "l2-tcp"].iter().map(|s| s.to_string()).collect();
        let r = resolve(&names).unwrap();
        assert_eq!(r.len(), ALL.len());
        assert_eq!(r[0].name, "l2-tcp");
        let e = resolve(&["l2-tpc".to_string()]).unwrap_err();
        assert!(e.contains("l2-tpc") && e.contains("conn-rate"), "{e}");
    }

    #[test]
    fn variants_filter_mtus_and_families() {
        let tcp = find("l2-tcp").unwrap();
        assert_eq!(tcp.variants(&[], &[Ip::V4]).len(), 2);
        assert_eq!(tcp.variants(&[1500], &[Ip::V4, Ip::V6]), vec![Variant { mtu: 1500, ip: Ip::V4 }, Variant { mtu: 1500, ip: Ip::V6 }]);
        // No IPv6 variant for the NAT scenarios; no MTU 9000 anywhere.
        assert_eq!(find("nat-out").unwrap().variants(&[], &[Ip::V6]), vec![]);
        assert!(tcp.variants(&[9000], &[Ip::V4]).is_empty());
    }
}
