//! The data plane as the control plane drives it: start workers, add and remove networks and
//! ports, read the FDB and the counters.
//!
//! Mutations are serialised by one mutex and published by swapping the whole [`Topology`];
//! workers never take that mutex. Port fds are registered with worker epolls after the port
//! is published and removed from them before it is withdrawn.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::counters::{PortCounters, PortTotals, WorkerCounters};
use crate::fdb::{Fdb, FdbRow, MAX_PORTS};
use crate::l3::L3Handler;
use crate::packet::PacketBuf;
use crate::port::Port;
use crate::slowpath::{SlowPathHandler, SlowRing, SlowWaker};
use crate::sys::{self, Epoll, EventFd, Ready};
use crate::topology::{Mode, NetworkConfig, NetworkEntry, PortEntry, Topology};
use crate::uplink::{Uplink, UplinkRing};
use crate::worker::{self, token, WAKE_TOKEN};
use crate::{Mac, NetId, PortId};

/// Most networks one data plane holds (the FDB key has 16 bits for the network).
pub const MAX_NETWORKS: usize = 65535;

#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// Worker threads; 0 = one per CPU this process may use.
    pub workers: usize,
    /// Pin worker `k` to the k-th allowed CPU.
    pub pin: bool,
    pub mode: Mode,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self { workers: 0, pin: true, mode: Mode::Switch }
    }
}

/// The logic plugged into the data plane: the gateway's services on the slow-path thread and
/// routing on the workers.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub slow: Option<Arc<dyn SlowPathHandler>>,
    pub l3: Option<Arc<dyn L3Handler>>,
    /// Frames the router sends out of the networks go to a NAT engine (see [`Uplink`]).
    pub uplink: bool,
}

/// A control request the data plane refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum DpError {
    #[error("no network {0} in the data plane")]
    NoNetwork(NetId),
    #[error("no port {0} in the data plane")]
    NoPort(PortId),
    #[error("network {0} still has {1} port(s)")]
    NetworkBusy(NetId, usize),
    #[error("the data plane holds its maximum of {0}")]
    Full(&'static str),
    #[error("MAC address {0} is already an endpoint's address on this network")]
    MacInUse(Mac),
    #[error("cannot register port with worker {worker}: {source}")]
    Register { worker: usize, source: io::Error },
}

pub(crate) struct WorkerShared {
    pub epoll: Epoll,
    pub waker: EventFd,
    pub counters: WorkerCounters,
    /// Advanced at every wake-up: once it moved, the worker holds no topology older than then.
    pub epoch: std::sync::atomic::AtomicU64,
}

pub(crate) struct Shared {
    pub topo: ArcSwap<Topology>,
    pub fdb: Fdb,
    pub mode: Mode,
    pub start: Instant,
    pub stop: AtomicBool,
    pub slow: Option<SlowRing>,
    pub uplink: Option<UplinkRing>,
    pub l3: Option<Arc<dyn L3Handler>>,
    pub workers: Vec<WorkerShared>,
}

impl Shared {
    /// Seconds on the data plane's clock (the FDB's time base).
    pub(crate) fn now(&self) -> u32 {
        self.start.elapsed().as_secs() as u32
    }
}

/// One port's identity and counters, for `stats`.
#[derive(Debug, Clone)]
pub struct PortStats {
    pub id: PortId,
    pub net: NetId,
    pub name: String,
    pub kind: &'static str,
    pub queues: usize,
    pub down: bool,
    pub learned: u32,
    pub totals: PortTotals,
}

/// One worker's totals, for `stats`.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    pub wakeups: u64,
    pub batches: u64,
    pub frames: u64,
}

pub struct Dataplane {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    ctl: Mutex<u32>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").field("workers", &self.shared.workers.len()).finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Starts the workers and the slow-path thread (which also ages the FDB).
    pub fn start(cfg: DataplaneConfig, hooks: Hooks) -> io::Result<Self> {
        let handler = hooks.slow;
        let cpus = sys::allowed_cpus();
        let n = if cfg.workers == 0 { cpus.len().max(1) } else { cfg.workers };
        let mut workers = Vec::with_capacity(n);
        for _ in 0..n {
            let w = WorkerShared {
                epoll: Epoll::new()?,
                waker: EventFd::new()?,
                counters: WorkerCounters::default(),
                epoch: std::sync::atomic::AtomicU64::new(0),
            };
            w.epoll.add(w.waker.raw(), WAKE_TOKEN)?;
            workers.push(w);
        }
        let shared = Arc::new(Shared {
            topo: ArcSwap::from_pointee(Topology::default()),
            fdb: Fdb::new(),
            mode: cfg.mode,
            start: Instant::now(),
            stop: AtomicBool::new(false),
            slow: if handler.is_some() { Some(SlowRing::new()?) } else { None },
            uplink: if hooks.uplink { Some(UplinkRing::new()?) } else { None },
            l3: hooks.l3,
            workers,
        });
        let mut threads = Vec::with_capacity(n + 1);
        for k in 0..n {
            let s = shared.clone();
            let cpu = (cfg.pin && !cpus.is_empty()).then(|| cpus[k % cpus.len()]);
            threads.push(std::thread::Builder::new().name(format!("vswitch-w{k}")).spawn(move || {
                if let Some(cpu) = cpu {
                    if let Err(e) = sys::pin_to_cpu(cpu) {
                        log::warn!("worker {k}: cannot pin to CPU {cpu}: {e}");
                    }
                }
                worker::run(s, k)
            })?);
        }
        let s = shared.clone();
        threads.push(std::thread::Builder::new().name("vswitch-slow".into()).spawn(move || slow_thread(s, handler))?);
        Ok(Self { shared, threads, ctl: Mutex::new(0) })
    }

    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// The engine's end of the uplink, when the data plane was started with one.
    pub fn uplink(&self) -> Option<Uplink> {
        self.shared.uplink.is_some().then(|| Uplink(self.shared.clone()))
    }

    /// Wakes the slow-path thread from elsewhere (see [`SlowWaker`]).
    pub fn slow_waker(&self) -> SlowWaker {
        SlowWaker(self.shared.clone())
    }

    pub fn now(&self) -> u32 {
        self.shared.now()
    }

    pub fn fdb(&self) -> &Fdb {
        &self.shared.fdb
    }

    /// Waits until every worker has woken up once since now (RCU's grace period), so none still
    /// works with a topology published before the call. Bounded: a stuck worker costs 200 ms.
    fn grace_period(&self) {
        let start: Vec<u64> = self.shared.workers.iter().map(|w| w.epoch.load(Relaxed)).collect();
        for w in &self.shared.workers {
            w.waker.notify();
        }
        let deadline = Instant::now() + std::time::Duration::from_millis(200);
        while Instant::now() < deadline {
            if self.shared.workers.iter().zip(&start).all(|(w, s)| w.epoch.load(Relaxed) != *s) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    fn update(&self, f: impl FnOnce(&mut Topology)) {
        let mut t = Topology::clone(&self.shared.topo.load());
        f(&mut t);
        self.shared.topo.store(Arc::new(t));
    }

    pub fn add_network(&self, config: NetworkConfig) -> Result<NetId, DpError> {
        let _g = self.ctl.lock();
        let topo = self.shared.topo.load();
        let id = match topo.networks.iter().position(Option::is_none) {
            Some(i) => i,
            None if topo.networks.len() < MAX_NETWORKS => topo.networks.len(),
            None => return Err(DpError::Full("networks")),
        } as NetId;
        self.update(|t| {
            if t.networks.len() <= id as usize {
                t.networks.resize(id as usize + 1, None);
            }
            t.networks[id as usize] = Some(NetworkEntry { id, config, ports: Vec::new() });
        });
        Ok(id)
    }

    pub fn set_network(&self, id: NetId, config: NetworkConfig) -> Result<(), DpError> {
        let _g = self.ctl.lock();
        if self.shared.topo.load().network(id).is_none() {
            return Err(DpError::NoNetwork(id));
        }
        self.update(|t| {
            if let Some(Some(n)) = t.networks.get_mut(id as usize) {
                n.config = config;
            }
        });
        Ok(())
    }

    pub fn remove_network(&self, id: NetId) -> Result<(), DpError> {
        let _g = self.ctl.lock();
        match self.shared.topo.load().network(id) {
            None => return Err(DpError::NoNetwork(id)),
            Some(n) if !n.ports.is_empty() => return Err(DpError::NetworkBusy(id, n.ports.len())),
            Some(_) => {}
        }
        self.update(|t| t.networks[id as usize] = None);
        self.grace_period();
        self.shared.fdb.flush_net(id, true);
        Ok(())
    }

    /// Attaches `port` to network `net`; `static_macs` are pinned to it in the FDB.
    pub fn add_port(&self, net: NetId, port: Arc<dyn Port>, static_macs: &[Mac]) -> Result<PortId, DpError> {
        let mut next = self.ctl.lock();
        let topo = self.shared.topo.load();
        if topo.network(net).is_none() {
            return Err(DpError::NoNetwork(net));
        }
        // Ids advance round-robin so a freed id is reused as late as possible: a stale FDB
        // entry must not point traffic at a newcomer.
        let id = (0..MAX_PORTS as u32)
            .map(|i| (*next + i) % MAX_PORTS as u32)
            .find(|&i| topo.port(i).is_none())
            .ok_or(DpError::Full("ports"))?;
        *next = (id + 1) % MAX_PORTS as u32;
        let entry = Arc::new(PortEntry {
            id,
            net,
            port,
            // One block per worker, one for the slow path, one for the uplink's engine.
            counters: Arc::new(PortCounters::new(self.workers() + 2)),
            down: Arc::new(AtomicBool::new(false)),
        });
        // Refuse before changing anything: another port owns one of these addresses.
        if let Some(m) = static_macs.iter().find(|m| self.shared.fdb.static_owner(net, **m).is_some()) {
            return Err(DpError::MacInUse(*m));
        }
        for mac in static_macs {
            self.shared.fdb.add_static(net, *mac, id);
        }
        self.update(|t| {
            if t.ports.len() <= id as usize {
                t.ports.resize(id as usize + 1, None);
            }
            t.ports[id as usize] = Some(entry.clone());
            if let Some(Some(n)) = t.networks.get_mut(net as usize) {
                n.ports.push(id);
            }
        });
        let n = self.workers();
        for q in 0..entry.port.queues() {
            if let Err(source) = self.shared.workers[q % n].epoll.add(entry.port.queue_fd(q), token(id, q)) {
                drop(next);
                let _ = self.remove_port(id);
                return Err(DpError::Register { worker: q % n, source });
            }
        }
        Ok(id)
    }

    /// Detaches a port; its fds close once no worker still looks at the old topology.
    pub fn remove_port(&self, id: PortId) -> Result<Arc<dyn Port>, DpError> {
        let _g = self.ctl.lock();
        let topo = self.shared.topo.load();
        let entry = topo.port(id).cloned().ok_or(DpError::NoPort(id))?;
        let n = self.workers();
        for q in 0..entry.port.queues() {
            // Fails harmlessly when a worker already dropped a vanished device.
            let _ = self.shared.workers[q % n].epoll.delete(entry.port.queue_fd(q));
        }
        self.update(|t| {
            t.ports[id as usize] = None;
            if let Some(Some(net)) = t.networks.get_mut(entry.net as usize) {
                net.ports.retain(|&p| p != id);
            }
        });
        // Only after no worker can still learn an address onto the port may its entries go.
        self.grace_period();
        self.shared.fdb.flush_port(id);
        Ok(entry.port.clone())
    }

    pub fn port_is_down(&self, id: PortId) -> bool {
        self.shared.topo.load().port(id).is_some_and(|p| p.down.load(Relaxed))
    }

    pub fn fdb_rows(&self, net: Option<NetId>) -> Vec<FdbRow> {
        self.shared.fdb.rows(net, self.now())
    }

    pub fn port_stats(&self) -> Vec<PortStats> {
        let topo = self.shared.topo.load();
        topo.ports
            .iter()
            .flatten()
            .map(|p| PortStats {
                id: p.id,
                net: p.net,
                name: p.port.name().to_string(),
                kind: p.port.kind().as_str(),
                queues: p.port.queues(),
                down: p.down.load(Relaxed),
                learned: self.shared.fdb.learned_on(p.id),
                totals: p.counters.totals(),
            })
            .collect()
    }

    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.shared
            .workers
            .iter()
            .map(|w| WorkerStats {
                wakeups: w.counters.wakeups.load(Relaxed),
                batches: w.counters.batches.load(Relaxed),
                frames: w.counters.frames.load(Relaxed),
            })
            .collect()
    }

    /// Stops every thread and waits for them.
    pub fn shutdown(&mut self) {
        self.shared.stop.store(true, Relaxed);
        for w in &self.shared.workers {
            w.waker.notify();
        }
        if let Some(s) = &self.shared.slow {
            s.wake.notify();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serves the slow-path ring and ages the FDB once a second.
fn slow_thread(shared: Arc<Shared>, handler: Option<Arc<dyn SlowPathHandler>>) {
    let w = shared.workers.len(); // the slow path writes counter block `workers`
    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            log::error!("slow path: cannot create epoll: {e}; the gateway will not answer");
            return;
        }
    };
    if let Some(ring) = &shared.slow {
        let _ = epoll.add(ring.wake.raw(), 0);
    }
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
    let mut ready = [Ready { token: 0, readable: false, error: false }; 4];
    let mut out = PacketBuf::with_frame_capacity(crate::slowpath::SLOW_FRAME);
    // Replies built off the ring (a forwarded DNS answer) may be as large as any frame.
    let mut tx_buf = PacketBuf::with_frame_capacity(crate::packet::MAX_FRAME);
    let mut last_age = shared.now();
    let mut timeout = 500;
    while !shared.stop.load(Relaxed) {
        let _ = epoll.wait(&mut events, &mut ready, timeout);
        if let (Some(ring), Some(h)) = (&shared.slow, &handler) {
            ring.begin_drain();
            let topo = shared.topo.load();
            // Bounded, so a broadcast storm cannot starve aging or shutdown.
            for _ in 0..crate::slowpath::SLOW_RING {
                let Some(p) = ring.pop() else { break };
                let eth = &p.buf.wire()[crate::packet::VNET_HDR_LEN..];
                h.handle(p.net, p.port, eth, &mut |port, frame| {
                    if let Some(dst) = topo.port(port) {
                        out.fill_plain(frame);
                        worker::transmit(dst, w, out.wire());
                    }
                });
                ring.recycle(p.buf);
            }
            if !ring.is_empty() {
                // More than one round's worth: come straight back instead of sleeping.
                ring.notify();
            }
            let now = shared.now();
            h.tick(
                now,
                &mut |net, except, frame| {
                    let Some(n) = topo.network(net) else { return };
                    out.fill_plain(frame);
                    for &p in &n.ports {
                        if Some(p) != except {
                            if let Some(dst) = topo.port(p) {
                                worker::transmit(dst, w, out.wire());
                            }
                        }
                    }
                },
                &mut |port, frame| {
                    if let Some(dst) = topo.port(port) {
                        tx_buf.fill_plain(frame);
                        worker::transmit(dst, w, tx_buf.wire());
                    }
                },
            );
            timeout = h.tick_in().map_or(500, |d| d.as_millis().clamp(1, 500) as i32);
        }
        let now = shared.now();
        if now != last_age {
            last_age = now;
            let topo = shared.topo.load();
            // Entries of a network that no longer exists go at once.
            shared.fdb.age(now, |net| topo.network(net).map_or(1, |n| n.config.aging_secs));
        }
    }
}
