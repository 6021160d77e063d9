//! DHCP leases: the control plane's side of the DHCP servers. Endpoints' addresses are
//! reserved for their MACs (so `connect --dhcp` hands out the IPAM address); other clients get
//! the lowest free address of the network's range. Every lease is written to disk before the
//! server acknowledges it, so leases survive a restart of the daemon.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use vswitch_router::{LeaseStore, Leases};
use vswitch_switch::{Mac, NetId};

use crate::ipam;
use crate::model::IpamConfig;
use crate::store::write_durably;

/// One lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub network_id: String,
    /// The client's identifier (DHCPv4 option 61 or chaddr; DHCPv6 DUID + IAID), hex.
    pub client: String,
    pub mac: String,
    pub addr: IpAddr,
    /// Wall-clock seconds.
    pub expires: u64,
    /// A client declined the address (someone else answers for it): quarantined until `expires`.
    #[serde(default)]
    pub declined: bool,
}

/// What the controller tells the lease store about one network.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    pub network_id: String,
    pub v4: Option<IpamConfig>,
    pub v6: Option<IpamConfig>,
    /// Endpoints' addresses by MAC: the only addresses those clients get.
    pub reserved: HashMap<Mac, (Option<Ipv4Addr>, Option<Ipv6Addr>)>,
    /// Every endpoint's address: never handed to another client.
    pub taken: HashSet<IpAddr>,
}

#[derive(Debug, Default)]
struct Inner {
    pools: HashMap<NetId, Pool>,
    leases: Vec<Lease>,
}

#[derive(Debug)]
pub struct LeaseDb {
    /// None: kept in memory only (the slirp personalities, whose leases die with them).
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl LeaseDb {
    /// Loads `leases.json` from the state directory (absent: no leases).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("leases.json");
        let leases = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Self { path: Some(path), inner: Mutex::new(Inner { pools: HashMap::new(), leases }) })
    }

    /// A store that writes nothing to disk.
    pub fn in_memory() -> Self {
        Self { path: None, inner: Mutex::new(Inner::default()) }
    }

    pub fn set_pool(&self, net: NetId, pool: Option<Pool>) {
        let mut i = self.inner.lock();
        match pool {
            Some(p) => {
                i.pools.insert(net, p);
            }
            None => {
                i.pools.remove(&net);
            }
        }
    }

    /// Addresses leased on a network right now (IPAM must not give them to endpoints).
    pub fn leased(&self, network_id: &str) -> HashSet<IpAddr> {
        let now = now_secs();
        self.inner.lock().leases.iter().filter(|l| l.network_id == network_id && l.expires > now).map(|l| l.addr).collect()
    }

    /// Every lease, for `inspect`.
    pub fn list(&self, network_id: &str) -> Vec<Lease> {
        let now = now_secs();
        self.inner.lock().leases.iter().filter(|l| l.network_id == network_id && l.expires > now).cloned().collect()
    }

    /// Forgets a removed network's leases.
    pub fn forget_network(&self, network_id: &str) {
        let mut i = self.inner.lock();
        i.leases.retain(|l| l.network_id != network_id);
        let _ = save(self.path.as_deref(), &i.leases);
    }
}

fn save(path: Option<&Path>, leases: &[Lease]) -> std::io::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let bytes = serde_json::to_vec_pretty(leases).map_err(std::io::Error::other)?;
    write_durably(path, &bytes)
}

/// The lease store of one network, for one call of a DHCP server.
struct NetLeases<'a> {
    inner: &'a mut Inner,
    net: NetId,
    path: Option<&'a Path>,
    now: u64,
}

/// The address family a store serves.
trait Family: Copy + Into<IpAddr> {
    fn from_ip(a: IpAddr) -> Option<Self>;
    fn pick(r: (Option<Ipv4Addr>, Option<Ipv6Addr>)) -> Option<Self>;
    fn config(p: &Pool) -> Option<&IpamConfig>;
}

impl Family for Ipv4Addr {
    fn from_ip(a: IpAddr) -> Option<Self> {
        match a {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
    fn pick(r: (Option<Ipv4Addr>, Option<Ipv6Addr>)) -> Option<Self> {
        r.0
    }
    fn config(p: &Pool) -> Option<&IpamConfig> {
        p.v4.as_ref()
    }
}

impl Family for Ipv6Addr {
    fn from_ip(a: IpAddr) -> Option<Self> {
        match a {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
    fn pick(r: (Option<Ipv4Addr>, Option<Ipv6Addr>)) -> Option<Self> {
        r.1
    }
    fn config(p: &Pool) -> Option<&IpamConfig> {
        p.v6.as_ref()
    }
}

impl<A: Family> LeaseStore<A> for NetLeases<'_> {
    fn offer(&mut self, client: &[u8], mac: Mac, requested: Option<A>) -> Option<A> {
        let pool = self.inner.pools.get(&self.net)?;
        let cfg = A::config(pool)?;
        // An endpoint's MAC gets its endpoint's address, and nothing else.
        if let Some(r) = pool.reserved.get(&mac) {
            return A::pick(*r);
        }
        let id = hex(client);
        let live = |l: &&Lease| l.network_id == pool.network_id && l.expires > self.now && A::from_ip(l.addr).is_some();
        if let Some(l) = self.inner.leases.iter().filter(live).find(|l| l.client == id && !l.declined) {
            return A::from_ip(l.addr);
        }
        let mut used: HashSet<IpAddr> = pool.taken.clone();
        used.extend(self.inner.leases.iter().filter(live).map(|l| l.addr));
        if let Some(want) = requested {
            if let Ok(a) = ipam::allocate(cfg, &used, Some(want.into())) {
                return A::from_ip(a);
            }
        }
        ipam::allocate(cfg, &used, None).ok().and_then(A::from_ip)
    }

    fn commit(&mut self, client: &[u8], mac: Mac, addr: A, expires_at_secs: u64) -> bool {
        let Some(pool) = self.inner.pools.get(&self.net) else { return false };
        let (nid, id, addr) = (pool.network_id.clone(), hex(client), addr.into());
        let before = self.inner.leases.clone();
        let now = self.now;
        self.inner.leases.retain(|l| l.expires > now && !(l.network_id == nid && (l.client == id || l.addr == addr)));
        self.inner.leases.push(Lease {
            network_id: nid,
            client: id,
            mac: mac.to_string(),
            addr,
            expires: expires_at_secs,
            declined: false,
        });
        if let Err(e) = save(self.path, &self.inner.leases) {
            log::error!("cannot persist a DHCP lease, so it is not granted: {e}");
            self.inner.leases = before;
            return false;
        }
        true
    }

    fn release(&mut self, client: &[u8], addr: A) {
        let (id, addr) = (hex(client), addr.into());
        let Some(nid) = self.inner.pools.get(&self.net).map(|p| p.network_id.clone()) else { return };
        self.inner.leases.retain(|l| !(l.network_id == nid && l.client == id && l.addr == addr));
        let _ = save(self.path, &self.inner.leases);
    }

    fn decline(&mut self, client: &[u8], addr: A) {
        let Some(nid) = self.inner.pools.get(&self.net).map(|p| p.network_id.clone()) else { return };
        let addr = addr.into();
        self.inner.leases.retain(|l| !(l.network_id == nid && l.addr == addr));
        // Quarantined for ten minutes: another host answers for it.
        self.inner.leases.push(Lease {
            network_id: nid,
            client: hex(client),
            mac: String::new(),
            addr,
            expires: self.now + 600,
            declined: true,
        });
        let _ = save(self.path, &self.inner.leases);
    }

    fn lookup(&self, client: &[u8]) -> Option<(A, u64)> {
        let nid = &self.inner.pools.get(&self.net)?.network_id;
        let id = hex(client);
        self.inner
            .leases
            .iter()
            .find(|l| &l.network_id == nid && l.client == id && !l.declined && l.expires > self.now)
            .and_then(|l| Some((A::from_ip(l.addr)?, l.expires)))
    }
}

impl Leases for LeaseDb {
    fn with_v4(&self, net: NetId, f: &mut dyn FnMut(&mut dyn LeaseStore<Ipv4Addr>)) {
        let mut i = self.inner.lock();
        let mut s = NetLeases { inner: &mut i, net, path: self.path.as_deref(), now: now_secs() };
        f(&mut s);
    }

    fn with_v6(&self, net: NetId, f: &mut dyn FnMut(&mut dyn LeaseStore<Ipv6Addr>)) {
        let mut i = self.inner.lock();
        let mut s = NetLeases { inner: &mut i, net, path: self.path.as_deref(), now: now_secs() };
        f(&mut s);
    }

    fn wall_secs(&self) -> u64 {
        now_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, LeaseDb) {
        let d = tempfile::tempdir().unwrap();
        let db = LeaseDb::open(d.path()).unwrap();
        let cfg = ipam::configure("10.9.0.0/29".parse().unwrap(), None, None, vec![]).unwrap();
        let mut pool = Pool { network_id: "n".into(), v4: Some(cfg), ..Default::default() };
        let ep_mac = Mac([2, 0x42, 10, 9, 0, 2]);
        pool.reserved.insert(ep_mac, (Some("10.9.0.2".parse().unwrap()), None));
        pool.taken.insert("10.9.0.2".parse().unwrap());
        db.set_pool(1, Some(pool));
        (d, db)
    }

    fn offer(db: &LeaseDb, client: &[u8], mac: Mac, req: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        let mut out = None;
        db.with_v4(1, &mut |s| out = s.offer(client, mac, req));
        out
    }

    #[test]
    fn reserved_endpoints_get_their_address_others_the_lowest_free() {
        let (_d, db) = db();
        assert_eq!(offer(&db, b"ep", Mac([2, 0x42, 10, 9, 0, 2]), None), Some("10.9.0.2".parse().unwrap()));
        let vm = Mac([2, 0, 0, 0, 0, 1]);
        assert_eq!(offer(&db, b"vm1", vm, None), Some("10.9.0.3".parse().unwrap()));
        assert_eq!(offer(&db, b"vm1", vm, Some("10.9.0.2".parse().unwrap())), Some("10.9.0.3".parse().unwrap()), "no endpoint's address");
        let mut ok = false;
        db.with_v4(1, &mut |s| ok = s.commit(b"vm1", vm, "10.9.0.3".parse().unwrap(), now_secs() + 60));
        assert!(ok);
        assert_eq!(offer(&db, b"vm2", Mac([2, 0, 0, 0, 0, 2]), None), Some("10.9.0.4".parse().unwrap()));
        assert_eq!(offer(&db, b"vm1", vm, None), Some("10.9.0.3".parse().unwrap()), "a known client keeps its address");
        assert!(db.leased("n").contains(&"10.9.0.3".parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn leases_survive_reopening() {
        let (d, db) = db();
        let vm = Mac([2, 0, 0, 0, 0, 1]);
        db.with_v4(1, &mut |s| assert!(s.commit(b"vm1", vm, "10.9.0.5".parse().unwrap(), now_secs() + 60)));
        drop(db);
        let db = LeaseDb::open(d.path()).unwrap();
        assert!(db.leased("n").contains(&"10.9.0.5".parse::<IpAddr>().unwrap()));
    }
}
