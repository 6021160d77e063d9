//! pasta's port specifications (`-t`/`-u`/`-T`/`-U`): `none`, `auto`, `all`, and
//! `[ADDR[%IFACE]/]FIRST[-LAST][:TOFIRST[-TOLAST]],...` with `~FIRST[-LAST]` exclusions.

use std::net::IpAddr;

/// One `-t`/`-u` argument, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    None,
    Auto,
    /// Forwards: (host port, namespace port), exclusions already applied.
    Ports {
        addr: Option<IpAddr>,
        iface: Option<String>,
        maps: Vec<(u16, u16)>,
        /// `all`, or only exclusions: every port outside the ephemeral range, those that cannot
        /// be bound (taken, or privileged) skipped without a word, as pasta does.
        every: bool,
    },
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`), which `all` leaves out.
pub fn ephemeral() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text.split_whitespace().filter_map(|p| p.parse::<u16>().ok());
    match (it.next(), it.next()) {
        (Some(a), Some(b)) if a <= b => (a, b),
        _ => (32768, 60999),
    }
}

fn range(s: &str, what: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| format!("invalid port {p:?} in {what}"));
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(s)?;
            (p, p)
        }
    };
    if b < a {
        return Err(format!("invalid port range {s:?} in {what}: the end is below the start"));
    }
    Ok((a, b))
}

/// Parses one specification as pasta does; an error names what is wrong.
pub fn parse(spec: &str) -> Result<PortSpec, String> {
    parse_with(spec, ephemeral())
}

/// [`parse`] with the ephemeral port range given.
pub fn parse_with(spec: &str, ephemeral: (u16, u16)) -> Result<PortSpec, String> {
    match spec {
        "none" => return Ok(PortSpec::None),
        "auto" => return Ok(PortSpec::Auto),
        _ => {}
    }
    let (addr, list) = match spec.rsplit_once('/') {
        Some((a, l)) => (Some(a), l),
        None => (None, spec),
    };
    let (addr, iface) = match addr {
        None => (None, None),
        Some(a) => {
            let (a, iface) = match a.split_once('%') {
                Some((a, i)) => (a, Some(i.to_string())),
                None => (a, None),
            };
            let a = a.trim_start_matches('[').trim_end_matches(']');
            let ip = if a.is_empty() { None } else { Some(a.parse::<IpAddr>().map_err(|_| format!("invalid address {a:?} in {spec:?}"))?) };
            (ip, iface)
        }
    };
    let mut maps = Vec::new();
    let mut excluded = Vec::new();
    let mut every = false;
    for item in list.split(',') {
        if item == "all" {
            every = true;
            continue;
        }
        if let Some(ex) = item.strip_prefix('~') {
            excluded.push(range(ex, spec)?);
            continue;
        }
        let (from, to) = match item.split_once(':') {
            Some((f, t)) => (range(f, spec)?, Some(range(t, spec)?)),
            None => (range(item, spec)?, None),
        };
        let to = to.unwrap_or(from);
        if to.1 - to.0 != from.1 - from.0 {
            return Err(format!("port ranges {item:?} in {spec:?} differ in length"));
        }
        maps.extend((from.0..=from.1).zip(to.0..=to.1));
    }
    if every && !maps.is_empty() {
        return Err(format!("{spec:?}: \"all\" takes no other ports, only exclusions (~P)"));
    }
    if maps.is_empty() {
        // `all`, or only exclusions: every port outside the ephemeral range.
        every = true;
        maps.extend((1..=u16::MAX).filter(|p| !(ephemeral.0..=ephemeral.1).contains(p)).map(|p| (p, p)));
    }
    maps.retain(|(h, _)| !excluded.iter().any(|(a, b)| (a..=b).contains(&h)));
    maps.sort_unstable();
    maps.dedup_by_key(|m| m.0);
    Ok(PortSpec::Ports { addr, iface, maps, every })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(spec: &str) -> Vec<(u16, u16)> {
        match parse(spec).unwrap() {
            PortSpec::Ports { maps, .. } => maps,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forms_podman_and_users_write() {
        assert_eq!(parse("none").unwrap(), PortSpec::None);
        assert_eq!(parse("auto").unwrap(), PortSpec::Auto);
        assert_eq!(ports("8080-8080:80-80"), vec![(8080, 80)]);
        assert_eq!(ports("22"), vec![(22, 22)]);
        assert_eq!(ports("8000-8002:80-82,9000"), vec![(8000, 80), (8001, 81), (8002, 82), (9000, 9000)]);
        assert_eq!(ports("1000-1005,~1002-1003"), vec![(1000, 1000), (1001, 1001), (1004, 1004), (1005, 1005)]);
        match parse("127.0.0.1/8080-8080:80-80").unwrap() {
            PortSpec::Ports { addr, iface, maps, .. } => {
                assert_eq!((addr, iface, maps), (Some("127.0.0.1".parse().unwrap()), None, vec![(8080, 80)]));
            }
            other => panic!("{other:?}"),
        }
        match parse("::1%lo/53").unwrap() {
            PortSpec::Ports { addr, iface, .. } => assert_eq!((addr, iface.as_deref()), (Some("::1".parse().unwrap()), Some("lo"))),
            other => panic!("{other:?}"),
        }
        match parse("[::]/443").unwrap() {
            PortSpec::Ports { addr, .. } => assert_eq!(addr, Some("::".parse().unwrap())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn all_and_exclusions_alone_are_every_port_outside_the_ephemeral_range() {
        let every = |spec: &str| match parse_with(spec, (32768, 60999)).unwrap() {
            PortSpec::Ports { maps, every, addr, .. } => (maps, every, addr),
            other => panic!("{other:?}"),
        };
        let (maps, all, addr) = every("all");
        assert!(all && addr.is_none());
        assert_eq!(maps.len(), 32767 + (65535 - 60999));
        assert_eq!((maps[0], maps[32766], maps[32767], maps[maps.len() - 1]), ((1, 1), (32767, 32767), (61000, 61000), (65535, 65535)));
        let (maps, all, _) = every("~22,~8000-8999");
        assert!(all && !maps.iter().any(|m| m.0 == 22 || (8000..=8999).contains(&m.0)));
        assert_eq!(maps.len(), 32767 + (65535 - 60999) - 1 - 1000);
        let (maps, all, addr) = every("127.0.0.1/all,~80");
        assert!(all && addr == Some("127.0.0.1".parse().unwrap()) && maps.len() == 32767 + 4536 - 1);
        // Listed ports are not "every": a port that cannot be bound is an error for them.
        assert!(!every("80").1);
        // An ephemeral range up to 65535 leaves nothing above it.
        match parse_with("all", (1024, 65535)).unwrap() {
            PortSpec::Ports { maps, .. } => assert_eq!(maps.last(), Some(&(1023, 1023))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (spec, expect) in [
            ("0", "invalid port"),
            ("70000", "invalid port"),
            ("90-80", "below the start"),
            ("80-81:90", "differ in length"),
            ("x/80", "invalid address"),
            ("all,80", "takes no other ports"),
            ("", "invalid port"),
        ] {
            let e = parse(spec).unwrap_err();
            assert!(e.contains(expect), "{spec}: {e}");
        }
    }
}
