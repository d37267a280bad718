//! Denials as they happen: the policy ruleset logs each denied packet (rate-limited in the
//! kernel) to a netfilter log group; a thread of its own reads them ([`weft_netlink::nflog`]),
//! keeps the latest for `weft status policy`, and logs them, at most [`LOG_PER_SECOND`] lines a
//! second with a count of the rest.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vswitch::wire::FlowRepr;

/// The log group the ruleset's deny rules send to.
pub const LOG_GROUP: u16 = weft_policy::nft::LOG_GROUP;
/// Denials kept for status.
pub const KEPT: usize = 20;
/// Log lines a second, at most.
pub const LOG_PER_SECOND: u32 = 5;

/// One denied packet.
#[derive(Debug, Clone)]
pub struct Denial {
    /// When it was read.
    pub at: Instant,
    /// `ingress` or `egress`: which side's policies denied it.
    pub direction: &'static str,
    /// Its flow.
    pub flow: FlowRepr,
}

/// The latest denials.
#[derive(Debug, Default)]
pub struct Denials {
    latest: Mutex<VecDeque<Denial>>,
}

impl Denials {
    /// The latest denials, oldest first.
    pub fn latest(&self) -> Vec<Denial> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn push(&self, d: Denial) {
        let mut l = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() == KEPT {
            l.pop_front();
        }
        l.push_back(d);
    }
}

/// Which direction a log prefix names (the ruleset writes `... ingress ...` or `... egress ...`).
pub fn direction(prefix: &str) -> Option<&'static str> {
    if prefix.contains("ingress") {
        Some("ingress")
    } else if prefix.contains("egress") {
        Some("egress")
    } else {
        None
    }
}

/// Starts the reader thread (in this process's network namespace, the host's). Without the
/// log (no permission, an old kernel) policy still works; denials are then only counted.
pub fn start(denials: Arc<Denials>) {
    let l = match weft_netlink::nflog::NflogListener::bind(LOG_GROUP) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("policy: denials will be counted but not logged: {e}");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("weft-denials".into())
        .spawn(move || read(l, &denials));
    if let Err(e) = spawned {
        tracing::warn!("policy: cannot start the denial reader: {e}");
    }
}

fn read(mut l: weft_netlink::nflog::NflogListener, denials: &Denials) {
    let mut second = Instant::now();
    let (mut logged, mut quiet) = (0u32, 0u64);
    loop {
        let batch = match l.recv() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("policy: reading denials stopped: {e}");
                return;
            }
        };
        for p in batch {
            let (Some(direction), Ok(flow)) = (direction(&p.prefix), FlowRepr::parse(&p.payload))
            else {
                continue;
            };
            if second.elapsed().as_secs() >= 1 {
                if quiet > 0 {
                    tracing::warn!("policy: {quiet} more denial(s) not logged");
                }
                second = Instant::now();
                (logged, quiet) = (0, 0);
            }
            if logged < LOG_PER_SECOND {
                logged += 1;
                tracing::warn!(
                    direction,
                    "policy denied {flow} ({direction} policies of the pod)"
                );
            } else {
                quiet += 1;
            }
            denials.push(Denial {
                at: Instant::now(),
                direction,
                flow,
            });
        }
    }
}
