//! IPAM: Docker's default address pools, subnet choice, and address allocation inside a subnet.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::model::IpamConfig;

/// Docker's local default pools, in order: 172.17–19/16, 172.20/14, 172.24/14, 172.28/14 split
/// into /16s, then 192.168.0.0/16 split into /20s (moby `ipamutils`).
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let b16 = (17u8..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("prefix 16 is valid"));
    let c20 = (0u8..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).expect("prefix 20 is valid"));
    b16.chain(c20)
}

/// The first default pool that overlaps none of `used`.
pub fn pick_subnet(used: &[Ipv4Net]) -> Option<Ipv4Net> {
    default_pools().find(|p| !used.iter().any(|u| overlaps(p, u)))
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Why an address could not be allocated or a configuration is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("invalid subnet {0}: the prefix length must be at most 30 so that hosts fit")]
    SubnetTooSmall(Ipv4Net),
    #[error("gateway {0} is not inside subnet {1}")]
    GatewayOutside(Ipv4Addr, Ipv4Net),
    #[error("ip-range {0} is not inside subnet {1}")]
    RangeOutside(Ipv4Net, Ipv4Net),
    #[error("auxiliary address {0}={1} is not inside subnet {2}")]
    AuxOutside(String, Ipv4Addr, Ipv4Net),
    #[error("address {0} is not inside subnet {1}")]
    AddressOutside(Ipv4Addr, Ipv4Net),
    #[error("address {0} is reserved (network, broadcast, gateway or auxiliary address)")]
    Reserved(Ipv4Addr),
    #[error("address {0} is already in use")]
    InUse(Ipv4Addr),
    #[error("no available addresses in {0}")]
    Exhausted(Ipv4Net),
}

/// Completes and checks a subnet's configuration: the gateway defaults to the first host.
pub fn configure(
    subnet: Ipv4Net,
    ip_range: Option<Ipv4Net>,
    gateway: Option<Ipv4Addr>,
    aux: Vec<(String, Ipv4Addr)>,
) -> Result<IpamConfig, IpamError> {
    let subnet = subnet.trunc();
    if subnet.prefix_len() > 30 {
        return Err(IpamError::SubnetTooSmall(subnet));
    }
    let gateway = gateway.unwrap_or_else(|| Ipv4Addr::from(u32::from(subnet.network()) + 1));
    if !subnet.contains(&gateway) || gateway == subnet.network() || gateway == subnet.broadcast() {
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

fn reserved(cfg: &IpamConfig, a: Ipv4Addr) -> bool {
    a == cfg.subnet.network() || a == cfg.subnet.broadcast() || a == cfg.gateway || cfg.aux.values().any(|x| *x == a)
}

/// Allocates `want` if given (it must be free and inside the subnet), else the lowest free
/// address of the ip-range (or the subnet).
pub fn allocate(cfg: &IpamConfig, used: &HashSet<Ipv4Addr>, want: Option<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
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
    let range = cfg.ip_range.unwrap_or(cfg.subnet);
    let (lo, hi) = (u32::from(range.network()), u32::from(range.broadcast()));
    (lo..=hi).map(Ipv4Addr::from).find(|a| !reserved(cfg, *a) && !used.contains(a)).ok_or(IpamError::Exhausted(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn pools_follow_docker_order() {
        let p: Vec<_> = default_pools().collect();
        assert_eq!(p[0], net("172.17.0.0/16"));
        assert_eq!(p[14], net("172.31.0.0/16"));
        assert_eq!(p[15], net("192.168.0.0/20"));
        assert_eq!(p[16], net("192.168.16.0/20"));
        assert_eq!(pick_subnet(&[net("172.17.0.0/16"), net("172.18.5.0/24")]), Some(net("172.19.0.0/16")));
    }

    #[test]
    fn gateway_defaults_to_first_host_and_allocation_skips_reserved() {
        let cfg = configure(net("10.10.0.0/24"), None, None, vec![("h".into(), "10.10.0.2".parse().unwrap())]).unwrap();
        assert_eq!(cfg.gateway, Ipv4Addr::new(10, 10, 0, 1));
        let mut used = HashSet::new();
        let a = allocate(&cfg, &used, None).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 10, 0, 3), "skips network, gateway and aux");
        used.insert(a);
        assert_eq!(allocate(&cfg, &used, None).unwrap(), Ipv4Addr::new(10, 10, 0, 4));
        assert_eq!(allocate(&cfg, &used, Some(a)), Err(IpamError::InUse(a)));
        assert_eq!(allocate(&cfg, &used, Some(cfg.gateway)), Err(IpamError::Reserved(cfg.gateway)));
        let outside = Ipv4Addr::new(10, 11, 0, 5);
        assert!(matches!(allocate(&cfg, &used, Some(outside)), Err(IpamError::AddressOutside(..))));
    }

    #[test]
    fn ip_range_limits_dynamic_allocation() {
        let cfg = configure(net("10.0.0.0/16"), Some(net("10.0.5.0/30")), None, vec![]).unwrap();
        let mut used = HashSet::new();
        for want in [0, 1, 2, 3] {
            let a = allocate(&cfg, &used, None).unwrap();
            assert_eq!(a, Ipv4Addr::new(10, 0, 5, want));
            used.insert(a);
        }
        assert!(matches!(allocate(&cfg, &used, None), Err(IpamError::Exhausted(_))));
        // A static address outside the range but inside the subnet is allowed, as in Docker.
        assert!(allocate(&cfg, &used, Some(Ipv4Addr::new(10, 0, 9, 9))).is_ok());
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(matches!(configure(net("10.0.0.0/31"), None, None, vec![]), Err(IpamError::SubnetTooSmall(_))));
        assert!(matches!(
            configure(net("10.0.0.0/24"), None, Some("10.0.1.1".parse().unwrap()), vec![]),
            Err(IpamError::GatewayOutside(..))
        ));
        assert!(matches!(configure(net("10.0.0.0/24"), Some(net("10.0.1.0/28")), None, vec![]), Err(IpamError::RangeOutside(..))));
        assert!(matches!(
            configure(net("10.0.0.0/24"), None, None, vec![("x".into(), "9.9.9.9".parse().unwrap())]),
            Err(IpamError::AuxOutside(..))
        ));
    }
}
