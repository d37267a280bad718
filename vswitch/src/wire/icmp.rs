//! ICMP "fragmentation needed" (IPv4) and "packet too big" (ICMPv6) replies, built for a frame that
//! is too large for the overlay path so the sender learns the path MTU instead of losing packets.
//!
//! TODO(helper): implement.

use super::Result;

/// What [`too_big_reply`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooBig {
    /// A reply frame of this many bytes was written to `out`.
    Reply(usize),
    /// The frame may not be answered (IPv4 without DF, ICMP error itself, not IP, ...): count it only.
    NoReply,
}

/// For an Ethernet `frame` too large for a path of `mtu` (IP MTU), writes into `out` an Ethernet
/// frame to send back to its sender: ICMPv4 type 3 code 4 with the next-hop MTU (IPv4 with DF set)
/// or ICMPv6 type 2 with the MTU (IPv6), addressed from the original destination to the original
/// source (MACs and IPs swapped), quoting as much of the original packet as the rules allow
/// (IPv4: header + 8 bytes at least; IPv6: up to 1280 bytes in all). Checksums are correct.
pub fn too_big_reply(frame: &[u8], mtu: u32, out: &mut [u8]) -> Result<TooBig> {
    let _ = (frame, mtu, out);
    todo!()
}
