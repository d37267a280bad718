//! The kernel VXLAN fast path's per-second round of the daemon: probes, path choices per
//! neighbour, and reconciling the VXLAN device's forwarding entries with them; and a look at the
//! bridge's learned-entry count. The device and probe mechanics are [`crate::fastpath`]'s; this
//! is where the daemon drives them.
//!
//! The rounds run in a task of their own ([`Daemon::kernel_task`]), never in the main loop: its
//! netlink requests wait for the kernel, and heartbeats, gossip and the API must not wait with
//! them. Each netlink step has a deadline ([`READ_DEADLINE`], [`WRITE_DEADLINE`]); a round that
//! misses one is counted (`rounds_late`) and the next starts on time.

use crate::daemon::*;
use crate::fastpath::{FastPath, PathMode, ProbePolicy};
use gossip::proto::Message;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::timeout;
use vswitch::{Location, PeerName};

/// Longest a round waits for the probe ages. Past it the round observes nothing: no path changes
/// and no reports to the neighbours (whose view of our probes then ages, as if lost).
pub(crate) const READ_DEADLINE: Duration = Duration::from_millis(500);
/// Longest a round spends on the clean-up of the VXLAN device's table and on counters; what is
/// left is done in the next round.
pub(crate) const WRITE_DEADLINE: Duration = Duration::from_millis(300);

/// The status reason of a peer on the fast path.
const FAST_REASON: &str = "VXLAN probes answered both ways";

impl Daemon {
    /// The task of the kernel rounds: once a second, the bridge's learned-entry count, then the
    /// fast path's round when the fast path is on. Runs until aborted.
    pub(crate) async fn kernel_task(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(ProbePolicy::default().interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.bridge_round().await;
            self.fastpath_round().await;
        }
    }

    /// Reads how many entries the bridge learned and its cap; counts rounds at the cap.
    async fn bridge_round(&self) {
        let read = timeout(READ_DEADLINE, self.nl.bridge_fdb_learned(self.bridge_index)).await;
        let mut k = lock(&self.kernel_fdb);
        match read {
            Ok(Ok(Some((n, max)))) => {
                if max > 0 && n >= max {
                    if k.bridge_full_rounds == 0 {
                        tracing::warn!(
                            learned = n,
                            cap = max,
                            "the bridge learned as many MACs as --kernel-max-macs allows: \
                             frames to new MACs are flooded until entries age out"
                        );
                    }
                    k.bridge_full_rounds += 1;
                }
                k.bridge = Some((n, max));
            }
            Ok(_) => {}
            Err(_) => k.rounds_late += 1,
        }
    }

    /// Once a second: probes the VXLAN path to every neighbour, tells each how old its last
    /// probe here is, and moves neighbours between the sleeve and the fast path.
    pub(crate) async fn fastpath_round(&self) {
        let guard = self.fast.lock().await;
        let Some(fp) = guard.as_ref() else {
            return;
        };
        let now = Instant::now();
        let view = self.routes_view();
        let neigh: Vec<(PeerName, String, IpAddr, u64, bool)> = lock(&self.neighbors)
            .values()
            .map(|n| {
                (
                    n.info.name,
                    n.info.nickname.clone(),
                    n.info.udp_addr.ip(),
                    n.info.uid,
                    n.usable,
                )
            })
            .collect();
        // The fast path carries our floods only to direct neighbours: while any peer is reached
        // through a relay (whose VXLAN copy would not be passed on), everybody stays on the
        // sleeve.
        let full_mesh = view
            .peers
            .iter()
            .all(|(p, _)| neigh.iter().any(|n| n.0 == *p && n.4));
        for n in &neigh {
            let _ = fp.send_probe(self.dataplane.socket(), n.2);
        }
        let ips: Vec<IpAddr> = neigh.iter().map(|n| n.2).collect();
        let ages = match timeout(READ_DEADLINE, fp.probe_ages(&ips)).await {
            Ok(Ok(ages)) => ages,
            Ok(Err(e)) => {
                tracing::debug!("reading the probe ages: {e:#}");
                vec![None; ips.len()]
            }
            Err(_) => {
                lock(&self.kernel_fdb).rounds_late += 1;
                return;
            }
        };
        for (n, age) in neigh.iter().zip(&ages) {
            let age_ms = age.map(|a| a.as_millis().min(u128::from(u64::MAX)) as u64);
            self.gossip.send_to(n.0, Message::Probe { age_ms });
        }
        let policy = ProbePolicy::default();
        let (mut to_fast, mut to_sleeve, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        {
            let mut fps = lock(&self.fast_peers);
            fps.retain(|name, p| {
                let keep = neigh.iter().any(|n| n.0 == *name);
                if !keep {
                    if p.fast() {
                        to_sleeve.push((*name, "gone".to_string(), p.ip));
                    }
                    gone.push(p.ip);
                }
                keep
            });
            for ((name, nick, ip, uid, usable), age) in neigh.iter().zip(&ages) {
                let p = fps.entry(*name).or_insert_with(|| FastPeer::new(*ip, *uid));
                if p.uid != *uid || p.ip != *ip {
                    if p.fast() {
                        to_sleeve.push((*name, nick.clone(), p.ip));
                    }
                    *p = FastPeer::new(*ip, *uid);
                }
                let outbound = p.report.map(|(a, at)| a.saturating_add(at.elapsed()));
                let eligible = full_mesh && *usable;
                let inbound = if eligible { *age } else { None };
                if let Some(mode) = p.path.observe(&policy, now, inbound, outbound) {
                    match mode {
                        PathMode::Fast => to_fast.push((*name, nick.clone(), *ip)),
                        PathMode::Sleeve => {
                            p.programmed = false;
                            to_sleeve.push((*name, nick.clone(), *ip));
                        }
                    }
                }
                let fresh = |a: Option<Duration>| a.is_some_and(|a| a < policy.max_age);
                p.reason = match (p.fast(), eligible, fresh(*age), fresh(outbound)) {
                    (true, ..) => FAST_REASON.into(),
                    (false, false, ..) if !full_mesh => "sleeve: relays in use".into(),
                    (false, false, ..) => "sleeve: UDP path not confirmed".into(),
                    (false, true, true, true) => "sleeve: probes good, waiting to confirm".into(),
                    (false, true, false, _) => "sleeve: no VXLAN probe from the peer".into(),
                    (false, true, true, false) if p.report.is_none() => {
                        "sleeve: the peer reports no fast path".into()
                    }
                    (false, true, true, false) => "sleeve: our VXLAN probes do not arrive".into(),
                };
            }
        }
        for (name, nick, ip) in &to_fast {
            match fp.add_peer(*ip).await {
                Ok(()) => {
                    // Fast from now on (status, floods, the leftovers below).
                    if let Some(p) = lock(&self.fast_peers).get_mut(name) {
                        p.programmed = true;
                        p.reason = FAST_REASON.into();
                    }
                    // The bridge relearns the peer's MACs on the VXLAN port.
                    self.shared.switch().fdb_mut().forget_peer(*name);
                    let _ = self.nl.flush_port_fdb(&self.cfg.tap).await;
                    tracing::info!(peer = %name, nickname = %nick, "fast path (kernel VXLAN) in use");
                }
                Err(e) => {
                    // Not reported, nor used, as a fast path the kernel does not have.
                    tracing::warn!(peer = %name, "could not program the fast path: {e:#}");
                    if let Some(p) = lock(&self.fast_peers).get_mut(name) {
                        p.path.demote();
                        p.reason = format!("sleeve: could not program the fast path: {e:#}");
                    }
                }
            }
        }
        if !to_fast.is_empty() || !to_sleeve.is_empty() {
            self.publish_fabric();
        }
        for (name, nick, ip) in &to_sleeve {
            if let Err(e) = fp.remove_peer(*ip).await {
                tracing::warn!(peer = %name, "could not remove the fast path: {e:#}");
            }
            tracing::warn!(peer = %name, nickname = %nick, "back on the sleeve: the VXLAN path stopped answering");
        }
        for ip in gone {
            let _ = fp.unpin_probe(ip).await;
        }
        // A fast-path peer whose frames still came over the sleeve (it switched later than we
        // did, or briefly fell back) taught the bridge its MACs on the TAP port, which pulls our
        // unicast back through user space. Forget those and let the bridge relearn them on the
        // VXLAN port.
        let fast_names: std::collections::HashSet<PeerName> = lock(&self.fast_peers)
            .iter()
            .filter(|(_, p)| p.fast())
            .map(|(n, _)| *n)
            .collect();
        let stale: Vec<PeerName> = {
            let sw = self.shared.switch();
            let mut v: Vec<PeerName> = sw
                .fdb()
                .entries()
                .into_iter()
                .filter_map(|(_, loc, _)| match loc {
                    Location::Peer(p) if fast_names.contains(&p) => Some(p),
                    _ => None,
                })
                .collect();
            v.sort();
            v.dedup();
            v
        };
        if !stale.is_empty() {
            {
                let mut sw = self.shared.switch();
                for p in &stale {
                    sw.fdb_mut().forget_peer(*p);
                }
            }
            let _ = self.nl.flush_port_fdb(&self.cfg.tap).await;
        }
        let fast_ips: Vec<IpAddr> = lock(&self.fast_peers)
            .values()
            .filter(|p| p.fast())
            .map(|p| p.ip)
            .collect();
        // Idempotent and bounded per round: cut off at the deadline, it carries on next time.
        if timeout(WRITE_DEADLINE, self.fastpath_cleanup(fp, &fast_ips))
            .await
            .is_err()
        {
            lock(&self.kernel_fdb).rounds_late += 1;
        }
    }

    /// Reconciles the VXLAN device's table with the fast-path peers, and reads its counters.
    async fn fastpath_cleanup(&self, fp: &FastPath, fast_ips: &[IpAddr]) {
        match fp.reconcile(fast_ips, &[]).await {
            Ok(done) => lock(&self.kernel_fdb).vxlan_entries = Some(done.entries),
            Err(e) => tracing::debug!("fast path reconcile: {e:#}"),
        }
        if let Ok(st) = fp.stats().await {
            *lock(&self.fast_stats) = Some(st);
        }
    }
}
