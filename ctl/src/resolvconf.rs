//! The resolv.conf of named network namespaces (`/etc/netns/NAME/resolv.conf`, which
//! `ip netns exec` mounts over /etc/resolv.conf), pointed at the embedded DNS.
//!
//! Each file says which daemon wrote it (by its state directory), so that several daemons on
//! one host, and files a user wrote, are never touched by the wrong hand.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where iproute2 looks for a named namespace's files.
pub const ETC_NETNS: &str = "/etc/netns";
/// Where named namespaces live.
const NETNS_DIRS: [&str; 2] = ["/var/run/netns", "/run/netns"];

/// The name of a namespace that `ip netns` knows by name, from its path.
pub fn netns_name(path: &Path) -> Option<&str> {
    let parent = path.parent()?;
    NETNS_DIRS.iter().any(|d| parent == Path::new(d)).then(|| path.file_name()?.to_str())?
}

fn marker(state_dir: &Path) -> String {
    format!("# Written by vswitchd (state {}); removed when the namespace leaves its networks.\n", state_dir.display())
}

/// The file for a sandbox on `networks` (DNS-enabled, first one first), asking `server`.
pub fn render<'a>(state_dir: &Path, server: IpAddr, networks: impl Iterator<Item = &'a str>) -> String {
    let search: Vec<&str> = networks.collect();
    format!("{}nameserver {server}\nsearch {}\n", marker(state_dir), search.join(" "))
}

fn file(name: &str) -> PathBuf {
    Path::new(ETC_NETNS).join(name).join("resolv.conf")
}

fn ours(path: &Path, state_dir: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.starts_with(&marker(state_dir)))
}

/// Makes the files match `wanted` (namespace name, content): writes the missing and changed
/// ones, removes ours that are no longer wanted, and leaves any file someone else wrote alone.
pub fn sync(state_dir: &Path, wanted: &[(String, String)]) {
    for (name, text) in wanted {
        let path = file(name);
        match std::fs::read_to_string(&path) {
            Ok(old) if old == *text => continue,
            Ok(_) if !ours(&path, state_dir) => {
                log::warn!("{} exists and was not written by this daemon; leaving it as it is", path.display());
                continue;
            }
            _ => {}
        }
        let tmp = path.with_extension("vswitch-tmp");
        let r = std::fs::create_dir_all(Path::new(ETC_NETNS).join(name))
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = r {
            log::warn!("cannot write {}: {e}; the namespace's resolver will not use the embedded DNS", path.display());
        }
    }
    let Ok(dirs) = std::fs::read_dir(ETC_NETNS) else { return };
    for d in dirs.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        let path = file(&name);
        if wanted.iter().any(|(n, _)| *n == name) || !ours(&path, state_dir) {
            continue;
        }
        if let Err(e) = std::fs::remove_file(&path) {
            log::warn!("cannot remove {}: {e}", path.display());
        }
        // Only if empty: the directory may hold the user's other files.
        let _ = std::fs::remove_dir(d.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_rendering() {
        assert_eq!(netns_name(Path::new("/var/run/netns/web")), Some("web"));
        assert_eq!(netns_name(Path::new("/run/netns/web")), Some("web"));
        assert_eq!(netns_name(Path::new("/proc/123/ns/net")), None);
        assert_eq!(netns_name(Path::new("/tmp/ns/web")), None);
        let t = render(Path::new("/var/lib/vswitch"), "10.1.0.1".parse().unwrap(), ["app", "db"].into_iter());
        assert!(t.starts_with(&marker(Path::new("/var/lib/vswitch"))));
        assert!(t.ends_with("nameserver 10.1.0.1\nsearch app db\n"), "{t}");
    }
}
