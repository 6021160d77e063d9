//! Published ports as users write them (`-p [ip:][hostport:]containerport[/proto]`, ranges,
//! `--expose`) and as Docker prints them (`80/tcp -> 0.0.0.0:8080`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// One container port published on the host. `host_port` 0 until the engine picked an
/// ephemeral one; `host_ip` None: every address, IPv4 and IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub proto: Proto,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    fn parse(s: &str, spec: &str) -> Result<Self, String> {
        match s {
            "" | "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(format!("invalid proto {s:?} in {spec:?}: expected tcp or udp")),
        }
    }
}

impl PortMapping {
    /// The host addresses it is bound on: its own, or (none given) every IPv4 and every IPv6
    /// address, on one port number.
    pub fn host_ips(&self) -> Vec<IpAddr> {
        match self.host_ip {
            Some(ip) => vec![ip],
            None => vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()],
        }
    }

    /// `80/tcp`.
    pub fn container_side(&self) -> String {
        format!("{}/{}", self.container_port, self.proto.as_str())
    }

    /// Docker's `port` line for its binding on `host`: `80/tcp -> [::]:8080`.
    pub fn line(&self, host: IpAddr) -> String {
        format!("{} -> {}:{}", self.container_side(), host_text(host), self.host_port)
    }
}

/// An address as it stands before `:port`: IPv6 in brackets.
pub fn host_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    }
}

impl std::fmt::Display for PortMapping {
    /// Docker's `port` form of its first binding: `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line(self.host_ips()[0]))
    }
}

/// `8080` or `8000-8010` (both ends inclusive, low first). `zero_ok`: a missing host port.
fn range(s: &str, what: &str, spec: &str) -> Result<(u16, u16), String> {
    let bad = || format!("invalid {what} {s:?} in {spec:?}: expected a port 1-65535 or a range like 8000-8010");
    let port = |p: &str| p.parse::<u16>().ok().filter(|&n| n > 0).ok_or_else(bad);
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(bad());
            }
            Ok((a, b))
        }
        None => port(s).map(|p| (p, p)),
    }
}

/// Parses `-p`: `[ip:][hostport:]containerport[/proto]`, each port a number or a range, an IPv6
/// address in brackets (`[::1]:8080:80`). An empty host port (`127.0.0.1::80`) or none is
/// ephemeral. Ranges must be as long on both sides.
pub fn parse_publish(spec: &str) -> Result<Vec<PortMapping>, String> {
    let (addr_ports, proto) = spec.rsplit_once('/').map_or((spec, ""), |(a, p)| (a, p));
    let proto = Proto::parse(proto, spec)?;
    let (host_ip, rest) = if let Some(r) = addr_ports.strip_prefix('[') {
        let (ip, rest) =
            r.split_once("]:").ok_or_else(|| format!("invalid address in {spec:?}: expected [IPv6]:hostport:containerport"))?;
        let ip: IpAddr = ip.parse().map_err(|_| format!("invalid host address {ip:?} in {spec:?}"))?;
        (Some(ip), rest)
    } else {
        let parts: Vec<&str> = addr_ports.split(':').collect();
        match parts.len() {
            1 | 2 => (None, addr_ports),
            3 => {
                let ip: IpAddr = parts[0].parse().map_err(|_| format!("invalid host address {:?} in {spec:?}", parts[0]))?;
                (Some(ip), &addr_ports[parts[0].len() + 1..])
            }
            _ => return Err(format!("invalid port mapping {spec:?}: expected [ip:][hostport:]containerport[/tcp|udp] (IPv6 in brackets)")),
        }
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (Some(h).filter(|h| !h.is_empty()), c),
        None => (None, rest),
    };
    let (c0, c1) = range(container, "container port", spec)?;
    let host = host.map(|h| range(h, "host port", spec)).transpose()?;
    if let Some((h0, h1)) = host {
        if h1 - h0 != c1 - c0 {
            return Err(format!("invalid port mapping {spec:?}: the host range and the container range differ in length"));
        }
    }
    Ok((c0..=c1).map(|c| PortMapping { proto, host_ip, host_port: host.map_or(0, |(h0, _)| h0 + (c - c0)), container_port: c }).collect())
}

/// Parses `--expose`: `80`, `80/udp`, `8000-8010/tcp`; with `-P` each gets an ephemeral host port.
pub fn parse_expose(spec: &str) -> Result<Vec<PortMapping>, String> {
    let (ports, proto) = spec.rsplit_once('/').map_or((spec, ""), |(a, p)| (a, p));
    let proto = Proto::parse(proto, spec)?;
    let (a, b) = range(ports, "port", spec)?;
    Ok((a..=b).map(|c| PortMapping { proto, host_ip: None, host_port: 0, container_port: c }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(proto: Proto, ip: Option<&str>, host: u16, container: u16) -> PortMapping {
        PortMapping { proto, host_ip: ip.map(|i| i.parse().unwrap()), host_port: host, container_port: container }
    }

    #[test]
    fn docker_forms() {
        use Proto::*;
        assert_eq!(parse_publish("80").unwrap(), vec![m(Tcp, None, 0, 80)]);
        assert_eq!(parse_publish("8080:80").unwrap(), vec![m(Tcp, None, 8080, 80)]);
        assert_eq!(parse_publish("5353:53/udp").unwrap(), vec![m(Udp, None, 5353, 53)]);
        assert_eq!(parse_publish("127.0.0.1:8080:80").unwrap(), vec![m(Tcp, Some("127.0.0.1"), 8080, 80)]);
        assert_eq!(parse_publish("127.0.0.1::80").unwrap(), vec![m(Tcp, Some("127.0.0.1"), 0, 80)]);
        assert_eq!(parse_publish("[::1]:8080:80/tcp").unwrap(), vec![m(Tcp, Some("::1"), 8080, 80)]);
        assert_eq!(parse_publish("8000-8002:80-82").unwrap(), vec![m(Tcp, None, 8000, 80), m(Tcp, None, 8001, 81), m(Tcp, None, 8002, 82)]);
        assert_eq!(parse_expose("53/udp").unwrap(), vec![m(Udp, None, 0, 53)]);
        assert_eq!(m(Tcp, None, 8080, 80).to_string(), "80/tcp -> 0.0.0.0:8080");
        assert_eq!(m(Udp, Some("::1"), 5353, 53).to_string(), "53/udp -> [::1]:5353");
    }

    #[test]
    fn errors_name_what_is_wrong() {
        for (spec, want) in [
            ("8000-8010:80-81", "differ in length"),
            ("0:80", "host port"),
            ("80/sctp", "expected tcp or udp"),
            ("nothost:80:80", "invalid host address"),
            ("1:2:3:4", "expected [ip:][hostport:]containerport"),
            ("90-80", "container port"),
            ("70000", "container port"),
        ] {
            let e = parse_publish(spec).unwrap_err();
            assert!(e.contains(want), "{spec}: {e}");
        }
    }
}
