//! The probe of `weft trace --live`, sent by the `weft` command (not the daemon, which never
//! changes namespace) from inside the source pod's network namespace: a thread of its own
//! enters it (`setns` is per thread) and ends with the probe, so no thread is left in a pod's
//! namespace. ICMP: an echo request with the trace's identifier on a raw socket, the reply
//! awaited; TCP: a connection from the trace's source port, the SYN-ACK or RST awaited; UDP: one
//! datagram from the trace's source port, no answer expected.

use crate::trace::watch::wall_us;
use anyhow::{anyhow, Context, Result};
use gossip::trace::{Direction, Signature, ICMP, TCP};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use vswitch::wire::{flow, icmp, FlowRepr};
use weft_api::trace::LiveTrace;

/// How long an answer is awaited.
pub const ANSWER_WAIT: Duration = Duration::from_millis(1000);

/// What the prober saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// When the probe left, Unix microseconds.
    pub sent_at_us: u64,
    /// How long the answer took, when one came.
    pub rtt_us: Option<u64>,
    /// What to say about it.
    pub note: Option<String>,
}

/// The signature the daemon armed for, from its answer.
pub fn signature(l: &LiveTrace) -> Result<Signature> {
    let proto = gossip::trace::protocol(&l.proto)
        .ok_or_else(|| anyhow!("unknown probe protocol {}", l.proto))?;
    Ok(Signature {
        src: l.src.parse().context("the probe's source")?,
        dst: l.dst.parse().context("the probe's destination")?,
        proto,
        key: l.key,
        port: l.port,
    })
}

/// Sends the probe of `live` from its namespace and waits for the answer.
pub fn send(live: &LiveTrace) -> Result<Sent> {
    let sig = signature(live)?;
    let ns = std::fs::File::open(&live.netns)
        .with_context(|| format!("opening the source pod's namespace {}", live.netns))?;
    let t = std::thread::Builder::new()
        .name("weft-probe".into())
        .spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the source pod's namespace")?;
            match sig.proto {
                ICMP => icmp_probe(&sig),
                TCP => tcp_probe(&sig),
                _ => udp_probe(&sig),
            }
        })
        .context("starting the probe thread")?;
    t.join().map_err(|_| anyhow!("the probe thread panicked"))?
}

/// The ICMP echo probe, ICMPv6 over IPv6. The socket is connected to the destination, so only
/// its packets arrive. A raw ICMPv4 socket receives each packet with its IP header (the reply is
/// told by its flow and echo id); a raw ICMPv6 socket receives the message alone, checksummed by
/// the kernel on the way out (the reply is told by its type and identifier).
fn icmp_probe(sig: &Signature) -> Result<Sent> {
    let v6 = sig.dst.is_ipv6();
    let (domain, protocol) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let s = Socket::new(domain, Type::RAW, Some(protocol)).context("opening a raw ICMP socket")?;
    s.connect(&SockAddr::from(SocketAddr::new(sig.dst, 0)))
        .context("connecting the raw ICMP socket")?;
    let mut buf = [0u8; 64];
    let request = if v6 {
        icmp::echo_request_v6
    } else {
        icmp::echo_request
    };
    let len = request(sig.key, 1, b"weft trace --live", &mut buf)
        .map_err(|e| anyhow!("building the echo request: {e}"))?;
    let is_reply = |got: &[u8]| {
        if v6 {
            icmp::echo_reply_v6_id(got) == Some(sig.key)
        } else {
            FlowRepr::parse(got)
                .is_ok_and(|f| sig.matches(&f, flow::echo_id(got)) == Some(Direction::Reply))
        }
    };
    let sent_at_us = wall_us();
    let start = Instant::now();
    s.send(&buf[..len]).context("sending the echo request")?;
    let mut rx = [0u8; 2048];
    while let Some(left) = ANSWER_WAIT.checked_sub(start.elapsed()) {
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let Ok(n) = (&s).read(&mut rx) else {
            break;
        };
        if is_reply(&rx[..n]) {
            return Ok(Sent {
                sent_at_us,
                rtt_us: Some(start.elapsed().as_micros() as u64),
                note: None,
            });
        }
    }
    Ok(Sent {
        sent_at_us,
        rtt_us: None,
        note: Some(format!("no echo reply within {ANSWER_WAIT:?}")),
    })
}

fn tcp_probe(sig: &Signature) -> Result<Sent> {
    let domain = if sig.src.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SocketAddr::new(sig.src, sig.key).into())
        .with_context(|| format!("binding the probe to {}:{}", sig.src, sig.key))?;
    let to = SocketAddr::new(sig.dst, sig.port.unwrap_or(0));
    let sent_at_us = wall_us();
    let start = Instant::now();
    let r = s.connect_timeout(&to.into(), ANSWER_WAIT);
    let rtt = start.elapsed().as_micros() as u64;
    let (rtt_us, note) = match r {
        Ok(()) => (Some(rtt), Some("SYN-ACK: the port is open".to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (Some(rtt), Some("RST: nothing listens on the port".into()))
        }
        Err(e) => (None, Some(format!("no answer: {e}"))),
    };
    Ok(Sent {
        sent_at_us,
        rtt_us,
        note,
    })
}

fn udp_probe(sig: &Signature) -> Result<Sent> {
    let s = std::net::UdpSocket::bind(SocketAddr::new(sig.src, sig.key))
        .with_context(|| format!("binding the probe to {}:{}", sig.src, sig.key))?;
    let sent_at_us = wall_us();
    s.send_to(b"weft trace --live", (sig.dst, sig.port.unwrap_or(0)))
        .context("sending the UDP probe")?;
    Ok(Sent {
        sent_at_us,
        rtt_us: None,
        note: Some("UDP: no answer is expected".into()),
    })
}
