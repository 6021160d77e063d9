//! Worker threads: each owns an epoll, one queue of every port, and a batch of buffers.
//!
//! A wake-up drains up to `BATCH` frames from each ready queue, decides all of them, then
//! transmits: the destination's queue for this worker, so workers never hand frames to each
//! other and never share a queue. Nothing here allocates, blocks (other than in epoll_wait) or
//! logs per frame.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::counters::{bump, Drop, PortWorkerCounters};
use crate::dataplane::Shared;
use crate::l3::L3Verdict;
use crate::packet::{PacketBuf, VNET_HDR_LEN};
use crate::pipeline::{classify, Verdict};
use crate::port::{is_device_gone, is_link_down, Health};
use crate::sys::Ready;
use crate::topology::{Mode, PortEntry, Topology};

/// Frames handled per batch (Open vSwitch and BESS use 32).
pub const BATCH: usize = 32;
const EVENTS: usize = 64;
/// Bytes of the scratch buffer for router replies (ICMP errors quote at most 1280 bytes).
const SCRATCH: usize = 2048;
/// The token of the worker's own waker.
pub(crate) const WAKE_TOKEN: u64 = u64::MAX;

pub(crate) fn token(port: u32, queue: usize) -> u64 {
    (u64::from(port) << 16) | queue as u64
}

fn untoken(t: u64) -> (u32, usize) {
    ((t >> 16) as u32, (t & 0xffff) as usize)
}

/// Sends one wire frame on `dst`, counting the outcome on `dst` for writer `w`.
pub(crate) fn transmit(dst: &PortEntry, w: usize, wire: &[u8]) {
    let c = dst.counters.worker(w);
    match dst.port.send(w, wire) {
        Ok(()) => {
            bump(&c.tx_packets, 1);
            bump(&c.tx_bytes, wire.len() as u64);
        }
        Err(e) => {
            let reason = if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS) {
                Drop::TxFull
            } else if is_link_down(&e) {
                Drop::LinkDown
            } else if is_device_gone(&e) {
                // The reading side decides whether the port is gone (see `check_port`).
                Drop::PortDown
            } else {
                Drop::TxError
            };
            bump(&c.drops[reason as usize], 1);
        }
    }
}

pub(crate) fn run(shared: Arc<Shared>, idx: usize) {
    let me = &shared.workers[idx];
    let mut bufs: Vec<PacketBuf> = (0..BATCH).map(|_| PacketBuf::new()).collect();
    let mut verdicts = [Verdict::Flood; BATCH];
    // `[zeroed vnet hdr][frame]`: router replies are sent from here.
    let mut scratch = vec![0u8; VNET_HDR_LEN + SCRATCH];
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut ready = [Ready { token: 0, readable: false, error: false }; EVENTS];
    while !shared.stop.load(Relaxed) {
        let n = match me.epoll.wait(&mut events, &mut ready, 1000) {
            Ok(n) => n,
            Err(_) => continue,
        };
        bump(&me.counters.wakeups, 1);
        // Tells a control operation waiting for a grace period that this worker let go of
        // the topology it held before.
        me.epoch.fetch_add(1, Relaxed);
        let topo = shared.topo.load();
        let now = shared.now();
        for r in &ready[..n] {
            if r.token == WAKE_TOKEN {
                me.waker.drain();
                continue;
            }
            let (pid, q) = untoken(r.token);
            let Some(pe) = topo.port(pid) else { continue };
            if r.error && !r.readable {
                check_port(&shared, idx, pe, q);
                continue;
            }
            let mut count = 0;
            while count < BATCH {
                match pe.port.recv(q, bufs[count].rx_area()) {
                    Ok(len) => {
                        bufs[count].set_len(len);
                        count += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        bump(&pe.counters.worker(idx).drops[Drop::RxError as usize], 1);
                        check_port(&shared, idx, pe, q);
                        break;
                    }
                }
            }
            if count > 0 {
                process(&shared, &topo, idx, pe, &mut bufs[..count], &mut verdicts[..count], &mut scratch, now);
            }
        }
    }
}

/// After an error on a queue: keep polling a device whose link merely went down; stop polling
/// one that was destroyed and tell the control plane through `down`.
fn check_port(shared: &Shared, idx: usize, pe: &PortEntry, q: usize) {
    if pe.port.check(q) == Health::Gone {
        let _ = shared.workers[idx].epoll.delete(pe.port.queue_fd(q));
        pe.down.store(true, Relaxed);
        bump(&pe.counters.worker(idx).drops[Drop::PortDown as usize], 1);
    }
}

#[allow(clippy::too_many_arguments)]
fn process(
    shared: &Shared,
    topo: &Topology,
    w: usize,
    pe: &PortEntry,
    bufs: &mut [PacketBuf],
    verdicts: &mut [Verdict],
    scratch: &mut [u8],
    now: u32,
) {
    let me = &shared.workers[w];
    bump(&me.counters.batches, 1);
    bump(&me.counters.frames, bufs.len() as u64);
    let c = pe.counters.worker(w);
    let Some(net) = topo.network(pe.net) else {
        bump(&c.drops[Drop::NoNetwork as usize], bufs.len() as u64);
        return;
    };
    let mut bytes = 0;
    for (b, v) in bufs.iter().zip(verdicts.iter_mut()) {
        bytes += b.len() as u64;
        *v = match shared.mode {
            Mode::Switch => classify(&shared.fdb, net, pe, b.wire(), now, c, shared.l3.is_some()),
            Mode::Null => Verdict::Flood,
        };
    }
    bump(&c.rx_packets, bufs.len() as u64);
    bump(&c.rx_bytes, bytes);
    for (b, v) in bufs.iter_mut().zip(verdicts.iter()) {
        if *v == Verdict::Route {
            route(shared, topo, w, pe, b.wire_mut(), scratch, now, c);
            continue;
        }
        let wire = b.wire();
        match *v {
            Verdict::Forward(p) => match topo.port(p) {
                // The network check guards against an FDB entry that outlived its port while
                // the id went to a port of another network.
                Some(dst) if dst.net == pe.net => transmit(dst, w, wire),
                // The entry outlived its port (removed a moment ago): behave as if unknown.
                _ => flood(topo, net.ports.as_slice(), pe.id, w, wire, c),
            },
            Verdict::Flood => flood(topo, &net.ports, pe.id, w, wire, c),
            Verdict::Punt => punt(shared, net.id, pe.id, wire, c),
            Verdict::FloodAndPunt => {
                flood(topo, &net.ports, pe.id, w, wire, c);
                punt(shared, net.id, pe.id, wire, c);
            }
            Verdict::Drop(reason) => bump(&c.drops[reason as usize], 1),
            Verdict::Route => {}
        }
    }
}

/// Carries out the router's decision for one frame addressed to the gateway.
#[allow(clippy::too_many_arguments)]
fn route(
    shared: &Shared,
    topo: &Topology,
    w: usize,
    pe: &PortEntry,
    wire: &mut [u8],
    scratch: &mut [u8],
    now: u32,
    c: &PortWorkerCounters,
) {
    let Some(l3) = &shared.l3 else { return };
    let (hdr, body) = scratch.split_at_mut(VNET_HDR_LEN);
    hdr.fill(0);
    match l3.route(pe.net, wire, body, now) {
        L3Verdict::Out { net, dst_mac } => {
            bump(&c.routed, 1);
            let Some(egress) = topo.network(net) else {
                bump(&c.drops[Drop::RoutedDrop as usize], 1);
                return;
            };
            match shared.fdb.lookup(net, dst_mac).and_then(|p| topo.port(p)) {
                Some(dst) if dst.net == net => transmit(dst, w, wire),
                _ => flood(topo, &egress.ports, u32::MAX, w, wire, c),
            }
        }
        L3Verdict::Reply { len } => transmit(pe, w, &scratch[..VNET_HDR_LEN + len.min(SCRATCH)]),
        L3Verdict::Resolve { net, len } => {
            bump(&c.drops[Drop::Unresolved as usize], 1);
            if let Some(n) = topo.network(net) {
                flood(topo, &n.ports, u32::MAX, w, &scratch[..VNET_HDR_LEN + len.min(SCRATCH)], c);
            }
        }
        L3Verdict::Unresolved => bump(&c.drops[Drop::Unresolved as usize], 1),
        L3Verdict::Local => punt(shared, pe.net, pe.id, wire, c),
        L3Verdict::Uplink => {
            let r = match &shared.uplink {
                Some(ring) => ring.push(pe.net, pe.id, wire),
                None => Err(Drop::RoutedDrop),
            };
            match r {
                Ok(()) => bump(&c.routed, 1),
                Err(reason) => bump(&c.drops[reason as usize], 1),
            }
        }
        L3Verdict::Drop { .. } => bump(&c.drops[Drop::RoutedDrop as usize], 1),
    }
}

fn flood(topo: &Topology, ports: &[u32], ingress: u32, w: usize, wire: &[u8], c: &PortWorkerCounters) {
    bump(&c.flooded, 1);
    for &p in ports {
        if p != ingress {
            if let Some(dst) = topo.port(p) {
                transmit(dst, w, wire);
            }
        }
    }
}

fn punt(shared: &Shared, net: u32, port: u32, wire: &[u8], c: &PortWorkerCounters) {
    let r = match &shared.slow {
        Some(ring) => ring.push(net, port, wire),
        None => Err(Drop::SlowPathFull),
    };
    match r {
        Ok(()) => bump(&c.punted, 1),
        Err(reason) => bump(&c.drops[reason as usize], 1),
    }
}
