//! The forwarding decision. [`Switch`] wraps the [`Fdb`] and decides, for each frame read from the
//! local TAP port or received from a peer, where it goes.
//!
//! Both directions first check the frame (at least an Ethernet header; a unicast, non-zero source;
//! not an 802.1D link-local destination) and then learn its source. Frames from the TAP port go to
//! one peer when the destination is known behind it and are flooded otherwise. Frames from a peer
//! are always delivered to the TAP port: the local bridge knows best which of its ports, if any,
//! wants them, and a peer with a stale table must not black-hole traffic.

use crate::fdb::{Fdb, FdbStats, Location};
use crate::wire::{EthernetFrame, MacAddr, PeerName};
use std::time::Instant;

/// Why a frame was dropped. Cheap and `Copy`; the router counts drops per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Truncated,
    /// 802.1D link-local destination (STP, LLDP, ...).
    LinkLocal,
    /// Source MAC is multicast/broadcast or all zeroes (invalid).
    BadSource,
    /// From the TAP port, for a MAC that is itself local: the bridge delivers it, not us.
    LocalDestination,
    /// From a peer, for a MAC known behind another peer (we are not its host). Reserved for
    /// relaying: [`Switch::from_peer`] delivers such frames and never returns it today.
    NotForUs,
}

impl DropReason {
    /// Every reason, for iterating counters.
    pub const ALL: [DropReason; 5] = [
        DropReason::Truncated,
        DropReason::LinkLocal,
        DropReason::BadSource,
        DropReason::LocalDestination,
        DropReason::NotForUs,
    ];

    /// A stable snake_case name for status output and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::LinkLocal => "link_local",
            DropReason::BadSource => "bad_source",
            DropReason::LocalDestination => "local_destination",
            DropReason::NotForUs => "not_for_us",
        }
    }

    /// Index into a `[_; DropReason::ALL.len()]` counter array.
    pub fn index(&self) -> usize {
        *self as usize
    }
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send to this one peer.
    Unicast(PeerName),
    /// Send to every peer (broadcast, multicast, unknown unicast).
    Flood,
    /// Write to the local TAP port (the bridge takes it from there).
    Deliver,
    /// Drop it.
    Drop(DropReason),
}

/// The switch: MAC learning plus the forwarding decision.
#[derive(Debug, Default)]
pub struct Switch {
    fdb: Fdb,
}

impl Switch {
    /// A switch over the given table.
    pub fn new(fdb: Fdb) -> Self {
        Switch { fdb }
    }

    /// A frame read from the local TAP port: learns its source as local and decides where it goes.
    ///
    /// In order: shorter than 14 bytes is [`DropReason::Truncated`]; a multicast or all-zero
    /// source is [`DropReason::BadSource`]; an 802.1D link-local destination is
    /// [`DropReason::LinkLocal`] (none of these is learned). Then the source is learned as
    /// [`Location::Local`], and a broadcast or multicast destination is flooded, a destination
    /// known behind a peer is unicast to it, a destination known to be local is
    /// [`DropReason::LocalDestination`], and an unknown one is flooded.
    pub fn from_local(&mut self, now: Instant, frame: &[u8]) -> Decision {
        let (src, dst) = match check(frame) {
            Ok(addrs) => addrs,
            Err(reason) => return Decision::Drop(reason),
        };
        self.fdb.learn(now, src, Location::Local);
        if dst.is_multicast() {
            return Decision::Flood;
        }
        match self.fdb.lookup(now, dst) {
            Some(Location::Peer(peer)) => Decision::Unicast(peer),
            Some(Location::Local) => Decision::Drop(DropReason::LocalDestination),
            None => Decision::Flood,
        }
    }

    /// A frame decapsulated from `peer`: learns its source as behind `peer` and decides whether to
    /// deliver it locally.
    ///
    /// The same checks as [`Switch::from_local`] come first. Then the source is learned as
    /// [`Location::Peer`]`(peer)` (a MAC that was local or behind another peer moves at once) and
    /// the frame is delivered, whatever the destination: broadcast, multicast, unknown, local,
    /// or even known behind another peer (the sender's table is stale; the bridge drops what no
    /// port wants). So the result is [`Decision::Deliver`] or a [`Decision::Drop`] for an invalid
    /// frame.
    pub fn from_peer(&mut self, now: Instant, peer: PeerName, frame: &[u8]) -> Decision {
        let src = match check(frame) {
            Ok((src, _)) => src,
            Err(reason) => return Decision::Drop(reason),
        };
        self.fdb.learn(now, src, Location::Peer(peer));
        Decision::Deliver
    }

    /// The table.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The table, mutably (ageing, forgetting peers).
    pub fn fdb_mut(&mut self) -> &mut Fdb {
        &mut self.fdb
    }

    /// Table counters.
    pub fn stats(&self) -> FdbStats {
        self.fdb.stats()
    }
}

/// The validity checks both directions share; returns (source, destination).
fn check(frame: &[u8]) -> Result<(MacAddr, MacAddr), DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Truncated)?;
    let (src, dst) = (eth.src(), eth.dst());
    if src.is_multicast() || src == MacAddr::default() {
        return Err(DropReason::BadSource);
    }
    if dst.is_link_local() {
        return Err(DropReason::LinkLocal);
    }
    Ok((src, dst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdb::Learned;
    use std::time::Duration;

    const A: PeerName = PeerName(0xa);
    const B: PeerName = PeerName(0xb);
    const H1: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    const H2: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
    const H3: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x03]);

    fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
        let mut f = Vec::with_capacity(60);
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0);
        f
    }

    fn switch() -> Switch {
        Switch::new(Fdb::new(64, Duration::from_secs(300)))
    }

    #[test]
    fn drop_reasons_index_matches_all() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "truncated",
                "link_local",
                "bad_source",
                "local_destination",
                "not_for_us"
            ]
        );
    }

    #[test]
    fn invalid_frames_are_dropped_and_not_learned() {
        let t = Instant::now();
        let mut sw = switch();
        let f = frame(H2, H1);
        assert_eq!(
            sw.from_local(t, &f[..13]),
            Decision::Drop(DropReason::Truncated)
        );
        assert_eq!(
            sw.from_peer(t, A, &f[..13]),
            Decision::Drop(DropReason::Truncated)
        );
        for bad in [
            MacAddr::BROADCAST,
            MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
            MacAddr([0; 6]),
        ] {
            let f = frame(H2, bad);
            assert_eq!(sw.from_local(t, &f), Decision::Drop(DropReason::BadSource));
            assert_eq!(
                sw.from_peer(t, A, &f),
                Decision::Drop(DropReason::BadSource)
            );
        }
        for ll in [
            "01:80:c2:00:00:00",
            "01:80:c2:00:00:0e",
            "01:80:c2:00:00:03",
        ] {
            let f = frame(ll.parse().unwrap(), H1);
            assert_eq!(sw.from_local(t, &f), Decision::Drop(DropReason::LinkLocal));
            assert_eq!(
                sw.from_peer(t, A, &f),
                Decision::Drop(DropReason::LinkLocal)
            );
        }
        assert_eq!(sw.stats().entries, 0);
        // Just past the link-local range is ordinary multicast.
        let f = frame("01:80:c2:00:00:10".parse().unwrap(), H1);
        assert_eq!(sw.from_local(t, &f), Decision::Flood);
    }

    #[test]
    fn exactly_a_header_is_enough() {
        let t = Instant::now();
        let mut sw = switch();
        let f = frame(MacAddr::BROADCAST, H1);
        assert_eq!(sw.from_local(t, &f[..14]), Decision::Flood);
        assert_eq!(sw.fdb().lookup(t, H1), Some(Location::Local));
    }

    #[test]
    fn local_flood_rules() {
        let t = Instant::now();
        let mut sw = switch();
        // Broadcast, multicast (IPv4 and IPv6 groups) and unknown unicast flood.
        for dst in [
            MacAddr::BROADCAST,
            MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]),
            MacAddr([0x33, 0x33, 0xff, 0x00, 0x00, 0x01]),
            H2,
        ] {
            assert_eq!(sw.from_local(t, &frame(dst, H1)), Decision::Flood);
        }
        // Multicast floods even if a (bogus) entry existed for it.
        sw.fdb_mut()
            .learn(t, MacAddr([0x01, 0, 0x5e, 0, 0, 1]), Location::Peer(A));
        assert_eq!(
            sw.from_local(t, &frame(MacAddr([0x01, 0, 0x5e, 0, 0, 1]), H1)),
            Decision::Flood
        );
    }

    #[test]
    fn local_unicast_to_known_peer_and_local_drop() {
        let t = Instant::now();
        let mut sw = switch();
        assert_eq!(sw.from_peer(t, A, &frame(H1, H2)), Decision::Deliver);
        assert_eq!(sw.from_local(t, &frame(H2, H1)), Decision::Unicast(A));
        // H3 is local too: the bridge delivered it already.
        sw.from_local(t, &frame(MacAddr::BROADCAST, H3));
        assert_eq!(
            sw.from_local(t, &frame(H3, H1)),
            Decision::Drop(DropReason::LocalDestination)
        );
        assert_eq!(sw.fdb().lookup(t, H1), Some(Location::Local));
    }

    #[test]
    fn peer_frames_are_always_delivered() {
        let t = Instant::now();
        let mut sw = switch();
        sw.from_local(t, &frame(MacAddr::BROADCAST, H1));
        sw.from_peer(t, B, &frame(MacAddr::BROADCAST, H3));
        for dst in [
            MacAddr::BROADCAST,
            MacAddr([0x33, 0x33, 0, 0, 0, 1]),
            H1,
            H2,
            H3,
        ] {
            assert_eq!(sw.from_peer(t, A, &frame(dst, H2)), Decision::Deliver);
        }
        assert_eq!(sw.fdb().lookup(t, H2), Some(Location::Peer(A)));
        // H3 is still believed behind B; A's frame for it is delivered anyway.
        assert_eq!(sw.fdb().lookup(t, H3), Some(Location::Peer(B)));
    }

    #[test]
    fn moves_between_local_and_peers() {
        let t = Instant::now();
        let mut sw = switch();
        // Local -> peer A: a pod migrated away.
        sw.from_local(t, &frame(MacAddr::BROADCAST, H1));
        sw.from_peer(t, A, &frame(MacAddr::BROADCAST, H1));
        assert_eq!(sw.from_local(t, &frame(H1, H2)), Decision::Unicast(A));
        // Peer A -> peer B.
        sw.from_peer(t, B, &frame(MacAddr::BROADCAST, H1));
        assert_eq!(sw.from_local(t, &frame(H1, H2)), Decision::Unicast(B));
        // Peer B -> local: it came back.
        sw.from_local(t, &frame(MacAddr::BROADCAST, H1));
        assert_eq!(
            sw.from_local(t, &frame(H1, H2)),
            Decision::Drop(DropReason::LocalDestination)
        );
        assert_eq!(sw.stats().moves, 3);
        assert_eq!(
            sw.fdb_mut().learn(t, H1, Location::Local),
            Learned::Refreshed
        );
    }

    #[test]
    fn aged_entries_flood_again_and_forgotten_peers_too() {
        let t0 = Instant::now();
        let mut sw = Switch::new(Fdb::new(64, Duration::from_secs(10)));
        sw.from_peer(t0, A, &frame(MacAddr::BROADCAST, H2));
        sw.from_peer(t0, B, &frame(MacAddr::BROADCAST, H3));
        assert_eq!(sw.from_local(t0, &frame(H2, H1)), Decision::Unicast(A));
        let later = t0 + Duration::from_secs(11);
        assert_eq!(sw.from_local(later, &frame(H2, H1)), Decision::Flood);
        assert_eq!(sw.fdb_mut().expire(later), 2);
        sw.from_peer(later, A, &frame(MacAddr::BROADCAST, H2));
        assert_eq!(sw.fdb_mut().forget_peer(A), 1);
        assert_eq!(sw.from_local(later, &frame(H2, H1)), Decision::Flood);
        // H1 was learned at t0 and refreshed at `later`: still here.
        assert_eq!(sw.fdb().lookup(later, H1), Some(Location::Local));
    }
}
