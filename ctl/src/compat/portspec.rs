//! pasta's port specifications (`-t`/`-u`/`-T`/`-U`): `none`, `auto`, and
//! `[ADDR[%IFACE]/]FIRST[-LAST][:TOFIRST[-TOLAST]],...` with `~FIRST[-LAST]` exclusions.

use std::net::IpAddr;

/// One `-t`/`-u` argument, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    None,
    Auto,
    /// Explicit forwards: (host port, namespace port), exclusions already applied.
    Ports {
        addr: Option<IpAddr>,
        iface: Option<String>,
        maps: Vec<(u16, u16)>,
    },
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
    match spec {
        "none" => return Ok(PortSpec::None),
        "auto" => return Ok(PortSpec::Auto),
        "all" => return Err("port specification \"all\" is not supported by this pasta (name the ports to forward)".into()),
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
    for item in list.split(',') {
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
    if maps.is_empty() {
        return Err(format!("{spec:?} names only exclusions (forwarding every other port is not supported by this pasta)"));
    }
    maps.retain(|(h, _)| !excluded.iter().any(|(a, b)| (a..=b).contains(&h)));
    maps.sort_unstable();
    maps.dedup_by_key(|m| m.0);
    Ok(PortSpec::Ports { addr, iface, maps })
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
            PortSpec::Ports { addr, iface, maps } => {
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
    fn errors_say_what_is_wrong() {
        for (spec, expect) in [
            ("0", "invalid port"),
            ("70000", "invalid port"),
            ("90-80", "below the start"),
            ("80-81:90", "differ in length"),
            ("x/80", "invalid address"),
            ("~80", "only exclusions"),
            ("all", "not supported"),
            ("", "invalid port"),
        ] {
            let e = parse(spec).unwrap_err();
            assert!(e.contains(expect), "{spec}: {e}");
        }
    }
}
