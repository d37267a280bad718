//! The driver's timer: ticks the gossip core (anti-entropy, hold-downs) and the IPAM state
//! machine, whose reachability it refreshes from the topology; every 2 s, re-handshakes that
//! are due ([`super::rotate`]).

use super::ipam::dispatch_ipam;
use super::{dispatch, Shared};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Drives the gossip core's timers (anti-entropy, hold-downs).
pub(super) async fn tick_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut secrets_at = Instant::now();
    loop {
        tokio::select! {
            _ = shared.shutdown.notified() => return,
            _ = tick.tick() => {
                if secrets_at.elapsed() >= Duration::from_secs(2) {
                    secrets_at = Instant::now();
                    super::rotate::reconcile(&shared, false);
                }
                let mut inner = shared.lock();
                let now = Instant::now();
                let out = inner.core.tick(now);
                dispatch(&shared, &mut inner, out);
                if inner.ipam.is_some() {
                    let refresh = inner
                        .ipam_reach_at
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(500));
                    let out = if refresh {
                        inner.ipam_reach_at = Some(now);
                        let reachable = crate::routes::Routes::compute_connections(
                            inner.core.topology(),
                        )
                        .reachable()
                        .into_iter()
                        .collect();
                        inner.ipam.as_mut().map(|i| i.set_reachable(now, reachable))
                    } else {
                        inner.ipam.as_mut().map(|i| i.tick(now))
                    };
                    if let Some(mut out) = out {
                        if refresh {
                            if let Some(i) = inner.ipam.as_mut() {
                                out.extend(i.tick(now));
                            }
                        }
                        dispatch_ipam(&shared, &mut inner, out);
                    }
                }
            }
        }
    }
}
