//! The router's side of pod IPAM: which address of this host's blocks each pod interface holds
//! (the reservations), the gateway addresses on the bridge, and the masquerade rule.
//!
//! The gossip crate decides which blocks of the pod CIDR this host holds
//! ([`gossip::driver::Gossip::ipam_blocks`]); this module owns everything inside them:
//!
//! * reservations keyed by [`Attachment`] (container id + interface name), persisted in
//!   `<state-dir>/reservations.json` (written to a temporary file, synced, renamed) and loaded at
//!   start;
//! * allocation: the lowest free address of a held block, never a block's first address (its
//!   network address) nor its second (the gateway, the bridge's address), never the pod CIDR's
//!   first or last address; when every held block is full, one more block is claimed;
//! * the bridge's gateway addresses: block base + 1 with the pod CIDR's prefix length, one per
//!   held block ([`Ipam::reconcile_bridge`]);
//! * the masquerade table (`table ip weft`, loaded with `nft -f -`) and `ip_forward`;
//! * the port guard of each reservation's bridge port ([`crate::guard`]): registered by
//!   [`Ipam::guard_port`], removed with the reservation, reconciled at start.
//!
//! Reservations whose address lies in no held block (the blocks were reclaimed while the router
//! was away) are "lost": kept, reported in the status and logged, never handed out again unless
//! the block comes back.

mod addr;
mod nft;
mod table;

pub use addr::*;
pub(crate) use nft::nft;
pub use nft::{masquerade_ruleset, remove_ruleset};
pub use table::Table;

use crate::guard::{self, rules, Guard};
pub use crate::Error;
use anyhow::{Context, Result};
use gossip::driver::Gossip;
use gossip::ipam::{Block, IpamError};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use weft_api::guard::{GuardAnswer, GuardRequest};
use weft_api::ipam::{
    Allocation, Attachment, GcAnswer, IpamReport, PodRef, ReleaseAnswer, Reservation,
};
use weft_netlink::Netlink;

/// The reservations file inside the state directory.
pub const RESERVATIONS_FILE: &str = "reservations.json";

/// The gossip IPAM state file (own claims and votes) inside the state directory.
pub const IPAM_STATE_FILE: &str = "ipam.json";

/// The nftables table (family `ip`) holding the masquerade rule.
pub const NFT_TABLE: &str = "weft";

/// How long an allocation waits for a new block to be agreed.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of the last claim, for the allocations that waited on it.
#[derive(Debug, Default)]
struct Claims {
    /// Claims finished so far.
    done: u64,
    /// How the last one ended.
    last: Option<std::result::Result<Block, IpamError>>,
}

/// The router's IPAM: reservations, allocation, the bridge's gateways, masquerading.
pub struct Ipam {
    cidr: Block,
    /// The IPv6 pod CIDR of a dual-stack cluster.
    dual: Option<DualStack>,
    block_prefix: u8,
    masquerade: bool,
    path: PathBuf,
    gossip: Gossip,
    nl: Netlink,
    bridge: String,
    pod_mtu: u32,
    table: Mutex<Table>,
    /// Serialises changes to the table (and their writes to disk).
    alloc: tokio::sync::Mutex<()>,
    /// Serialises claims; holds how the last one ended.
    claims: tokio::sync::Mutex<Claims>,
    /// Claims finished (read without waiting for a running claim).
    claims_done: std::sync::atomic::AtomicU64,
    /// The lost reservations last logged, so a change is logged once.
    lost_logged: Mutex<Vec<Reservation>>,
    /// The lost blocks last logged.
    lost_blocks_logged: Mutex<Vec<Block>>,
    /// The blocks the bridge was last reconciled for.
    bridge_blocks: tokio::sync::Mutex<Option<Vec<Block>>>,
    /// `weft leave` is under way: no more allocations.
    closed: std::sync::atomic::AtomicBool,
    /// The port guard of the reservations' bridge ports.
    guard: Guard,
}

impl std::fmt::Debug for Ipam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam")
            .field("cidr", &self.cidr)
            .field("block_prefix", &self.block_prefix)
            .field("bridge", &self.bridge)
            .field("reservations", &lock(&self.table).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything [`Ipam::open`] needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The pod CIDR.
    pub cidr: Block,
    /// The IPv6 pod CIDR of a dual-stack cluster.
    pub dual: Option<DualStack>,
    /// The block size.
    pub block_prefix: u8,
    /// Masquerade traffic from pods to outside the pod CIDR.
    pub masquerade: bool,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The bridge pods attach to.
    pub bridge: String,
    /// The pod MTU.
    pub pod_mtu: u32,
    /// The flood limit of every guarded port.
    pub flood_limit: Option<rules::FloodLimit>,
}

impl Ipam {
    /// Loads the reservations and logs those in blocks this host does not hold.
    pub fn open(s: Settings, gossip: Gossip, nl: Netlink) -> Result<Ipam> {
        let path = s.state_dir.join(RESERVATIONS_FILE);
        let mut table = Table::load(&path, s.cidr)?;
        table.map_ipv6(|v4| s.dual.and_then(|d| d.map(v4)));
        tracing::info!(
            cidr = %s.cidr,
            cidr6 = ?s.dual.map(|d| d.cidr6),
            block_prefix = s.block_prefix,
            "IPAM on: {} reservation(s) loaded from {}",
            table.len(),
            path.display()
        );
        let ipam = Ipam {
            cidr: s.cidr,
            dual: s.dual,
            block_prefix: s.block_prefix,
            masquerade: s.masquerade,
            path,
            gossip,
            nl,
            bridge: s.bridge,
            pod_mtu: s.pod_mtu,
            table: Mutex::new(table),
            alloc: tokio::sync::Mutex::new(()),
            claims: tokio::sync::Mutex::new(Claims::default()),
            claims_done: std::sync::atomic::AtomicU64::new(0),
            lost_logged: Mutex::new(Vec::new()),
            lost_blocks_logged: Mutex::new(Vec::new()),
            bridge_blocks: tokio::sync::Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
            guard: Guard::new(s.flood_limit),
        };
        ipam.check_lost();
        Ok(ipam)
    }

    /// The pod CIDR.
    pub fn cidr(&self) -> Block {
        self.cidr
    }

    /// The dual-stack mapping, on a dual-stack cluster.
    pub fn dual(&self) -> Option<DualStack> {
        self.dual
    }

    /// The IPv6 pod CIDR of a dual-stack cluster.
    pub fn cidr6(&self) -> Option<Block> {
        self.dual.map(|d| d.cidr6)
    }

    /// The dual-stack IPv6 address of the IPv4 pod address `v4`.
    fn ipv6_of(&self, ip: IpAddr) -> Option<Ipv6Addr> {
        self.dual.and_then(|d| d.map(ip))
    }

    /// The block size.
    pub fn block_prefix(&self) -> u8 {
        self.block_prefix
    }

    /// Whether masquerading is on.
    pub fn masquerade(&self) -> bool {
        self.masquerade
    }

    /// The blocks this host holds now.
    pub fn held(&self) -> Vec<Block> {
        let mut b = self.gossip.ipam_blocks();
        b.sort();
        b
    }

    /// On a dual-stack cluster, the IPv6 twin of each held block (in the order of
    /// [`Ipam::held`]); empty otherwise.
    pub fn held6(&self) -> Vec<Block> {
        match self.dual {
            Some(d) => self.held().into_iter().filter_map(|b| d.block(b)).collect(),
            None => Vec::new(),
        }
    }

    /// Every reservation.
    pub fn reservations(&self) -> Vec<Reservation> {
        lock(&self.table).list()
    }

    /// Reservations in blocks this host does not hold.
    pub fn lost(&self) -> Vec<Reservation> {
        lock(&self.table).lost(&self.held())
    }

    /// Logs (loudly) when the set of lost reservations (or of blocks the cluster took back)
    /// changes.
    pub fn check_lost(&self) -> Vec<Reservation> {
        let lost_blocks = self.gossip.ipam_lost();
        {
            let mut logged = lock(&self.lost_blocks_logged);
            if *logged != lost_blocks {
                for b in lost_blocks.iter().filter(|b| !logged.contains(b)) {
                    tracing::error!(
                        block = %b,
                        "LOST BLOCK: the cluster reclaimed {b} while this host was unreachable for longer than the grace period"
                    );
                }
                *logged = lost_blocks;
            }
        }
        let lost = self.lost();
        let mut logged = lock(&self.lost_logged);
        if *logged != lost {
            if lost.is_empty() {
                tracing::info!("every reservation is inside a block this host holds again");
            } else {
                for r in &lost {
                    tracing::error!(
                        container = %r.attachment.container_id,
                        ifname = %r.attachment.ifname,
                        "LOST ADDRESS: {} is reserved here but its block is not held by this host \
                         (reclaimed while the router was away?): the pod may clash with another host's pods; \
                         recreate it",
                        r.address
                    );
                }
            }
            *logged = lost.clone();
        }
        lost
    }

    fn allocation(&self, ip: IpAddr) -> Allocation {
        let blocks = self.held();
        let block = blocks
            .iter()
            .find(|b| b.contains(ip))
            .copied()
            .or_else(|| Block::new(ip, self.block_prefix))
            .unwrap_or(self.cidr);
        let ipv6 = self.dual.and_then(|d| {
            Some(weft_api::ipam::Ipv6Assignment {
                address: d.map(ip)?,
                prefix_len: d.cidr6.prefix(),
                gateway: d.map(gateway(block))?,
                cidr: d.cidr6.to_string(),
            })
        });
        Allocation {
            address: ip,
            prefix_len: self.cidr.prefix(),
            gateway: gateway(block),
            cidr: self.cidr.to_string(),
            mtu: self.pod_mtu,
            bridge: self.bridge.clone(),
            ipv6,
        }
    }

    fn persist(&self, t: &Table) -> std::result::Result<(), Error> {
        t.save(&self.path, self.cidr)
            .map_err(|e| Error::Internal(format!("{e:#}")))
    }

    /// Records the pod identity of an existing reservation if it changed (an ADD repeated with
    /// the identity the first one lacked), persisted like the rest.
    fn set_identity(&self, a: &Attachment, pod: Option<PodRef>) -> std::result::Result<(), Error> {
        let (before, snapshot) = {
            let mut t = lock(&self.table);
            let Some(r) = t.reservation(a) else {
                return Ok(());
            };
            if r.pod == pod || pod.is_none() {
                return Ok(());
            }
            let before = t.clone();
            let mut r = r.clone();
            r.pod = pod;
            t.restore(r);
            (before, t.clone())
        };
        if let Err(e) = self.persist(&snapshot) {
            *lock(&self.table) = before;
            return Err(e);
        }
        Ok(())
    }

    /// Reserves an address for `a` (the same one again for an attachment that holds one), with
    /// the pod identity `pod` if the runtime gave one.
    pub async fn allocate(
        &self,
        a: Attachment,
        netns: String,
        pod: Option<PodRef>,
    ) -> std::result::Result<Allocation, Error> {
        a.check().map_err(|e| Error::BadRequest(e.0))?;
        if let Some(p) = &pod {
            p.check().map_err(|e| Error::BadRequest(e.0))?;
        }
        let mut attempts = 0;
        loop {
            if self.closed.load(std::sync::atomic::Ordering::Acquire) {
                return Err(Error::Busy("this host is leaving the cluster".into()));
            }
            let seen_claims = self.claims_done.load(std::sync::atomic::Ordering::Acquire);
            {
                let _g = self.alloc.lock().await;
                let held = self.held();
                let existing = lock(&self.table).get(&a);
                if let Some(ip) = existing {
                    if held.iter().any(|b| b.contains(ip)) {
                        self.set_identity(&a, pod)?;
                        return Ok(self.allocation(ip));
                    }
                    // Its block was reclaimed: the address may be another host's now. The
                    // runtime is wiring this interface again, so it gets a fresh address (the
                    // stale reservation is replaced below).
                    tracing::warn!(
                        container = %a.container_id,
                        ifname = %a.ifname,
                        "{ip} is in a block this host no longer holds: handing out a new address"
                    );
                }
                let picked = lock(&self.table).pick(self.cidr, &held);
                if let Some(ip) = picked {
                    let (before, snapshot) = {
                        let mut t = lock(&self.table);
                        let before = t.clone();
                        t.insert(
                            a.clone(),
                            (ip, self.ipv6_of(ip)),
                            netns.clone(),
                            pod.clone(),
                        );
                        (before, t.clone())
                    };
                    if let Err(e) = self.persist(&snapshot) {
                        *lock(&self.table) = before;
                        return Err(e);
                    }
                    match self.ipv6_of(ip) {
                        Some(v6) => tracing::info!(
                            container = %a.container_id,
                            ifname = %a.ifname,
                            "reserved {ip} and {v6}"
                        ),
                        None => tracing::info!(
                            container = %a.container_id,
                            ifname = %a.ifname,
                            "reserved {ip}"
                        ),
                    }
                    return Ok(self.allocation(ip));
                }
            }
            attempts += 1;
            if attempts > 3 {
                return Err(Error::Internal(
                    "a new block was agreed but no address of it could be reserved".into(),
                ));
            }
            // Every held block is full: claim one more. Allocations that wait here while another
            // one claims use its outcome instead of claiming again.
            let mut claims = self.claims.lock().await;
            if claims.done == seen_claims {
                tracing::info!("every held block is full: claiming another one");
                let r = self.gossip.ipam_claim(CLAIM_TIMEOUT).await;
                match &r {
                    Ok(b) => {
                        tracing::info!(block = %b, "claimed block {b}");
                        if let Err(e) = self.reconcile_bridge(true).await {
                            tracing::warn!("adding the gateway of {b} to the bridge: {e:#}");
                        }
                    }
                    Err(e) => tracing::warn!("could not claim a block: {e}"),
                }
                claims.done += 1;
                claims.last = Some(r);
                self.claims_done
                    .store(claims.done, std::sync::atomic::Ordering::Release);
            }
            if let Some(Err(e)) = &claims.last {
                return Err(Error::Cluster(e.clone()));
            }
        }
    }

    /// Drops the reservation of `a`, if any.
    pub async fn release(&self, a: &Attachment) -> std::result::Result<ReleaseAnswer, Error> {
        let _g = self.alloc.lock().await;
        let (gone, snapshot) = {
            let mut t = lock(&self.table);
            let gone = t.remove(a);
            (gone, t.clone())
        };
        if let Some(r) = &gone {
            if let Err(e) = self.persist(&snapshot) {
                lock(&self.table).restore(r.clone());
                return Err(e);
            }
            tracing::info!(
                container = %a.container_id,
                ifname = %a.ifname,
                "released {}",
                r.address
            );
            self.unguard(std::slice::from_ref(r)).await;
        }
        Ok(ReleaseAnswer {
            released: gone.is_some(),
        })
    }

    /// Drops every reservation not in `keep`.
    pub async fn gc(&self, keep: &[Attachment]) -> std::result::Result<GcAnswer, Error> {
        let keep: BTreeSet<&Attachment> = keep.iter().collect();
        let _g = self.alloc.lock().await;
        let (released, before, snapshot) = {
            let mut t = lock(&self.table);
            let before = t.clone();
            let released: Vec<Reservation> = t
                .list()
                .into_iter()
                .filter(|r| !keep.contains(&r.attachment))
                .collect();
            for r in &released {
                t.remove(&r.attachment);
            }
            (released, before, t.clone())
        };
        if !released.is_empty() {
            if let Err(e) = self.persist(&snapshot) {
                *lock(&self.table) = before;
                return Err(e);
            }
            tracing::info!(
                "garbage collection released {} reservation(s)",
                released.len()
            );
            self.unguard(&released).await;
        }
        Ok(GcAnswer { released })
    }

    /// Starts `weft leave`: refuses while reservations exist (unless `force`), then stops every
    /// further allocation. Returns how many reservations there were.
    pub async fn begin_leave(&self, force: bool) -> std::result::Result<usize, Error> {
        let _g = self.alloc.lock().await;
        let n = lock(&self.table).len();
        if n > 0 && !force {
            return Err(Error::Busy(format!(
                "{n} pod address(es) are still reserved on this host: delete those pods first, or leave with --force"
            )));
        }
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(n)
    }

    /// Whether `weft leave` has begun.
    pub fn closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Drops every reservation (after `weft leave --force`).
    pub async fn clear(&self) -> Result<()> {
        let _g = self.alloc.lock().await;
        *lock(&self.table) = Table::default();
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.path.display())),
        }
    }

    /// Whether an ADD can be served now, and why not.
    pub fn readiness(&self) -> (bool, String) {
        let held = self.held();
        if lock(&self.table).pick(self.cidr, &held).is_some() {
            return (true, String::new());
        }
        match self.gossip.ipam_status() {
            None => (
                false,
                "the cluster IPAM is not running (no block can be claimed)".into(),
            ),
            Some(st) if st.free_blocks == 0 => (
                false,
                format!(
                    "every held block is full and the pod CIDR {} has no free block left",
                    self.cidr
                ),
            ),
            Some(st) if st.reachable < st.quorum => (
                false,
                format!(
                    "every held block is full and no majority is reachable for a new one: {} of the {} peers needed",
                    st.reachable, st.quorum
                ),
            ),
            Some(_) => (true, String::new()),
        }
    }

    /// `GET /v1/ipam`.
    pub fn report(&self) -> IpamReport {
        let (ready, reason) = self.readiness();
        IpamReport {
            ready,
            reason,
            cidr: self.cidr.to_string(),
            cidr6: self.cidr6().map(|c| c.to_string()).unwrap_or_default(),
            bridge: self.bridge.clone(),
            mtu: self.pod_mtu,
            reservations: self.reservations(),
        }
    }

    /// Gives the bridge the gateway address of every held block (with the pod CIDR's prefix
    /// length) and removes the addresses inside the pod CIDR of blocks no longer held. Does
    /// nothing when the held blocks have not changed since the last call, unless `force`.
    pub async fn reconcile_bridge(&self, force: bool) -> Result<()> {
        // Read the held blocks under the lock, so that a slower concurrent call cannot undo a
        // newer one with an older view.
        let mut last = self.bridge_blocks.lock().await;
        let held = self.held();
        if !force && last.as_ref() == Some(&held) {
            return Ok(());
        }
        let link = self
            .nl
            .link(&self.bridge)
            .await?
            .with_context(|| format!("no bridge {}", self.bridge))?;
        // Each held block's gateway, with its CIDR's prefix length; on a dual-stack cluster its
        // IPv6 twin too.
        let mut want: BTreeSet<(IpAddr, u8)> = BTreeSet::new();
        for b in &held {
            let gw = gateway(*b);
            want.insert((gw, self.cidr.prefix()));
            if let Some((d, v6)) = self.dual.and_then(|d| Some((d, d.map(gw)?))) {
                want.insert((IpAddr::V6(v6), d.cidr6.prefix()));
            }
        }
        let ours =
            |ip: &IpAddr| self.cidr.contains(*ip) || self.cidr6().is_some_and(|c| c.contains(*ip));
        let have = self.nl.link_addresses(link.index).await?;
        for (ip, len) in &have {
            if ours(ip) && !want.contains(&(*ip, *len)) {
                self.nl.del_address(link.index, *ip, *len).await?;
                tracing::info!(bridge = %self.bridge, "removed {ip}/{len}: its block is not held");
            }
        }
        for (ip, len) in &want {
            if !have.contains(&(*ip, *len)) {
                self.nl.add_address(link.index, *ip, *len).await?;
                tracing::info!(bridge = %self.bridge, "gateway {ip}/{len} added");
            }
        }
        *last = Some(held);
        Ok(())
    }

    /// Removes every address inside the pod CIDR from the bridge (`weft leave`).
    pub async fn clear_bridge(&self) -> Result<()> {
        let mut last = self.bridge_blocks.lock().await;
        *last = None;
        let Some(link) = self.nl.link(&self.bridge).await? else {
            return Ok(());
        };
        for (ip, len) in self.nl.link_addresses(link.index).await? {
            if self.cidr.contains(ip) || self.cidr6().is_some_and(|c| c.contains(ip)) {
                self.nl.del_address(link.index, ip, len).await?;
            }
        }
        Ok(())
    }

    /// Turns on IPv4 forwarding, loads (or, with masquerading off, removes) the masquerade
    /// table, and reconciles the port guard with the reservations.
    pub async fn setup_host(&self) -> Result<()> {
        if !self.cidr.is_ipv6() {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1\n")
                .context("enabling IPv4 forwarding (/proc/sys/net/ipv4/ip_forward)")?;
        }
        if self.dual.is_some() || self.cidr.is_ipv6() {
            // Hosts route their pods' IPv6 traffic too (docs/operations.md: an interface that
            // takes its address from router advertisements needs accept_ra=2 from now on).
            std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1\n")
                .context("enabling IPv6 forwarding (/proc/sys/net/ipv6/conf/all/forwarding)")?;
        }
        let ruleset = if self.masquerade {
            masquerade_ruleset(self.cidr, self.cidr6())
        } else {
            remove_ruleset()
        };
        let what = if self.masquerade {
            "loading"
        } else {
            "removing"
        };
        tokio::task::spawn_blocking(move || nft(&ruleset))
            .await?
            .with_context(|| format!("{what} the nftables table ip {NFT_TABLE}"))?;
        self.reconcile_guard().await
    }

    /// Removes the masquerade table.
    pub async fn remove_masquerade(&self) -> Result<()> {
        tokio::task::spawn_blocking(|| nft(&remove_ruleset()))
            .await?
            .with_context(|| format!("removing the nftables table ip {NFT_TABLE}"))
    }

    /// The guard entries of every reservation whose port was registered.
    fn guarded(&self) -> Vec<rules::PortRules> {
        self.reservations()
            .iter()
            .filter_map(guard::port_rules)
            .collect()
    }

    /// Makes the port guard's table match the reservations (at start, and after a failed
    /// change).
    pub async fn reconcile_guard(&self) -> Result<()> {
        self.guard.reconcile(&self.guarded()).await
    }

    /// `POST /v1/ports/guard`: records `req.port` with the attachment's reservation and guards
    /// it with the reservation's addresses, replacing the attachment's previous port.
    pub async fn guard_port(&self, req: GuardRequest) -> std::result::Result<GuardAnswer, Error> {
        let port = req.check().map_err(|e| Error::BadRequest(e.0))?.port;
        let a = &req.attachment;
        let _g = self.alloc.lock().await;
        let (old, new, snapshot) = {
            let mut t = lock(&self.table);
            let r = t.reservation(a).cloned().ok_or_else(|| {
                Error::BadRequest(format!(
                    "{}/{} holds no address here: allocate one first",
                    a.container_id, a.ifname
                ))
            })?;
            let mut new = r.clone();
            new.port = Some(port.clone());
            t.restore(new.clone());
            (r, new, t.clone())
        };
        if let Err(e) = self.persist(&snapshot) {
            lock(&self.table).restore(old);
            return Err(e);
        }
        let rules = guard::port_rules(&new).expect("a checked port");
        let before = guard::port_rules(&old);
        if let Err(e) = self.guard.add(&rules, before.as_ref()).await {
            tracing::warn!("{e:#}; reconciling the whole port guard");
            self.reconcile_guard()
                .await
                .map_err(|e| Error::Internal(format!("{e:#}")))?;
        }
        tracing::info!(
            container = %a.container_id,
            ifname = %a.ifname,
            port = %port.name,
            mac = %port.mac,
            "guarding the port: {}",
            rules
                .ipv4
                .iter()
                .map(ToString::to_string)
                .chain(rules.ipv6.iter().map(ToString::to_string))
                .collect::<Vec<_>>()
                .join(" and ")
        );
        Ok(GuardAnswer {
            port,
            ipv4: rules.ipv4,
            ipv6: rules.ipv6,
        })
    }

    /// Removes the guard of released reservations (reconciling the table if that fails).
    async fn unguard(&self, released: &[Reservation]) {
        let mut failed = false;
        for p in released.iter().filter_map(guard::port_rules) {
            if let Err(e) = self.guard.remove(&p).await {
                tracing::warn!("{e:#}");
                failed = true;
            }
        }
        if failed {
            if let Err(e) = self.reconcile_guard().await {
                tracing::warn!("{e:#}");
            }
        }
    }

    /// Removes the port guard's table (`weft leave`).
    pub async fn remove_guard(&self) -> Result<()> {
        self.guard.remove_table().await
    }

    /// Reads the guard's counters again.
    pub async fn refresh_guard(&self) {
        self.guard.refresh().await;
    }

    /// The guard section of the status report (counters as last refreshed).
    pub fn guard_report(&self) -> weft_api::guard::GuardReport {
        self.guard.report(&self.reservations())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Block {
        s.parse().unwrap()
    }

    fn ip4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn ipv6_blocks_hand_out_addresses_like_ipv4_ones() {
        let cidr = b("fd10:32::/48");
        let blk = b("fd10:32:0:7::/64");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut t = Table::default();
        assert_eq!(t.pick(cidr, &[blk]), Some(ip("fd10:32:0:7::2")));
        t.insert(att("a"), (ip("fd10:32:0:7::2"), None), String::new(), None);
        assert_eq!(t.pick(cidr, &[blk]), Some(ip("fd10:32:0:7::3")));
        assert_eq!(gateway(blk), ip("fd10:32:0:7::1"));
        // The CIDR's last address is never a pod's; a block's last one may be.
        let top = b("fd10:32:0:ffff::/64");
        assert!(!assignable(
            cidr,
            top,
            ip("fd10:32:0:ffff:ffff:ffff:ffff:ffff")
        ));
        assert!(assignable(
            cidr,
            top,
            ip("fd10:32:0:ffff:ffff:ffff:ffff:fffe")
        ));
        assert!(assignable(cidr, blk, ip("fd10:32:0:7:ffff:ffff:ffff:ffff")));
        assert!(!assignable(cidr, blk, ip("fd10:32:0:7::")));
    }

    fn att(id: &str) -> Attachment {
        Attachment {
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn block_prefix_defaults_and_validation() {
        assert_eq!(default_block_prefix(b("10.32.0.0/12")), 24);
        assert_eq!(default_block_prefix(b("10.32.0.0/22")), 24);
        assert_eq!(default_block_prefix(b("10.32.0.0/23")), 25);
        assert_eq!(default_block_prefix(b("10.32.0.0/28")), 30);
        assert!(validate(b("10.32.0.0/12"), 24).is_ok());
        assert!(validate(b("10.32.0.0/12"), 12).is_ok());
        assert!(validate(b("10.32.0.0/12"), 11).is_err());
        assert!(validate(b("10.32.0.0/28"), 30).is_ok());
        assert!(validate(b("10.32.0.0/28"), 31).is_err());
        // IPv6: /64 per host for the usual cluster sizes, and always a valid block count.
        for (cidr, want) in [
            ("fd10:32::/48", 64),
            ("fd10:32::/44", 64),
            ("fd10:32::/56", 64),
            ("fd10:32::/64", 72),
            ("fd10:32::/112", 120),
            ("fd10::/32", 52),
            ("fd10:32::/120", 120),
        ] {
            let c = b(cidr);
            assert_eq!(default_block_prefix(c), want, "{cidr}");
            assert!(validate(c, want).is_ok(), "{cidr}");
            let ipam = gossip::ipam::IpamConfig {
                cidr: c,
                block_prefix: want,
                grace: Duration::from_secs(60),
                init_peers: 1,
                state_file: None,
            };
            assert_eq!(ipam.validate(), Ok(()), "{cidr}");
        }
        assert!(validate(b("fd10:32::/48"), 126).is_ok());
        assert!(validate(b("fd10:32::/48"), 127).is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("1h5").is_err());
    }

    #[test]
    fn picks_the_lowest_free_assignable_address() {
        let cidr = b("10.32.0.0/12");
        let blk = b("10.32.0.0/24");
        let mut t = Table::default();
        // Network, gateway (and here also the CIDR's first address) are skipped.
        assert_eq!(t.pick(cidr, &[blk]), Some(ip4(10, 32, 0, 2)));
        t.insert(att("a"), (ip4(10, 32, 0, 2), None), String::new(), None);
        t.insert(att("b"), (ip4(10, 32, 0, 4), None), String::new(), None);
        assert_eq!(t.pick(cidr, &[blk]), Some(ip4(10, 32, 0, 3)));
        t.insert(att("c"), (ip4(10, 32, 0, 3), None), String::new(), None);
        assert_eq!(t.pick(cidr, &[blk]), Some(ip4(10, 32, 0, 5)));
        // A block's broadcast-looking last address is a normal pod address, except the CIDR's.
        let top = b("10.47.255.0/24");
        assert!(assignable(cidr, top, ip4(10, 47, 255, 254)));
        assert!(!assignable(cidr, top, ip4(10, 47, 255, 255)));
        assert!(assignable(cidr, blk, ip4(10, 32, 0, 255)));
        assert!(!assignable(cidr, blk, ip4(10, 32, 0, 1)));
        // Lower blocks first, whatever order they come in.
        let other = b("10.32.5.0/24");
        assert_eq!(
            Table::default().pick(cidr, &[other, blk]),
            Some(ip4(10, 32, 0, 2))
        );
        assert_eq!(t.pick(cidr, &[]), None);
    }

    #[test]
    fn a_tiny_block_fills_up() {
        let cidr = b("10.9.0.0/28");
        let blocks = [b("10.9.0.0/30"), b("10.9.0.12/30")];
        let mut t = Table::default();
        let mut got = Vec::new();
        while let Some(ip) = t.pick(cidr, &blocks) {
            t.insert(att(&ip.to_string()), (ip, None), String::new(), None);
            got.push(ip);
        }
        // 10.9.0.2, .3 in the first; .14 in the last (.15 is the CIDR's last address).
        assert_eq!(
            got,
            vec![ip4(10, 9, 0, 2), ip4(10, 9, 0, 3), ip4(10, 9, 0, 14)]
        );
    }

    #[test]
    fn lost_reservations_are_those_outside_held_blocks() {
        let mut t = Table::default();
        t.insert(att("a"), (ip4(10, 32, 0, 2), None), String::new(), None);
        t.insert(att("b"), (ip4(10, 32, 7, 2), None), String::new(), None);
        let lost = t.lost(&[b("10.32.0.0/24")]);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].address, ip4(10, 32, 7, 2));
    }

    #[test]
    fn the_table_round_trips_through_its_file() {
        let dir = std::env::temp_dir().join(format!("weft-ipam-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(RESERVATIONS_FILE);
        let cidr = b("10.32.0.0/12");
        assert!(Table::load(&path, cidr).unwrap().is_empty());
        let mut t = Table::default();
        t.insert(
            att("a"),
            (ip4(10, 32, 0, 2), None),
            "/run/netns/x".into(),
            None,
        );
        t.insert(att("b"), (ip4(10, 32, 0, 3), None), String::new(), None);
        t.save(&path, cidr).unwrap();
        assert_eq!(Table::load(&path, cidr).unwrap(), t);
        // Another pod CIDR: the reservations outside it are dropped.
        assert!(Table::load(&path, b("10.96.0.0/12")).unwrap().is_empty());
        std::fs::write(&path, "junk").unwrap();
        assert!(Table::load(&path, cidr).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_map_to_http() {
        let q = Error::Cluster(IpamError::NoQuorum { have: 1, need: 2 });
        assert_eq!(q.to_api().0, 503);
        assert!(q.to_api().1.retry);
        let x = Error::Cluster(IpamError::Exhausted(b("10.32.0.0/12")));
        assert!(!x.to_api().1.retry);
        assert_eq!(Error::BadRequest("x".into()).to_api().0, 400);
    }

    #[test]
    fn the_masquerade_script_replaces_one_table() {
        let s = masquerade_ruleset(b("10.32.0.0/12"), None);
        assert!(s.starts_with("table ip weft\ndelete table ip weft\n"));
        assert!(s.contains("ip saddr 10.32.0.0/12 ip daddr != 10.32.0.0/12 counter masquerade"));
        // An IPv6 table left from a dual-stack run goes; a dual-stack cluster gets one.
        assert!(
            s.ends_with("table ip6 weft\ndelete table ip6 weft\n"),
            "{s}"
        );
        let d = masquerade_ruleset(b("10.32.0.0/12"), Some(b("fd10:32::/48")));
        assert!(d.contains("ip6 saddr fd10:32::/48 ip6 daddr != fd10:32::/48 counter masquerade"));
        assert!(d.contains("ip saddr 10.32.0.0/12 ip daddr != 10.32.0.0/12 counter masquerade"));
        // An IPv6-only pod network: the IPv6 rule, and an IPv4 table left behind goes.
        let six = masquerade_ruleset(b("fd10:32::/48"), None);
        assert!(
            six.starts_with("table ip weft\ndelete table ip weft\ntable ip6 weft\n"),
            "{six}"
        );
        assert!(six.contains("ip6 saddr fd10:32::/48 ip6 daddr != fd10:32::/48 counter masquerade"));
        assert!(!six.contains("ip saddr"), "{six}");
    }

    #[test]
    fn dual_stack_addresses_are_mapped_from_ipv4() {
        let d = DualStack::new(b("10.32.0.0/12"), b("fd10:32::/48")).unwrap();
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(
            d.map("10.32.1.5".parse().unwrap()),
            Some(v6("fd10:32::105"))
        );
        assert_eq!(
            d.map("10.47.255.254".parse().unwrap()),
            Some(v6("fd10:32::f:fffe"))
        );
        assert_eq!(d.map("10.48.0.1".parse().unwrap()), None);
        assert_eq!(d.block(b("10.32.1.0/24")), Some(b("fd10:32::100/120")));
        // The IPv6 CIDR must hold as many addresses as the IPv4 one, and be IPv6.
        let e = DualStack::new(b("10.32.0.0/12"), b("fd10:32::/112")).unwrap_err();
        assert!(e.to_string().contains("/108"), "{e}");
        assert!(DualStack::new(b("10.32.0.0/12"), b("fd10:32::/108")).is_ok());
        assert!(DualStack::new(b("fd10:32::/48"), b("10.32.0.0/12")).is_err());
        assert!(DualStack::new(b("10.32.0.0/12"), b("10.48.0.0/12")).is_err());
    }
}
