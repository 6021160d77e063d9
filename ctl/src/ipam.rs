//! IPAM: Docker's default address pools (IPv4 and a per-host ULA /48 for IPv6), subnet choice,
//! and address allocation inside a subnet, for both families.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::model::IpamConfig;

/// Docker's local default pools, in order: 172.17–19/16, 172.20/14, 172.24/14, 172.28/14 split
/// into /16s, then 192.168.0.0/16 split into /20s (moby `ipamutils`).
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let b16 = (17u8..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("prefix 16 is valid"));
    let c20 = (0u8..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).expect("prefix 20 is valid"));
    b16.chain(c20)
}

/// The first default pool that overlaps none of `used`.
pub fn pick_subnet(used: &[IpNet]) -> Option<IpNet> {
    default_pools().map(IpNet::V4).find(|p| !used.iter().any(|u| overlaps(p, u)))
}

/// The first /64 of the host's ULA /48 that overlaps none of `used`.
pub fn pick_subnet6(ula48: Ipv6Net, used: &[IpNet]) -> Option<IpNet> {
    ula48.subnets(64).ok()?.map(IpNet::V6).find(|p| !used.iter().any(|u| overlaps(p, u)))
}

/// A random ULA /48 (RFC 4193: fd00::/8 plus 40 random bits), chosen once per host.
pub fn random_ula48() -> Ipv6Net {
    let r: [u8; 5] = rand::random();
    let a = Ipv6Addr::new(0xfd00 | u16::from(r[0]), u16::from_be_bytes([r[1], r[2]]), u16::from_be_bytes([r[3], r[4]]), 0, 0, 0, 0, 0);
    Ipv6Net::new(a, 48).expect("prefix 48 is valid")
}

pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Why an address could not be allocated or a configuration is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("invalid subnet {0}: the prefix length must be at most 30 for IPv4 and 126 for IPv6 so that hosts fit")]
    SubnetTooSmall(IpNet),
    #[error("gateway {0} is not inside subnet {1}")]
    GatewayOutside(IpAddr, IpNet),
    #[error("ip-range {0} is not inside subnet {1}")]
    RangeOutside(IpNet, IpNet),
    #[error("auxiliary address {0}={1} is not inside subnet {2}")]
    AuxOutside(String, IpAddr, IpNet),
    #[error("address {0} is not inside subnet {1}")]
    AddressOutside(IpAddr, IpNet),
    #[error("address {0} is reserved (network, broadcast, gateway or auxiliary address)")]
    Reserved(IpAddr),
    #[error("address {0} is already in use")]
    InUse(IpAddr),
    #[error("no available addresses in {0}")]
    Exhausted(IpNet),
}

fn num(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn addr(v4: bool, n: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// Completes and checks a subnet's configuration: the gateway defaults to the first host.
pub fn configure(
    subnet: IpNet,
    ip_range: Option<IpNet>,
    gateway: Option<IpAddr>,
    aux: Vec<(String, IpAddr)>,
) -> Result<IpamConfig, IpamError> {
    let subnet = subnet.trunc();
    let v4 = matches!(subnet, IpNet::V4(_));
    if subnet.prefix_len() > if v4 { 30 } else { 126 } {
        return Err(IpamError::SubnetTooSmall(subnet));
    }
    let gateway = gateway.unwrap_or_else(|| addr(v4, num(subnet.network()) + 1));
    if !subnet.contains(&gateway) || gateway == subnet.network() || (v4 && gateway == subnet.broadcast()) {
        return Err(IpamError::GatewayOutside(gateway, subnet));
    }
    if let Some(r) = ip_range {
        if !subnet.contains(&r.network()) || !subnet.contains(&r.broadcast()) {
            return Err(IpamError::RangeOutside(r, subnet));
        }
    }
    for (k, a) in &aux {
        if !subnet.contains(a) {
            return Err(IpamError::AuxOutside(k.clone(), *a, subnet));
        }
    }
    Ok(IpamConfig { subnet, ip_range: ip_range.map(|r| r.trunc()), gateway, aux: aux.into_iter().collect() })
}

fn reserved(cfg: &IpamConfig, a: IpAddr) -> bool {
    let v4 = matches!(cfg.subnet, IpNet::V4(_));
    a == cfg.subnet.network() || (v4 && a == cfg.subnet.broadcast()) || a == cfg.gateway || cfg.aux.values().any(|x| *x == a)
}

/// Allocates `want` if given (it must be free and inside the subnet), else the lowest free
/// address of the ip-range (or the subnet).
pub fn allocate(cfg: &IpamConfig, used: &HashSet<IpAddr>, want: Option<IpAddr>) -> Result<IpAddr, IpamError> {
    if let Some(a) = want {
        if !cfg.subnet.contains(&a) {
            return Err(IpamError::AddressOutside(a, cfg.subnet));
        }
        if reserved(cfg, a) {
            return Err(IpamError::Reserved(a));
        }
        if used.contains(&a) {
            return Err(IpamError::InUse(a));
        }
        return Ok(a);
    }
    let v4 = matches!(cfg.subnet, IpNet::V4(_));
    let range = cfg.ip_range.unwrap_or(cfg.subnet);
    let (lo, hi) = (num(range.network()), num(range.broadcast()));
    // Only reserved and used addresses can be skipped, so this ends within |used| + |aux| + 3 steps.
    let mut n = lo;
    loop {
        let a = addr(v4, n);
        if !reserved(cfg, a) && !used.contains(&a) {
            return Ok(a);
        }
        if n == hi {
            return Err(IpamError::Exhausted(range));
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pools_follow_docker_order() {
        let p: Vec<_> = default_pools().collect();
        assert_eq!(p[0], "172.17.0.0/16".parse::<Ipv4Net>().unwrap());
        assert_eq!(p[14], "172.31.0.0/16".parse::<Ipv4Net>().unwrap());
        assert_eq!(p[15], "192.168.0.0/20".parse::<Ipv4Net>().unwrap());
        assert_eq!(p[16], "192.168.16.0/20".parse::<Ipv4Net>().unwrap());
        assert_eq!(pick_subnet(&[net("172.17.0.0/16"), net("172.18.5.0/24")]), Some(net("172.19.0.0/16")));
    }

    #[test]
    fn ula_pool_hands_out_64s() {
        let ula = random_ula48();
        assert_eq!(ula.addr().segments()[0] & 0xff00, 0xfd00);
        let first = pick_subnet6(ula, &[]).unwrap();
        assert_eq!(first.prefix_len(), 64);
        let second = pick_subnet6(ula, &[first]).unwrap();
        assert_ne!(first, second);
        assert!(IpNet::V6(ula).contains(&second));
    }

    #[test]
    fn gateway_defaults_to_first_host_and_allocation_skips_reserved() {
        let cfg = configure(net("10.10.0.0/24"), None, None, vec![("h".into(), ip("10.10.0.2"))]).unwrap();
        assert_eq!(cfg.gateway, ip("10.10.0.1"));
        let mut used = HashSet::new();
        let a = allocate(&cfg, &used, None).unwrap();
        assert_eq!(a, ip("10.10.0.3"), "skips network, gateway and aux");
        used.insert(a);
        assert_eq!(allocate(&cfg, &used, None).unwrap(), ip("10.10.0.4"));
        assert_eq!(allocate(&cfg, &used, Some(a)), Err(IpamError::InUse(a)));
        assert_eq!(allocate(&cfg, &used, Some(cfg.gateway)), Err(IpamError::Reserved(cfg.gateway)));
        assert!(matches!(allocate(&cfg, &used, Some(ip("10.11.0.5"))), Err(IpamError::AddressOutside(..))));
    }

    #[test]
    fn ipv6_allocation() {
        let cfg = configure(net("fd20::/64"), None, None, vec![]).unwrap();
        assert_eq!(cfg.gateway, ip("fd20::1"));
        let mut used = HashSet::new();
        let a = allocate(&cfg, &used, None).unwrap();
        assert_eq!(a, ip("fd20::2"));
        used.insert(a);
        assert_eq!(allocate(&cfg, &used, None).unwrap(), ip("fd20::3"));
        assert_eq!(allocate(&cfg, &used, Some(ip("fd20::ffff"))).unwrap(), ip("fd20::ffff"));
        assert!(matches!(configure(net("fd20::/127"), None, None, vec![]), Err(IpamError::SubnetTooSmall(_))));
    }

    #[test]
    fn ip_range_limits_dynamic_allocation() {
        let cfg = configure(net("10.0.0.0/16"), Some(net("10.0.5.0/30")), None, vec![]).unwrap();
        let mut used = HashSet::new();
        for want in [0, 1, 2, 3] {
            let a = allocate(&cfg, &used, None).unwrap();
            assert_eq!(a, IpAddr::V4(Ipv4Addr::new(10, 0, 5, want)));
            used.insert(a);
        }
        assert!(matches!(allocate(&cfg, &used, None), Err(IpamError::Exhausted(_))));
        // A static address outside the range but inside the subnet is allowed, as in Docker.
        assert!(allocate(&cfg, &used, Some(ip("10.0.9.9"))).is_ok());
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(matches!(configure(net("10.0.0.0/31"), None, None, vec![]), Err(IpamError::SubnetTooSmall(_))));
        assert!(matches!(configure(net("10.0.0.0/24"), None, Some(ip("10.0.1.1")), vec![]), Err(IpamError::GatewayOutside(..))));
        assert!(matches!(configure(net("10.0.0.0/24"), Some(net("10.0.1.0/28")), None, vec![]), Err(IpamError::RangeOutside(..))));
        assert!(matches!(configure(net("10.0.0.0/24"), None, None, vec![("x".into(), ip("9.9.9.9"))]), Err(IpamError::AuxOutside(..))));
    }
}
