//! The IPAM side of the driver: [`Gossip`]'s calls to claim, release and list blocks and to
//! leave the cluster, and [`dispatch_ipam`], which carries out what the IPAM state machine asks
//! (persist first, then send).

use super::ipam_store::save_ipam_state;
use super::{Gossip, Inner, Shared};
use crate::ipam::{Block, ClaimState, IpamError, IpamOut, IpamStatus};
use crate::proto::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Gossip {
    /// Blocks of the pod CIDR this host holds (agreed by a majority). Empty when IPAM is off.
    pub fn ipam_blocks(&self) -> Vec<crate::ipam::Block> {
        self.shared
            .lock()
            .ipam
            .as_ref()
            .map(|i| i.held())
            .unwrap_or_default()
    }

    /// Blocks this host lost because the cluster reclaimed them while it was unreachable for
    /// longer than the grace period (addresses in them must not be used any more).
    pub fn ipam_lost(&self) -> Vec<crate::ipam::Block> {
        self.shared
            .lock()
            .ipam
            .as_ref()
            .map(|i| i.lost().to_vec())
            .unwrap_or_default()
    }

    /// Claims one more block and returns it once a majority of the cluster has agreed, or an
    /// error when that cannot happen within `timeout` (the claim is then withdrawn).
    ///
    /// Callers are served one at a time: each call claims a new block, so a caller that waited
    /// should check whether it still needs one.
    pub async fn ipam_claim(
        &self,
        timeout: Duration,
    ) -> Result<crate::ipam::Block, crate::ipam::IpamError> {
        if self.shared.cfg.ipam.is_none() {
            return Err(IpamError::Disabled);
        }
        let _one_at_a_time = self.shared.ipam_claim_lock.lock().await;
        let deadline = Instant::now() + timeout;
        let mut current: Option<Block> = None;
        loop {
            let changed = self.shared.ipam_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut inner = self.shared.lock();
                let Some(ipam) = inner.ipam.as_mut() else {
                    return Err(IpamError::Disabled);
                };
                let now = Instant::now();
                let b = match current {
                    Some(b) => b,
                    None => {
                        let (b, out) = ipam.claim(now)?;
                        current = Some(b);
                        dispatch_ipam(&self.shared, &mut inner, out);
                        b
                    }
                };
                let ipam = inner.ipam.as_mut().expect("checked above");
                match ipam.claim_state(b) {
                    ClaimState::Held => return Ok(b),
                    ClaimState::Pending if now >= deadline => {
                        let (have, need) = ipam.quorum();
                        let out = ipam.withdraw(now, b);
                        let held = ipam.claim_state(b) == ClaimState::Held;
                        dispatch_ipam(&self.shared, &mut inner, out);
                        if held {
                            return Ok(b);
                        }
                        return Err(IpamError::NoQuorum { have, need });
                    }
                    ClaimState::Pending => {}
                    // Someone else won it: try another block.
                    ClaimState::Gone => {
                        current = None;
                        if now >= deadline {
                            let (have, need) = ipam.quorum();
                            return Err(IpamError::NoQuorum { have, need });
                        }
                        continue;
                    }
                }
            }
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200));
            let _ = tokio::time::timeout(wait, changed).await;
        }
    }

    /// Hands a block back to the cluster at once (the caller no longer uses any address in it).
    pub fn ipam_release(&self, block: crate::ipam::Block) {
        let mut inner = self.shared.lock();
        if let Some(out) = inner
            .ipam
            .as_mut()
            .map(|i| i.release(Instant::now(), block))
        {
            dispatch_ipam(&self.shared, &mut inner, out);
        }
    }

    /// Tells IPAM that `peer`'s host was deleted from the cluster (or no longer is): see
    /// [`crate::ipam::Ipam::set_deleted`].
    pub fn ipam_set_deleted(&self, peer: crate::PeerName, deleted: bool) {
        let mut inner = self.shared.lock();
        if let Some(out) = inner
            .ipam
            .as_mut()
            .map(|i| i.set_deleted(Instant::now(), peer, deleted))
        {
            dispatch_ipam(&self.shared, &mut inner, out);
        }
    }

    /// [`Gossip::ipam_set_deleted`] for every peer whose IPAM record carries `nickname` (a
    /// Kubernetes Node's name, which the router is started with as `--name`); returns them.
    pub fn ipam_set_deleted_by_nickname(
        &self,
        nickname: &str,
        deleted: bool,
    ) -> Vec<crate::PeerName> {
        let peers: Vec<crate::PeerName> = {
            let inner = self.shared.lock();
            let Some(ipam) = inner.ipam.as_ref() else {
                return Vec::new();
            };
            let me = ipam.name();
            ipam.records()
                .values()
                .filter(|r| r.nickname == nickname && r.name != me)
                .map(|r| r.name)
                .collect()
        };
        for p in &peers {
            self.ipam_set_deleted(*p, deleted);
        }
        peers
    }

    /// Leaves the cluster cleanly: hands every block back, tells the peers this host is gone for
    /// good (so it no longer counts for majorities) and waits up to `timeout` for a neighbour to
    /// have heard it.
    pub async fn ipam_leave(&self, timeout: Duration) {
        {
            let mut inner = self.shared.lock();
            let Some(out) = inner.ipam.as_mut().map(|i| i.leave(Instant::now())) else {
                return;
            };
            dispatch_ipam(&self.shared, &mut inner, out);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.shared.ipam_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let inner = self.shared.lock();
                let acked = inner.ipam.as_ref().is_some_and(|i| i.leave_acked());
                if acked || inner.mesh.is_empty() || Instant::now() >= deadline {
                    return;
                }
            }
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200));
            let _ = tokio::time::timeout(wait, changed).await;
        }
    }

    /// Received records the core and the IPAM state machine refused or found suspicious, by
    /// reason (`topology_*`, `ipam_*`; see `core::checks` and `ipam::checks`).
    pub fn rejected_records(&self) -> std::collections::BTreeMap<String, u64> {
        let inner = self.shared.lock();
        let t = inner.core.stats();
        let mut out: std::collections::BTreeMap<String, u64> = [
            ("topology_malformed", t.rejected_malformed),
            ("topology_version", t.rejected_version),
            ("topology_foreign_own", t.foreign_own),
            ("topology_signature", t.rejected_signature),
            ("topology_wrong_key", t.rejected_wrong_key),
            ("topology_unsigned", t.rejected_unsigned),
            ("topology_unsigned_accepted", t.unsigned_accepted),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let Some(r) = inner.ipam.as_ref().map(|i| i.rejects()) {
            for (k, v) in [
                ("ipam_malformed", r.malformed),
                ("ipam_version_jump", r.version_jump),
                ("ipam_forged_own", r.forged_own),
                ("ipam_conflicting_claims", r.conflicting_claims),
                ("ipam_signature", r.signature),
                ("ipam_wrong_key", r.wrong_key),
                ("ipam_unsigned", r.unsigned),
                ("ipam_unsigned_accepted", r.unsigned_accepted),
            ] {
                out.insert(k.to_owned(), v);
            }
        }
        out
    }

    /// What `weft status` shows about IPAM; `None` when IPAM is off.
    pub fn ipam_status(&self) -> Option<IpamStatus> {
        let inner = self.shared.lock();
        inner.ipam.as_ref().map(|i| i.status(Instant::now()))
    }
}

/// Carries out what the IPAM state machine asked for, in order: persisting its state comes
/// before sending anything that reflects it. Called with the lock held.
pub(super) fn dispatch_ipam(shared: &Arc<Shared>, inner: &mut Inner, out: Vec<IpamOut>) {
    for o in out {
        match o {
            IpamOut::Persist => {
                let (Some(path), Some(ipam)) = (
                    shared.cfg.ipam.as_ref().and_then(|c| c.state_file.as_ref()),
                    inner.ipam.as_ref(),
                ) else {
                    continue;
                };
                if let Err(e) = save_ipam_state(path, &ipam.state()) {
                    tracing::error!(path = %path.display(), "cannot save the IPAM state: {e}");
                }
            }
            IpamOut::Send { to, msg } => {
                let sent = inner
                    .mesh
                    .get(to)
                    .and_then(|c| inner.conns.get(&c.id))
                    .map(|c| c.tx.try_send(Message::Ipam(msg)).is_ok());
                if sent != Some(true) {
                    // Anti-entropy repairs it.
                    inner.gossip_dropped += 1;
                }
            }
        }
    }
    shared.ipam_changed.notify_waiters();
}
