//! What a router watches for during a live trace (`weft trace --live`): the armed probes'
//! signatures and what was seen of them, shared by the data plane thread (which records what
//! its sleeve does with a marked frame), the kernel log reader (netfilter hooks) and the control
//! plane (which arms and collects).
//!
//! The per-packet cost when nothing is armed is one relaxed atomic load ([`Watch::on`]); only
//! while a probe is armed are frames parsed (with the pure `vswitch::wire` parsers) and matched,
//! and only a matching frame allocates (its event's text). At most [`MAX_ARMED`] traces are
//! armed at once and each keeps at most [`MAX_EVENTS`] events: a flood of arms or of marked
//! packets is bounded.

use gossip::trace::{Event, Signature, MAX_EVENTS};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vswitch::wire::{flow, EtherType, EthernetFrame, FlowRepr};

/// Traces armed at once, at most (ours and our neighbours').
pub const MAX_ARMED: usize = 8;

/// One armed trace.
#[derive(Debug)]
struct Armed {
    id: u64,
    signature: Signature,
    until: Instant,
    events: Vec<Event>,
    cut: bool,
}

/// Why an arm was refused (a cheap `Copy` value; the control plane turns it into text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArmError {
    /// [`MAX_ARMED`] traces are armed already.
    Busy,
    /// A trace with this identifier is armed already.
    Duplicate,
}

impl std::fmt::Display for ArmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArmError::Busy => write!(f, "{MAX_ARMED} live traces are armed already"),
            ArmError::Duplicate => write!(f, "a live trace with this identifier is armed already"),
        }
    }
}

/// The armed traces.
#[derive(Debug, Default)]
pub struct Watch {
    on: AtomicBool,
    armed: Mutex<Vec<Armed>>,
}

/// The wall clock, Unix microseconds.
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Watch {
    /// Whether any trace is armed: the one check the data plane makes per frame.
    #[inline]
    pub fn on(&self) -> bool {
        self.on.load(Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Armed>> {
        self.armed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Arms trace `id` for `window` from `now`. Traces whose window has closed are dropped first.
    pub fn arm(
        &self,
        id: u64,
        signature: Signature,
        window: Duration,
        now: Instant,
    ) -> Result<(), ArmError> {
        let mut a = self.lock();
        a.retain(|t| t.until + Duration::from_secs(5) > now);
        if a.iter().any(|t| t.id == id) {
            return Err(ArmError::Duplicate);
        }
        if a.len() >= MAX_ARMED {
            return Err(ArmError::Busy);
        }
        a.push(Armed {
            id,
            signature,
            until: now + window,
            events: Vec::with_capacity(MAX_EVENTS),
            cut: false,
        });
        self.on.store(true, Relaxed);
        Ok(())
    }

    /// Drops traces whose window closed more than `grace` before `now` and nobody took (a
    /// prober that never reported): the data plane stops looking. True if any was dropped.
    pub fn expire(&self, now: Instant, grace: Duration) -> bool {
        let mut a = self.lock();
        let before = a.len();
        a.retain(|t| t.until + grace > now);
        self.on.store(!a.is_empty(), Relaxed);
        a.len() != before
    }

    /// The signatures of the traces armed (the kernel table is made of them).
    pub fn signatures(&self) -> Vec<Signature> {
        self.lock().iter().map(|t| t.signature).collect()
    }

    /// Disarms trace `id` and returns what was seen of it (`None`: not armed), and whether
    /// events were cut at [`MAX_EVENTS`].
    pub fn take(&self, id: u64) -> Option<(Vec<Event>, bool)> {
        let mut a = self.lock();
        let i = a.iter().position(|t| t.id == id)?;
        let t = a.swap_remove(i);
        self.on.store(!a.is_empty(), Relaxed);
        Some((t.events, t.cut))
    }

    /// Records `point` for every armed trace the IP packet `ip` matches, with the text
    /// `detail` makes. Returns whether it matched one.
    pub fn observe_ip(&self, ip: &[u8], point: &str, detail: impl Fn() -> String) -> bool {
        let Ok(f) = FlowRepr::parse(ip) else {
            return false;
        };
        let echo = flow::echo_id(ip);
        self.record(&f, echo, point, detail)
    }

    /// [`Watch::observe_ip`] for the Ethernet frame `frame`.
    pub fn observe_frame(&self, frame: &[u8], point: &str, detail: impl Fn() -> String) -> bool {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return false;
        };
        match eth.ethertype() {
            EtherType::Ipv4 | EtherType::Ipv6 => self.observe_ip(eth.payload(), point, detail),
            _ => false,
        }
    }

    fn record(
        &self,
        f: &FlowRepr,
        echo: Option<u16>,
        point: &str,
        detail: impl Fn() -> String,
    ) -> bool {
        let now = Instant::now();
        let mut matched = false;
        for t in self.lock().iter_mut().filter(|t| t.until > now) {
            let Some(direction) = t.signature.matches(f, echo) else {
                continue;
            };
            matched = true;
            if t.events.len() == MAX_EVENTS {
                t.cut = true;
                continue;
            }
            t.events.push(
                Event {
                    point: point.to_string(),
                    direction,
                    detail: detail(),
                    at_us: wall_us(),
                }
                .bounded(),
            );
        }
        matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gossip::trace::{Direction, ICMP};

    fn icmp(src: [u8; 4], dst: [u8; 4], ty: u8, id: u16) -> Vec<u8> {
        let mut b = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 1, 0, 0];
        b.extend_from_slice(&src);
        b.extend_from_slice(&dst);
        b.extend_from_slice(&[ty, 0, 0, 0]);
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(&[0, 1]);
        b
    }

    fn sig() -> Signature {
        Signature {
            src: "10.32.0.2".parse().unwrap(),
            dst: "10.32.1.3".parse().unwrap(),
            proto: ICMP,
            key: 77,
            port: None,
        }
    }

    #[test]
    fn records_probe_and_reply_while_armed_only() {
        let w = Watch::default();
        let now = Instant::now();
        let probe = icmp([10, 32, 0, 2], [10, 32, 1, 3], 8, 77);
        let reply = icmp([10, 32, 1, 3], [10, 32, 0, 2], 0, 77);
        assert!(!w.on());
        assert!(!w.observe_ip(&probe, "kernel", || "x".into()));
        w.arm(1, sig(), Duration::from_secs(2), now).unwrap();
        assert!(w.on());
        assert!(w.observe_ip(&probe, "kernel", || "out".into()));
        assert!(w.observe_ip(&reply, "kernel", || "back".into()));
        assert!(!w.observe_ip(
            &icmp([10, 32, 0, 2], [10, 32, 1, 3], 8, 78),
            "k",
            String::new
        ));
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&probe);
        assert!(w.observe_frame(&frame, "tap in", || "f".into()));
        let (events, cut) = w.take(1).unwrap();
        assert!(!cut);
        let seen: Vec<_> = events
            .iter()
            .map(|e| (e.direction, e.detail.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (Direction::Probe, "out"),
                (Direction::Reply, "back"),
                (Direction::Probe, "f")
            ]
        );
        assert!(!w.on());
        assert!(w.take(1).is_none());
    }

    #[test]
    fn arms_and_events_are_bounded() {
        let w = Watch::default();
        let now = Instant::now();
        for id in 0..MAX_ARMED as u64 {
            w.arm(id, sig(), Duration::from_secs(2), now).unwrap();
        }
        assert_eq!(
            w.arm(99, sig(), Duration::from_secs(2), now),
            Err(ArmError::Busy)
        );
        assert_eq!(
            w.arm(0, sig(), Duration::from_secs(2), now),
            Err(ArmError::Duplicate)
        );
        let probe = icmp([10, 32, 0, 2], [10, 32, 1, 3], 8, 77);
        for _ in 0..MAX_EVENTS + 10 {
            w.observe_ip(&probe, "kernel", || "x".into());
        }
        let (events, cut) = w.take(3).unwrap();
        assert_eq!(events.len(), MAX_EVENTS);
        assert!(cut);
        assert!(!w.expire(now, Duration::from_secs(1)));
        assert!(w.expire(now + Duration::from_secs(10), Duration::from_secs(1)));
        assert!(!w.on());
        // Long past their window, old arms make room.
        let later = now + Duration::from_secs(60);
        w.arm(100, sig(), Duration::from_secs(2), later).unwrap();
    }
}
