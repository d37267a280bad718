//! What the data plane counts: drop reasons ([`Reason`], with the stable names status and
//! metrics show), host-wide counters ([`Counters`]) and per-peer counters and link state
//! ([`PeerCounters`]). The engine's protocol-level refusals ([`Discard`]) map onto reasons here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use vswitch::engine::Discard;
use vswitch::{CryptoError, DropReason};

/// Why the data plane dropped something. Each has a counter in [`Counters::drops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The switch refused the frame (see [`DropReason`]).
    Switch(DropReason),
    /// A datagram whose sleeve header does not parse.
    MalformedDatagram,
    /// A datagram of another sleeve version.
    UnsupportedVersion,
    /// A frame record running past the end of its datagram, or empty.
    TruncatedRecord,
    /// A received frame larger than this host's pod MTU allows.
    OversizeFrame,
    /// A datagram from a peer we have no connection with.
    UnknownPeer,
    /// A datagram for another peer arriving at a host that does not relay it (unused today:
    /// every host relays).
    NotForUs,
    /// A frame from a local pod too large for the overlay path (the sender got ICMP when allowed).
    TooBig,
    /// The UDP send failed.
    SendError,
    /// Writing to the TAP port failed.
    TapWriteError,
    /// A relayed datagram whose hop budget ran out (a routing loop, or a path longer than 8).
    TtlExpired,
    /// A datagram to relay towards a peer we have no route to.
    NoRoute,
    /// An encrypted datagram refused (see [`CryptoError`]).
    Crypto(CryptoError),
    /// A datagram in clear from a peer whose traffic must be encrypted.
    Unencrypted,
    /// A frame from the TAP port whose virtio-net header or super-frame could not be handled
    /// (see [`OffloadError`](vswitch::offload::OffloadError)).
    Offload,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 27] = [
        Reason::Switch(DropReason::Truncated),
        Reason::Switch(DropReason::LinkLocal),
        Reason::Switch(DropReason::BadSource),
        Reason::Switch(DropReason::LocalDestination),
        Reason::Switch(DropReason::NotForUs),
        Reason::MalformedDatagram,
        Reason::UnsupportedVersion,
        Reason::TruncatedRecord,
        Reason::OversizeFrame,
        Reason::UnknownPeer,
        Reason::NotForUs,
        Reason::TooBig,
        Reason::SendError,
        Reason::TapWriteError,
        Reason::TtlExpired,
        Reason::NoRoute,
        Reason::Crypto(CryptoError::ALL[0]),
        Reason::Crypto(CryptoError::ALL[1]),
        Reason::Crypto(CryptoError::ALL[2]),
        Reason::Crypto(CryptoError::ALL[3]),
        Reason::Crypto(CryptoError::ALL[4]),
        Reason::Crypto(CryptoError::ALL[5]),
        Reason::Crypto(CryptoError::ALL[6]),
        Reason::Crypto(CryptoError::ALL[7]),
        Reason::Crypto(CryptoError::ALL[8]),
        Reason::Unencrypted,
        Reason::Offload,
    ];

    pub(super) fn index(self) -> usize {
        match self {
            Reason::Switch(r) => r.index(),
            Reason::MalformedDatagram => 5,
            Reason::UnsupportedVersion => 6,
            Reason::TruncatedRecord => 7,
            Reason::OversizeFrame => 8,
            Reason::UnknownPeer => 9,
            Reason::NotForUs => 10,
            Reason::TooBig => 11,
            Reason::SendError => 12,
            Reason::TapWriteError => 13,
            Reason::TtlExpired => 14,
            Reason::NoRoute => 15,
            Reason::Crypto(e) => 16 + e.index(),
            Reason::Unencrypted => 25,
            Reason::Offload => 26,
        }
    }

    /// Stable snake_case name for status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Switch(r) => r.as_str(),
            Reason::MalformedDatagram => "malformed_datagram",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::TruncatedRecord => "truncated_record",
            Reason::OversizeFrame => "oversize_frame",
            Reason::UnknownPeer => "unknown_peer",
            Reason::NotForUs => "datagram_not_for_us",
            Reason::TooBig => "too_big",
            Reason::SendError => "send_error",
            Reason::TapWriteError => "tap_write_error",
            Reason::TtlExpired => "ttl_expired",
            Reason::NoRoute => "no_route",
            Reason::Crypto(e) => match e {
                CryptoError::Malformed => "crypto_malformed",
                CryptoError::UnknownKey => "crypto_unknown_key",
                CryptoError::AuthFailed => "crypto_auth_failed",
                CryptoError::Replayed => "crypto_replayed",
                CryptoError::TooOld => "crypto_too_old",
                CryptoError::CounterExhausted => "crypto_counter_exhausted",
                CryptoError::BufferTooSmall => "crypto_buffer_too_small",
                CryptoError::EpochInUse => "crypto_epoch_in_use",
                CryptoError::NoSendKey => "crypto_no_send_key",
            },
            Reason::Unencrypted => "unencrypted",
            Reason::Offload => "offload_error",
        }
    }
}

/// Host-wide data plane counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames read from the TAP port.
    pub tap_rx_frames: AtomicU64,
    /// Bytes read from the TAP port.
    pub tap_rx_bytes: AtomicU64,
    /// Frames written to the TAP port.
    pub tap_tx_frames: AtomicU64,
    /// Bytes written to the TAP port.
    pub tap_tx_bytes: AtomicU64,
    /// TCP super-frames read from the TAP port (counted in `tap_rx_frames` too).
    pub tap_rx_gso_frames: AtomicU64,
    /// Segments cut from those super-frames.
    pub tap_rx_gso_segments: AtomicU64,
    /// Of those, segments sent to a sleeve peer with the TCP checksum left partial
    /// (`FLAG_CSUM_PARTIAL`).
    pub tx_csum_partial_segments: AtomicU64,
    /// Super-frames written to the TAP port, each made of several received segments.
    pub tap_tx_gso_frames: AtomicU64,
    /// Segments joined into those super-frames.
    pub tap_tx_gso_segments: AtomicU64,
    /// Datagrams received.
    pub udp_rx_datagrams: AtomicU64,
    /// Datagrams sent.
    pub udp_tx_datagrams: AtomicU64,
    /// `sendmsg` calls that sent several datagrams at once (UDP GSO).
    pub udp_tx_gso_sends: AtomicU64,
    /// Frames sent to every peer (broadcast, multicast, unknown unicast).
    pub flooded_frames: AtomicU64,
    /// Frames sent to one known peer.
    pub unicast_frames: AtomicU64,
    /// ICMP "fragmentation needed" / "packet too big" replies sent to local pods.
    pub icmp_too_big_sent: AtomicU64,
    /// Datagrams forwarded on behalf of other peers (this host as a relay).
    pub relayed_datagrams: AtomicU64,
    /// UDP heartbeats answered.
    pub heartbeats_answered: AtomicU64,
    /// Frames for a fast-path peer that reached the router anyway (the bridge still had the
    /// destination on the TAP port) and were handed to the peer's kernel VXLAN device.
    pub vxlan_handoff_frames: AtomicU64,
    /// Drops, indexed like [`Reason::ALL`].
    pub drops: [AtomicU64; Reason::ALL.len()],
}

impl Counters {
    pub(super) fn drop(&self, r: Reason) {
        self.drops[r.index()].fetch_add(1, Relaxed);
    }

    /// The drop counter for `r`.
    pub fn drops_for(&self, r: Reason) -> u64 {
        self.drops[r.index()].load(Relaxed)
    }
}

/// What one data plane worker read (`weft status`'s `workers`): shows how the flows spread.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Frames read from its TAP queue.
    pub tap_rx_frames: AtomicU64,
    /// Datagrams received on its UDP socket.
    pub udp_rx_datagrams: AtomicU64,
}

/// Per-peer counters and link state; they survive the peer's reconnections.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Frames sent to the peer.
    pub tx_frames: AtomicU64,
    /// Frame bytes sent to the peer.
    pub tx_bytes: AtomicU64,
    /// Datagrams sent to the peer (or to the relay that leads to it).
    pub tx_datagrams: AtomicU64,
    /// Frames received from the peer.
    pub rx_frames: AtomicU64,
    /// Frame bytes received from the peer.
    pub rx_bytes: AtomicU64,
    /// Datagrams received from the peer (directly or relayed).
    pub rx_datagrams: AtomicU64,
    /// Datagrams from this peer that we forwarded on to others (we were its relay).
    pub relayed_datagrams: AtomicU64,
    /// Drops of traffic from this peer, indexed like [`Reason::ALL`].
    pub drops: [AtomicU64; Reason::ALL.len()],
    /// When the last UDP heartbeat answer arrived, in ms since [`Shared::epoch`](super::Shared::epoch) (0: never).
    pub last_ack_ms: AtomicU64,
    /// Round-trip time of the last UDP heartbeat, in microseconds.
    pub rtt_us: AtomicU64,
    /// Every heartbeat round trip measured with this peer (`weft_peer_rtt_seconds`).
    pub rtt: RttHistogram,
    /// The source address this peer's UDP heartbeats arrive from (behind NAT it differs from
    /// the address it announced).
    pub observed_addr: Mutex<Option<SocketAddr>>,
    /// Its last heartbeat answer said it takes `FLAG_CSUM_PARTIAL` datagrams (builds older than
    /// the flag answer without the capability byte and drop flagged datagrams).
    pub takes_csum_partial: AtomicBool,
    /// Its heartbeat answers announce lanes (`Caps::LANES`): datagrams to it may carry the
    /// sending worker's lane, which spreads them over its workers.
    pub takes_lanes: AtomicBool,
}

impl PeerCounters {
    /// The drop counter for `r`.
    pub fn drops_for(&self, r: Reason) -> u64 {
        self.drops[r.index()].load(Relaxed)
    }
}

/// Upper bounds of the round-trip buckets, in microseconds: 50 µs (a quiet LAN or two
/// namespaces) to 1 s (a peer far away or overloaded); slower answers fall in `+Inf` only.
pub const RTT_BOUNDS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// Heartbeat round trips as a Prometheus histogram, counted as the answers arrive (relaxed
/// atomics: the data plane thread writes, status reads).
#[derive(Debug, Default)]
pub struct RttHistogram {
    /// Round trips per bucket, not cumulative: `[i]` counts those in `(bound[i-1], bound[i]]`,
    /// the last those above every bound.
    counts: [AtomicU64; RTT_BOUNDS_US.len() + 1],
    /// Sum of the round trips, in microseconds.
    sum_us: AtomicU64,
}

impl RttHistogram {
    /// Counts one round trip. A zero reading (the engine's answer to a clock that went
    /// backwards, see `vswitch::engine`) is no measurement and is left out.
    pub fn observe(&self, rtt_us: u64) {
        if rtt_us == 0 {
            return;
        }
        let i = RTT_BOUNDS_US.partition_point(|b| *b < rtt_us);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(rtt_us, Relaxed);
    }

    /// The histogram as status shows it (`None` before the first round trip). Read bucket by
    /// bucket while answers may arrive; the cumulative counts are computed from the values
    /// read, so they never decrease and the last equals the count.
    pub fn snapshot(&self) -> Option<weft_api::status::RttHistogram> {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(RTT_BOUNDS_US.len());
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Relaxed);
            if let Some(b) = RTT_BOUNDS_US.get(i) {
                buckets.push(weft_api::status::RttBucket {
                    le_secs: *b as f64 / 1e6,
                    count: total,
                });
            }
        }
        (total > 0).then(|| weft_api::status::RttHistogram {
            buckets,
            count: total,
            sum_secs: self.sum_us.load(Relaxed) as f64 / 1e6,
        })
    }
}

/// Counts the drop `r` of traffic from `peer` on the peer and host-wide.
pub(super) fn count(counters: &Counters, peer: &PeerCounters, r: Reason) {
    peer.drops[r.index()].fetch_add(1, Relaxed);
    counters.drop(r);
}

impl From<Discard> for Reason {
    fn from(d: Discard) -> Reason {
        match d {
            Discard::Malformed => Reason::MalformedDatagram,
            Discard::UnsupportedVersion => Reason::UnsupportedVersion,
            Discard::UnknownPeer => Reason::UnknownPeer,
            Discard::NoSession => Reason::Crypto(CryptoError::UnknownKey),
            Discard::Unencrypted => Reason::Unencrypted,
            Discard::TtlExpired => Reason::TtlExpired,
            Discard::NoRoute => Reason::NoRoute,
            Discard::TruncatedRecord => Reason::TruncatedRecord,
            Discard::OversizeFrame => Reason::OversizeFrame,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_indices_match_all() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len(), "names are unique");
    }

    #[test]
    fn rtt_histogram_buckets() {
        let h = RttHistogram::default();
        assert_eq!(h.snapshot(), None, "nothing before the first answer");
        h.observe(0); // no measurement
        assert_eq!(h.snapshot(), None);
        // On a bound counts in that bucket (le: less or equal); just above, in the next one.
        for us in [
            1, 50, 51, 100, 999, 1_000, 1_001, 1_000_000, 1_000_001, 30_000_000,
        ] {
            h.observe(us);
        }
        let s = h.snapshot().unwrap();
        assert_eq!(s.count, 10);
        assert_eq!(s.sum_secs, 32_003_203.0 / 1e6);
        let les: Vec<f64> = s.buckets.iter().map(|b| b.le_secs).collect();
        assert_eq!(
            les,
            [
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0
            ]
        );
        let counts: Vec<u64> = s.buckets.iter().map(|b| b.count).collect();
        // <=50us: 1, 50; <=100us: +51, 100; <=1ms: +999, 1000; <=2.5ms: +1001; <=1s: +1s;
        // above: 1s+1us, 30s (only in +Inf, the count).
        assert_eq!(counts, [2, 4, 4, 4, 6, 7, 7, 7, 7, 7, 7, 7, 7, 8]);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "cumulative");
    }

    #[test]
    fn engine_discards_keep_their_counter_names() {
        let pairs = [
            (Discard::Malformed, "malformed_datagram"),
            (Discard::UnsupportedVersion, "unsupported_version"),
            (Discard::UnknownPeer, "unknown_peer"),
            (Discard::NoSession, "crypto_unknown_key"),
            (Discard::Unencrypted, "unencrypted"),
            (Discard::TtlExpired, "ttl_expired"),
            (Discard::NoRoute, "no_route"),
            (Discard::TruncatedRecord, "truncated_record"),
            (Discard::OversizeFrame, "oversize_frame"),
        ];
        for (d, name) in pairs {
            assert_eq!(Reason::from(d).as_str(), name);
        }
    }
}
