//! The kernel VXLAN fast path: pod traffic to a peer host that never enters user space.
//!
//! Without encryption the router need not touch every frame. For each peer whose VXLAN path
//! works, it lets the kernel carry the traffic: a VXLAN device (default `weft-vxlan`) is a port
//! of the host bridge next to the pods' veths and the router's TAP port, and its forwarding
//! database (FDB) says where frames go. [`FastPath`] owns that device in the current network
//! namespace:
//!
//! * its creation, or its reuse after a restart ([`FastPath::setup`]), its bridge port
//!   (attached, isolated, MTU, up) and its removal ([`FastPath::teardown`]);
//! * its FDB: one permanent *flood entry* per fast-path peer (all-zeros MAC -> the peer's
//!   underlay address: broadcast, multicast and unknown unicast go once to each of them), plus the
//!   per-MAC entries that the device learns from received packets or that the router sets
//!   ([`FastPath::set_mac`]); [`FastPath::reconcile`] makes it match a wanted set;
//! * the counters that show the traffic took the kernel path ([`FastPath::stats`]);
//! * bounds: the device holds at most [`FastPathConfig::max_learned`] entries, and the periodic
//!   reads look at the device's own port only ([`FastPath::fdb`], [`FastPath::probe_ages`]: one
//!   lookup per peer), so their cost does not grow with what a flood of MACs made the bridge
//!   learn;
//! * the probe that tells whether the VXLAN path to a peer works ([`FastPath::send_probe`],
//!   [`FastPath::probe_age`]) and the pure rule that turns probe results into a per-peer choice
//!   between fast path and sleeve ([`PeerPath`]).
//!
//! What it does not own: the bridge (created by the daemon), the TAP port and its isolation, the
//! choice of peers, and the control-plane messages that carry probe results between routers.
//! [docs/fastpath.md](../../docs/fastpath.md) explains the design: port and VNI, why the device
//! learns, how bridge port isolation keeps every broadcast to exactly one copy per host, and how
//! the probe works.
//!
//! Everything here is async over [`Netlink`] (rtnetlink), with no `unsafe` and no external
//! commands; the probe datagram is built by a pure function ([`probe_datagram`]).

pub(crate) mod round;

use anyhow::{bail, ensure, Context, Result};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use vswitch::wire::vxlan::{self, VxlanRepr};
use weft_netlink::{FdbTable, LinkCounters, Netlink, VxlanParams};

/// Default name of the VXLAN device.
pub const DEFAULT_DEVICE: &str = "weft-vxlan";
/// Default bridge the device is a port of (the daemon's pod bridge).
pub const DEFAULT_BRIDGE: &str = "weft";
/// Default VXLAN network identifier: 0x7765, "we" in ASCII. Any value works as long as every
/// host of a cluster uses the same; it only separates Weft from other VXLAN users that share the
/// UDP port.
pub const DEFAULT_VNI: u32 = 0x7765;
/// Default UDP port: 6784, next to the sleeve's 6783 (Weave's fast datapath used the same pair).
/// Not the IANA VXLAN port 4789, which Flannel, Calico, Cilium and Docker overlay networks use:
/// sharing it couples Weft to their devices and VNIs, and a firewall rule could not tell them
/// apart.
pub const DEFAULT_PORT: u16 = 6784;
/// Lifetime of learned FDB entries, in seconds (the bridge's default ageing time as well).
pub const DEFAULT_AGEING_SECS: u32 = 300;
/// Default cap on the entries the kernel learns: the bridge's learned entries and the VXLAN
/// device's forwarding entries (`weft router --kernel-max-macs`), the same as the router's own
/// MAC table (`--max-macs`).
pub const DEFAULT_MAX_LEARNED: u32 = 8192;
/// Stale per-MAC entries [`FastPath::reconcile`] deletes one by one in a round; beyond that it
/// deletes them per peer in one request each and flushes the port.
pub const RECONCILE_BUDGET: usize = 64;
/// Bytes VXLAN adds to a frame over an IPv4 underlay: outer IPv4 20 + UDP 8 + VXLAN 8 + the inner
/// Ethernet header 14. The sleeve's pod MTU (underlay − 64) leaves room for it.
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// The same over IPv6 (outer header 40 bytes).
pub const VXLAN_OVERHEAD_V6: u32 = 70;
/// The MAC of the flood entries.
pub const FLOOD_MAC: [u8; 6] = [0; 6];
/// EtherType of the probe's inner frame: IEEE 802 "local experimental" 1.
pub const PROBE_ETHERTYPE: u16 = 0x88b5;
/// Length of a probe datagram: VXLAN header (8) + a minimal Ethernet frame (60).
pub const PROBE_LEN: usize = vxlan::HEADER_LEN + 60;
/// A learned probe entry is pinned only when this fresh: pinning resets its age.
const PIN_PROBE_WITHIN: Duration = Duration::from_millis(1500);
/// The text in a probe's inner frame (for whoever looks at it with tcpdump).
const PROBE_TEXT: &[u8] = b"weft fast path probe";

/// How to set up the fast path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastPathConfig {
    /// Name of the VXLAN device.
    pub device: String,
    /// VXLAN network identifier (24 bits), the same on every host.
    pub vni: u32,
    /// UDP port, the same on every host.
    pub port: u16,
    /// This host's underlay address: the source of VXLAN packets, and what peers use for it.
    pub local: IpAddr,
    /// MTU of the device: the pod MTU.
    pub mtu: u32,
    /// The bridge the device joins (it must exist).
    pub bridge: String,
    /// Most forwarding entries the device holds (its `maxaddress`; 0: no limit), flood entry
    /// included. At the limit it learns no new MAC: frames to MACs it does not know go to every
    /// fast-path peer, which still works.
    pub max_learned: u32,
}

impl FastPathConfig {
    /// The defaults ([`DEFAULT_DEVICE`], [`DEFAULT_VNI`], [`DEFAULT_PORT`], [`DEFAULT_BRIDGE`])
    /// for a host at `local` whose pods use `mtu`.
    pub fn new(local: IpAddr, mtu: u32) -> FastPathConfig {
        FastPathConfig {
            device: DEFAULT_DEVICE.to_owned(),
            vni: DEFAULT_VNI,
            port: DEFAULT_PORT,
            local,
            mtu,
            bridge: DEFAULT_BRIDGE.to_owned(),
            max_learned: DEFAULT_MAX_LEARNED,
        }
    }

    /// The device parameters this configuration asks for.
    pub fn params(&self) -> VxlanParams {
        VxlanParams {
            vni: self.vni,
            port: self.port,
            local: Some(self.local),
            remote: None,
            learning: true,
            ageing: DEFAULT_AGEING_SECS,
            udp_csum: true,
            l2miss: false,
            l3miss: false,
            collect_metadata: false,
            limit: self.max_learned,
        }
    }

    fn check(&self) -> Result<()> {
        ensure!(
            self.vni < 1 << 24,
            "VNI {:#x} does not fit in 24 bits",
            self.vni
        );
        ensure!(self.port != 0, "the VXLAN port must not be 0");
        ensure!(
            !self.local.is_unspecified() && !self.local.is_multicast(),
            "the fast path needs this host's underlay address, not {}",
            self.local
        );
        ensure!(
            !self.device.is_empty() && self.device.len() <= 15,
            "invalid device name {:?}",
            self.device
        );
        ensure!(
            (68..=65535).contains(&self.mtu),
            "MTU {} is out of range",
            self.mtu
        );
        Ok(())
    }
}

/// What [`FastPath::setup`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupOutcome {
    /// There was no device: it was created.
    Created,
    /// A device with the same parameters was there (a restart): it was kept, FDB included.
    Reused,
    /// A link of that name with other parameters (or of another kind) was there: it was deleted
    /// and the device created anew.
    Recreated,
}

/// What [`FastPath::reconcile`] changed (all counts but `entries` zero when the FDB already
/// matched), and how big the device's table was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Peers added to the flood list.
    pub peers_added: usize,
    /// Peers removed from the flood list.
    pub peers_removed: usize,
    /// Per-MAC entries set from `macs`.
    pub macs_set: usize,
    /// Per-MAC entries (set or learned) removed because they pointed at an unwanted address
    /// (counted one by one, or as found before a per-peer deletion).
    pub macs_removed: usize,
    /// Entries the device holds, as the kernel counts them against its limit (one per MAC: the
    /// flood entry is one whatever its number of peers), as read in this round.
    pub entries: usize,
}

/// The kernel VXLAN device of the fast path, in the current network namespace; see the
/// [module docs](self).
///
/// Dropping it leaves the device in place (so a restarted router finds it); only
/// [`FastPath::teardown`] removes it. Every method addresses the device by the index it had at
/// setup: if something else deletes or replaces it, they fail and [`FastPath::setup`] must run
/// again.
#[derive(Debug)]
pub struct FastPath {
    nl: Netlink,
    cfg: FastPathConfig,
    index: u32,
    outcome: SetupOutcome,
}

impl FastPath {
    /// Creates the VXLAN device, or reuses an existing one with the same parameters (after a
    /// crash: never a second device; one with other parameters is deleted and recreated), makes
    /// it an isolated port of the bridge with the configured MTU, and brings it up.
    ///
    /// The device learns (see the [module docs](self)), sends no L2/L3 miss notifications, puts
    /// UDP checksums on its packets and has no default remote: only its FDB sends anything.
    pub async fn setup(nl: &Netlink, cfg: FastPathConfig) -> Result<FastPath> {
        cfg.check()?;
        let bridge = nl
            .link(&cfg.bridge)
            .await?
            .with_context(|| format!("bridge {} does not exist", cfg.bridge))?;
        let want = cfg.params();
        let existing = nl.vxlan(&cfg.device).await?;
        let (index, outcome) = match existing {
            Some((link, Some(have))) if have == want => (link.index, SetupOutcome::Reused),
            Some((link, _)) => {
                nl.delete_link(link.index)
                    .await
                    .with_context(|| format!("replacing {}", cfg.device))?;
                let index = nl.add_vxlan(&cfg.device, &want, cfg.mtu).await?;
                (index, SetupOutcome::Recreated)
            }
            None => {
                let index = nl.add_vxlan(&cfg.device, &want, cfg.mtu).await?;
                (index, SetupOutcome::Created)
            }
        };
        nl.attach(&cfg.device, bridge.index, cfg.mtu)
            .await
            .with_context(|| format!("attaching {} to {}", cfg.device, cfg.bridge))?;
        nl.set_port_isolated(&cfg.device, true).await?;
        Ok(FastPath {
            nl: nl.clone(),
            cfg,
            index,
            outcome,
        })
    }

    /// The configuration it was set up with.
    pub fn config(&self) -> &FastPathConfig {
        &self.cfg
    }

    /// The device's interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Whether setup created, reused or recreated the device.
    pub fn outcome(&self) -> SetupOutcome {
        self.outcome
    }

    fn check_peer(&self, peer: IpAddr) -> Result<()> {
        ensure!(
            peer.is_ipv4() == self.cfg.local.is_ipv4(),
            "peer {peer} is not of the underlay's address family ({})",
            self.cfg.local
        );
        ensure!(
            peer != self.cfg.local && !peer.is_unspecified() && !peer.is_multicast(),
            "{peer} cannot be a fast-path peer"
        );
        Ok(())
    }

    /// Makes `peer` (its underlay address) a fast-path peer: adds it to the flood list, so that
    /// broadcast, multicast and unknown unicast frames from local pods reach it exactly once.
    /// Idempotent.
    ///
    /// After a peer moves from the sleeve to the fast path, the router should also flush what the
    /// bridge learned on its TAP port (`Netlink::flush_port_fdb`), or the bridge keeps sending
    /// that peer's MACs to the TAP port until they age out; see docs/fastpath.md.
    ///
    /// The first flood entry is a new entry, which a device at its [`FastPathConfig::max_learned`]
    /// refuses (`ENOSPC`, a flood of MACs from a peer filled it): its dynamic entries are then
    /// deleted (they are learned again from traffic) and the entry added again.
    pub async fn add_peer(&self, peer: IpAddr) -> Result<()> {
        self.check_peer(peer)?;
        match self.nl.vxlan_fdb_append(self.index, FLOOD_MAC, peer).await {
            Err(e) if e.errno() == Some(libc::ENOSPC) => {
                self.evict_dynamic().await?;
                Ok(self
                    .nl
                    .vxlan_fdb_append(self.index, FLOOD_MAC, peer)
                    .await?)
            }
            r => Ok(r?),
        }
    }

    /// Deletes the device's dynamic entries (learned or set), one request per remote they point
    /// at when the kernel can (Linux 6.5+), else one by one.
    async fn evict_dynamic(&self) -> Result<()> {
        let entries = self.fdb_entries().await?;
        let mut dsts: Vec<IpAddr> = entries
            .iter()
            .filter(|e| !e.permanent)
            .filter_map(|e| e.dst)
            .collect();
        dsts.sort();
        dsts.dedup();
        for dst in dsts {
            if self.nl.vxlan_fdb_flush_dst(self.index, dst).await.is_err() {
                for e in entries
                    .iter()
                    .filter(|e| !e.permanent && e.dst == Some(dst))
                {
                    self.nl
                        .fdb_delete(self.index, e.mac, None, FdbTable::Device)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Stops using the fast path to `peer`: removes it from the flood list, removes every
    /// per-MAC entry that points to it (set or learned), and flushes what the bridge learned on
    /// the VXLAN port, so that frames to the MACs behind that peer are flooded again (and find
    /// the sleeve) instead of following a stale entry. Idempotent.
    pub async fn remove_peer(&self, peer: IpAddr) -> Result<()> {
        let mut removed = self
            .nl
            .fdb_delete(self.index, FLOOD_MAC, Some(peer), FdbTable::Device)
            .await?;
        let macs: Vec<[u8; 6]> = (self.fdb().await?.into_iter())
            .filter(|&(mac, dst)| dst == peer && mac != FLOOD_MAC)
            .map(|(mac, _)| mac)
            .collect();
        if !macs.is_empty() {
            removed = true;
            self.delete_macs_to(peer, &macs).await?;
        }
        if removed {
            self.nl.flush_port_fdb(&self.cfg.device).await?;
        }
        Ok(())
    }

    /// The fast-path peers: the remotes of the flood entry.
    pub async fn peers(&self) -> Result<Vec<IpAddr>> {
        let mut peers: Vec<IpAddr> = self
            .fdb()
            .await?
            .into_iter()
            .filter(|(mac, _)| *mac == FLOOD_MAC)
            .map(|(_, ip)| ip)
            .collect();
        peers.sort();
        Ok(peers)
    }

    /// Sends frames for `mac` to `peer` only (instead of flooding them to every fast-path peer),
    /// replacing any entry for `mac` (a MAC that moved).
    ///
    /// The entry is dynamic, like a learned one: it ages out after [`DEFAULT_AGEING_SECS`]
    /// without traffic from `mac`, and the device's learning moves it at once when `mac` is
    /// seen behind another peer. A permanent entry would make the kernel *drop* packets from a
    /// MAC that moved until the router caught up.
    pub async fn set_mac(&self, mac: [u8; 6], peer: IpAddr) -> Result<()> {
        self.check_peer(peer)?;
        check_unicast(mac)?;
        Ok(self
            .nl
            .vxlan_fdb_replace(self.index, mac, peer, false)
            .await?)
    }

    /// Removes the entry for `mac`, if any: its frames are flooded to the fast-path peers until
    /// the device learns it again.
    pub async fn remove_mac(&self, mac: [u8; 6]) -> Result<()> {
        check_unicast(mac)?;
        self.nl
            .fdb_delete(self.index, mac, None, FdbTable::Device)
            .await?;
        Ok(())
    }

    /// Deletes the device's entries for `macs`, all pointing at `peer`: one by one when they are
    /// few, else with one request for every dynamic entry to `peer` (falling back to the first
    /// [`RECONCILE_BUDGET`] one by one on a kernel without it; the rest go in later rounds).
    async fn delete_macs_to(&self, peer: IpAddr, macs: &[[u8; 6]]) -> Result<()> {
        if macs.len() > RECONCILE_BUDGET
            && self.nl.vxlan_fdb_flush_dst(self.index, peer).await.is_ok()
        {
            return Ok(());
        }
        for mac in macs.iter().take(RECONCILE_BUDGET) {
            self.nl
                .fdb_delete(self.index, *mac, None, FdbTable::Device)
                .await?;
        }
        Ok(())
    }

    /// The device's own entries (one read of its port, not of every bridge's table).
    async fn fdb_entries(&self) -> Result<Vec<weft_netlink::FdbEntry>> {
        Ok(self
            .nl
            .fdb_port_entries(self.index)
            .await?
            .into_iter()
            .filter(|e| e.table == FdbTable::Device)
            .collect())
    }

    /// The device's FDB as (MAC, peer) pairs, sorted: one pair per flood-list peer (with
    /// [`FLOOD_MAC`]) and one per known MAC, set or learned (probe MACs included).
    pub async fn fdb(&self) -> Result<Vec<([u8; 6], IpAddr)>> {
        let mut out: Vec<([u8; 6], IpAddr)> = (self.fdb_entries().await?.into_iter())
            .filter_map(|e| Some((e.mac, e.dst?)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Makes the FDB match what the router wants: exactly `peers` in the flood list; no entry
    /// pointing to any other address; `mac -> peer` for each pair of `macs` whose peer is in
    /// `peers` (others are ignored). Entries the device learned for wanted peers stay, and so do
    /// learned probe MACs (see [`probe_mac`]), which carry no traffic.
    ///
    /// Cheap when nothing changed (one read of the device's port, bounded by
    /// [`FastPathConfig::max_learned`] and the bridge's cap), so the router can run it on every
    /// probe round. The work per round is bounded too: up to [`RECONCILE_BUDGET`] stale entries
    /// are deleted one by one (with the bridge's entry for each); beyond that, one request per
    /// unwanted peer deletes its dynamic entries and the bridge's learned entries on the VXLAN
    /// port are flushed at once.
    /// Besides repairing drift it removes what learning re-created after a peer left the fast
    /// path: that peer may still send over VXLAN until it, too, decides to leave, and the device
    /// and the bridge learn its MACs from those packets. For each such MAC the bridge's entry on
    /// the VXLAN port is deleted as well, so that the next frame to it floods and reaches the
    /// router. If a flood-list peer is removed, the bridge's learned entries on the VXLAN port are
    /// flushed as in [`FastPath::remove_peer`].
    pub async fn reconcile(
        &self,
        peers: &[IpAddr],
        macs: &[([u8; 6], IpAddr)],
    ) -> Result<Reconciled> {
        for p in peers {
            self.check_peer(*p)?;
        }
        let mut done = Reconciled::default();
        let wanted: HashSet<IpAddr> = peers.iter().copied().collect();
        let have = self.fdb().await?;
        done.entries = 1 + have.windows(2).filter(|w| w[0].0 != w[1].0).count();
        done.entries = done.entries.min(have.len());
        let mut flood: HashSet<IpAddr> = HashSet::new();
        let mut stale: Vec<([u8; 6], IpAddr)> = Vec::new();
        for &(mac, dst) in &have {
            if mac == FLOOD_MAC {
                if wanted.contains(&dst) {
                    flood.insert(dst);
                } else {
                    self.nl
                        .fdb_delete(self.index, FLOOD_MAC, Some(dst), FdbTable::Device)
                        .await?;
                    done.peers_removed += 1;
                }
            } else if !wanted.contains(&dst) && mac != probe_mac(dst) {
                stale.push((mac, dst));
            }
        }
        let mut flush_port = false;
        if stale.len() <= RECONCILE_BUDGET {
            for &(mac, _) in &stale {
                self.nl
                    .fdb_delete(self.index, mac, None, FdbTable::Device)
                    .await?;
                self.nl
                    .fdb_delete(self.index, mac, None, FdbTable::Bridge)
                    .await?;
            }
        } else {
            let mut dsts: Vec<IpAddr> = stale.iter().map(|s| s.1).collect();
            dsts.sort();
            dsts.dedup();
            for dst in dsts {
                let macs: Vec<[u8; 6]> =
                    (stale.iter()).filter(|s| s.1 == dst).map(|s| s.0).collect();
                self.delete_macs_to(dst, &macs).await?;
            }
            flush_port = true;
        }
        done.macs_removed = stale.len();
        for p in &wanted {
            if !flood.contains(p) {
                self.nl.vxlan_fdb_append(self.index, FLOOD_MAC, *p).await?;
                done.peers_added += 1;
            }
        }
        for &(mac, peer) in macs {
            if wanted.contains(&peer) && !have.contains(&(mac, peer)) {
                self.set_mac(mac, peer).await?;
                done.macs_set += 1;
            }
        }
        if done.peers_removed > 0 || flush_port {
            self.nl.flush_port_fdb(&self.cfg.device).await?;
        }
        Ok(done)
    }

    /// The device's counters: what went through the kernel path (tx: frames encapsulated to
    /// peers; rx: frames decapsulated from peers, probes included; tx_dropped: frames with no
    /// destination, e.g. a flood while no peer is on the fast path).
    pub async fn stats(&self) -> Result<LinkCounters> {
        Ok(self.nl.link_counters(self.index).await?)
    }

    /// The probe this host sends: see [`probe_datagram`].
    pub fn probe_datagram(&self) -> [u8; PROBE_LEN] {
        probe_datagram(self.cfg.vni, probe_mac(self.cfg.local))
    }

    /// Where probes to `peer` go: its VXLAN port.
    pub fn probe_target(&self, peer: IpAddr) -> SocketAddr {
        SocketAddr::new(peer, self.cfg.port)
    }

    /// Sends one probe to `peer` from `socket` (a UDP socket bound to this host's underlay
    /// address, e.g. the sleeve socket). Non-blocking sockets may return `WouldBlock`; a lost
    /// probe only makes the next one matter.
    pub fn send_probe(&self, socket: &UdpSocket, peer: IpAddr) -> std::io::Result<()> {
        socket
            .send_to(&self.probe_datagram(), self.probe_target(peer))
            .map(drop)
    }

    /// How long ago a probe from `peer` last crossed the VXLAN path into this host: the age of
    /// the bridge's entry for `peer`'s probe MAC on the VXLAN port, `None` if there is none (no
    /// probe yet, or flushed). Recent means peer -> here works on the fast path.
    pub async fn probe_age(&self, peer: IpAddr) -> Result<Option<Duration>> {
        Ok(self.probe_ages(&[peer]).await?[0])
    }

    /// [`FastPath::probe_age`] for each of `peers` (same order): one lookup of the bridge's
    /// entry for each peer's probe MAC, whatever the size of the bridge's table.
    ///
    /// An entry the bridge learned from a recent probe is then *pinned*: made static on the
    /// VXLAN port. The bridge still refreshes its age with every probe, but it no longer ages
    /// out, a flush of the port ([`FastPath::remove_peer`]) leaves it, and it does not count
    /// against the bridge's cap on learned entries: a flood of MACs that fills the bridge
    /// cannot keep the probe from being seen. [`FastPath::unpin_probe`] removes it when the
    /// peer leaves.
    pub async fn probe_ages(&self, peers: &[IpAddr]) -> Result<Vec<Option<Duration>>> {
        let mut ages = Vec::with_capacity(peers.len());
        for p in peers {
            let mac = probe_mac(*p);
            let entry = self.nl.bridge_fdb_get(self.index, mac).await?;
            let age = match entry {
                Some(e) if e.ifindex == self.index && !e.local => {
                    let age = e.updated.unwrap_or(Duration::MAX);
                    if !e.permanent && age <= PIN_PROBE_WITHIN {
                        self.nl.bridge_fdb_pin(self.index, mac).await?;
                    }
                    Some(age)
                }
                _ => None,
            };
            ages.push(age);
        }
        Ok(ages)
    }

    /// Removes the pinned bridge entry of `peer`'s probe MAC (the peer left); see
    /// [`FastPath::probe_ages`].
    pub async fn unpin_probe(&self, peer: IpAddr) -> Result<()> {
        self.nl
            .fdb_delete(self.index, probe_mac(peer), None, FdbTable::Bridge)
            .await?;
        Ok(())
    }

    /// Deletes the device (a clean shutdown): its FDB goes with it, and the bridge forgets what it
    /// learned on that port.
    pub async fn teardown(self, nl: &Netlink) -> Result<()> {
        nl.delete_link(self.index)
            .await
            .with_context(|| format!("deleting {}", self.cfg.device))
    }
}

fn check_unicast(mac: [u8; 6]) -> Result<()> {
    if mac == FLOOD_MAC || mac[0] & 1 == 1 {
        let [a, b, c, d, e, f] = mac;
        bail!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x} is not a unicast MAC address");
    }
    Ok(())
}

/// The probe MAC of the host at `ip`: `02:77:` (locally administered, "w") followed by the four
/// bytes of an IPv4 address, or by an FNV-1a hash of an IPv6 address. Unique per host (for IPv4)
/// and computable by both ends without a message.
pub fn probe_mac(ip: IpAddr) -> [u8; 6] {
    let tail: [u8; 4] = match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let mut h: u32 = 0x811c_9dc5;
            for b in v6.octets() {
                h ^= u32::from(b);
                h = h.wrapping_mul(0x0100_0193);
            }
            h.to_be_bytes()
        }
    };
    [0x02, 0x77, tail[0], tail[1], tail[2], tail[3]]
}

/// A probe: a VXLAN datagram (flags "VNI valid", `vni`) carrying a minimal Ethernet frame whose
/// source *and* destination are `mac`, EtherType [`PROBE_ETHERTYPE`].
///
/// Sent from the router's own UDP socket to a peer's VXLAN port, it takes the fast path's
/// outer route (UDP to that port) and is decapsulated by the peer's kernel like any VXLAN packet.
/// The peer's bridge learns `mac` on its VXLAN port, then drops the frame (its destination is the
/// port it came from), so it reaches no pod and no router: the bridge's FDB entry, refreshed by
/// each probe, is the evidence ([`FastPath::probe_age`]).
pub fn probe_datagram(vni: u32, mac: [u8; 6]) -> [u8; PROBE_LEN] {
    let mut d = [0u8; PROBE_LEN];
    // The VXLAN header: I flag, 24-bit VNI (`FastPathConfig::check` refuses wider ones; the mask
    // keeps the low 24 bits, as this always did). Cannot fail: `d` has room for the header.
    let _ = VxlanRepr {
        vni: vni & vxlan::VNI_MAX,
    }
    .emit(&mut d);
    let frame = &mut d[vxlan::HEADER_LEN..];
    frame[0..6].copy_from_slice(&mac);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&PROBE_ETHERTYPE.to_be_bytes());
    frame[14..14 + PROBE_TEXT.len()].copy_from_slice(PROBE_TEXT);
    d
}

/// Timing of the probe and of the fast path / sleeve decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePolicy {
    /// How often each router probes each peer (and reads its bridge FDB).
    pub interval: Duration,
    /// A direction works if its last probe is at most this old.
    pub max_age: Duration,
    /// Both directions must work this long before traffic moves (back) to the fast path.
    pub promote_after: Duration,
}

impl Default for ProbePolicy {
    /// Probe every second; a direction silent for 3 s has failed; 5 s of success to move back.
    /// A failure is acted on within `max_age` + 2 `interval` (≈ 5 s, the second interval for
    /// the peer's report); recovery takes `promote_after` more.
    fn default() -> Self {
        ProbePolicy {
            interval: Duration::from_secs(1),
            max_age: Duration::from_secs(3),
            promote_after: Duration::from_secs(5),
        }
    }
}

impl ProbePolicy {
    /// Whether a direction whose last probe is `age` old works.
    pub fn fresh(&self, age: Option<Duration>) -> bool {
        age.is_some_and(|a| a <= self.max_age)
    }
}

/// Which path a peer's traffic takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathMode {
    /// The router's UDP sleeve.
    Sleeve,
    /// The kernel VXLAN device.
    Fast,
}

/// The fast path / sleeve decision for one peer: pure, time passed in.
///
/// Fail fast, recover slowly: the moment either direction's probe is stale the peer goes back to
/// the sleeve; it returns to the fast path only after both directions have worked for
/// [`ProbePolicy::promote_after`] without a break. It starts on the sleeve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPath {
    mode: PathMode,
    good_since: Option<Instant>,
}

impl Default for PeerPath {
    fn default() -> Self {
        PeerPath::new()
    }
}

impl PeerPath {
    /// A peer on the sleeve, with no probe seen yet.
    pub fn new() -> PeerPath {
        PeerPath {
            mode: PathMode::Sleeve,
            good_since: None,
        }
    }

    /// The current choice.
    pub fn mode(&self) -> PathMode {
        self.mode
    }

    /// Feeds one observation at `now`: `inbound`, the age of the peer's last probe here
    /// ([`FastPath::probe_age`]); `outbound`, the age of our last probe at the peer, as the peer
    /// reported it plus the age of that report (`None` if unknown). Returns the new mode when it
    /// changes.
    pub fn observe(
        &mut self,
        policy: &ProbePolicy,
        now: Instant,
        inbound: Option<Duration>,
        outbound: Option<Duration>,
    ) -> Option<PathMode> {
        if !(policy.fresh(inbound) && policy.fresh(outbound)) {
            self.good_since = None;
            if self.mode == PathMode::Fast {
                self.mode = PathMode::Sleeve;
                return Some(PathMode::Sleeve);
            }
            return None;
        }
        let since = *self.good_since.get_or_insert(now);
        if self.mode == PathMode::Sleeve
            && now.saturating_duration_since(since) >= policy.promote_after
        {
            self.mode = PathMode::Fast;
            return Some(PathMode::Fast);
        }
        None
    }

    /// Back to the sleeve, the time of good probes forgotten: the fast path was chosen but
    /// could not be programmed into the kernel. It is tried again after
    /// [`ProbePolicy::promote_after`] of good probes.
    pub fn demote(&mut self) {
        self.mode = PathMode::Sleeve;
        self.good_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn probe_macs_are_local_unicast_and_per_host() {
        let a = probe_mac(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 11)));
        assert_eq!(a, [0x02, 0x77, 10, 200, 0, 11]);
        assert_eq!(a[0] & 1, 0, "unicast");
        assert_eq!(a[0] & 2, 2, "locally administered");
        let b = probe_mac(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 12)));
        assert_ne!(a, b);
        let v6a = probe_mac(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)));
        let v6b = probe_mac(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)));
        assert_eq!(&v6a[..2], &[0x02, 0x77]);
        assert_ne!(v6a, v6b);
        assert!(check_unicast(a).is_ok());
    }

    #[test]
    fn probe_datagram_layout() {
        let mac = [0x02, 0x77, 10, 200, 0, 11];
        let d = probe_datagram(0x7765, mac);
        // VXLAN header: I flag, 3 reserved bytes, 24-bit VNI, 1 reserved byte.
        assert_eq!(&d[..8], &[0x08, 0, 0, 0, 0x00, 0x77, 0x65, 0]);
        assert_eq!(&d[8..14], &mac, "destination");
        assert_eq!(&d[14..20], &mac, "source");
        assert_eq!(&d[20..22], &[0x88, 0xb5]);
        assert_eq!(&d[22..22 + PROBE_TEXT.len()], PROBE_TEXT);
        assert!(d[22 + PROBE_TEXT.len()..].iter().all(|&b| b == 0));
        assert_eq!(d.len(), 68);
        let big = probe_datagram(0xab_cdef, mac);
        assert_eq!(&big[4..8], &[0xab, 0xcd, 0xef, 0]);
    }

    #[test]
    fn config_defaults_and_checks() {
        let local = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 11));
        let cfg = FastPathConfig::new(local, 1436);
        assert_eq!(cfg.device, "weft-vxlan");
        assert_eq!((cfg.vni, cfg.port), (0x7765, 6784));
        assert!(cfg.check().is_ok());
        let p = cfg.params();
        assert!(p.learning && p.udp_csum && !p.l2miss && !p.l3miss && p.remote.is_none());
        assert_eq!(p.local, Some(local));
        let mut bad = cfg.clone();
        bad.vni = 1 << 24;
        assert!(bad.check().is_err());
        let mut bad = cfg.clone();
        bad.local = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert!(bad.check().is_err());
        let mut bad = cfg;
        bad.device = "a-name-that-is-too-long".into();
        assert!(bad.check().is_err());
    }

    #[test]
    fn non_unicast_macs_are_refused() {
        assert!(check_unicast(FLOOD_MAC).is_err());
        assert!(check_unicast([0xff; 6]).is_err());
        assert!(check_unicast([0x01, 0, 0x5e, 0, 0, 1]).is_err());
        assert!(check_unicast([0x02, 0, 0, 0, 0, 1]).is_ok());
    }

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn peer_path_promotes_after_a_stable_period() {
        let p = ProbePolicy::default();
        let t0 = Instant::now();
        let mut path = PeerPath::new();
        assert_eq!(path.mode(), PathMode::Sleeve);
        // Nothing seen yet: stays on the sleeve.
        assert_eq!(path.observe(&p, t0, None, None), None);
        // Both directions fresh, but not for long enough.
        for s in 1..6 {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(path.observe(&p, now, secs(0), secs(1)), None, "at {s}s");
        }
        assert_eq!(
            path.observe(&p, t0 + Duration::from_secs(6), secs(0), secs(1)),
            Some(PathMode::Fast)
        );
        assert_eq!(path.mode(), PathMode::Fast);
        // Staying good changes nothing.
        assert_eq!(
            path.observe(&p, t0 + Duration::from_secs(7), secs(1), secs(1)),
            None
        );
    }

    #[test]
    fn peer_path_fails_fast_on_either_direction() {
        let p = ProbePolicy::default();
        let t0 = Instant::now();
        for (inbound, outbound) in [(secs(4), secs(0)), (secs(0), secs(4)), (None, secs(0))] {
            let mut path = PeerPath::new();
            path.observe(&p, t0, secs(0), secs(0));
            assert_eq!(
                path.observe(&p, t0 + Duration::from_secs(5), secs(0), secs(0)),
                Some(PathMode::Fast)
            );
            assert_eq!(
                path.observe(&p, t0 + Duration::from_secs(6), inbound, outbound),
                Some(PathMode::Sleeve),
                "{inbound:?} {outbound:?}"
            );
        }
    }

    /// A path that good probes from `at(0)` moved to the fast path at `at(5)`.
    fn promoted_at_5s(p: &ProbePolicy, at: impl Fn(u64) -> Instant) -> PeerPath {
        let mut path = PeerPath::new();
        path.observe(p, at(0), secs(0), secs(0));
        assert_eq!(
            path.observe(p, at(5), secs(0), secs(0)),
            Some(PathMode::Fast)
        );
        path
    }

    #[test]
    fn peer_path_needs_an_unbroken_good_period_to_recover() {
        let p = ProbePolicy::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut path = promoted_at_5s(&p, at);
        assert_eq!(
            path.observe(&p, at(6), secs(4), secs(0)),
            Some(PathMode::Sleeve)
        );
        // Good again from 7 s, a blip at 9 s restarts the clock.
        assert_eq!(path.observe(&p, at(7), secs(0), secs(0)), None);
        assert_eq!(path.observe(&p, at(9), secs(0), None), None);
        assert_eq!(path.observe(&p, at(10), secs(0), secs(0)), None);
        assert_eq!(path.observe(&p, at(14), secs(0), secs(0)), None);
        assert_eq!(
            path.observe(&p, at(15), secs(0), secs(0)),
            Some(PathMode::Fast)
        );
    }

    #[test]
    fn a_demoted_path_waits_a_whole_good_period_again() {
        let p = ProbePolicy::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut path = promoted_at_5s(&p, at);
        path.demote();
        assert_eq!(path.mode(), PathMode::Sleeve);
        assert_eq!(path.observe(&p, at(6), secs(0), secs(0)), None);
        assert_eq!(path.observe(&p, at(10), secs(0), secs(0)), None);
        assert_eq!(
            path.observe(&p, at(11), secs(0), secs(0)),
            Some(PathMode::Fast)
        );
    }

    #[test]
    fn freshness_is_inclusive() {
        let p = ProbePolicy::default();
        assert!(p.fresh(secs(3)));
        assert!(!p.fresh(Some(Duration::from_millis(3001))));
        assert!(!p.fresh(None));
    }
}
