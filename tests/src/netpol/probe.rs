//! The prober: one connection attempt per (source, destination, [`Kind`]), all in parallel. For
//! each source namespace one dedicated OS thread enters it (`weft_lab::in_netns`) and starts one
//! thread per probe from there (new threads start in their creator's namespace), so every socket
//! is made in the source's namespace and no thread ever leaves the one it entered.
//!
//! A probe succeeds only when the destination answers with its own token (see [`super::serve`]):
//! TCP and SCTP connect within [`TIMEOUT`] and read the line; UDP sends a datagram up to
//! [`UDP_TRIES`] times within [`TIMEOUT`] and waits for the answer.

use super::sock;
use super::truth::{Kind, Protocol};
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};
use weft_lab::in_netns;

/// How long one probe may take.
pub const TIMEOUT: Duration = Duration::from_millis(400);
/// Datagrams one UDP probe sends at most.
pub const UDP_TRIES: u32 = 3;

/// How a probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The right endpoint answered; it saw the connection come from this address.
    Reached(Ipv4Addr),
    /// No answer: refused, unreachable, or timed out (the reason, for messages).
    Denied(String),
    /// Something answered, but not what the destination should have said (or a connection was
    /// accepted and then nothing came): never what a test expects.
    Wrong(String),
}

impl Outcome {
    /// Whether the probe got through to the right endpoint.
    pub fn reached(&self) -> bool {
        matches!(self, Outcome::Reached(_))
    }
}

/// One probe to run from some source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Protocol and port.
    pub kind: Kind,
    /// The destination's address.
    pub ip: Ipv4Addr,
    /// The token the destination answers with.
    pub token: String,
}

/// Parses a server's line `<token> <address>`: the address if the token is `token`.
fn check_answer(line: &str, token: &str) -> Outcome {
    let mut w = line.split_whitespace();
    match (w.next(), w.next().and_then(|a| a.parse().ok())) {
        (Some(t), Some(ip)) if t == token => Outcome::Reached(ip),
        _ => Outcome::Wrong(format!("answered {line:?} instead of {token:?}")),
    }
}

/// Runs one probe on the calling thread (so from the calling thread's namespace).
pub fn probe(p: &Probe, timeout: Duration) -> Outcome {
    let to = SocketAddrV4::new(p.ip, p.kind.port);
    match p.kind.protocol {
        Protocol::Tcp => probe_stream(sock::TCP, to, &p.token, timeout),
        Protocol::Sctp => probe_stream(sock::SCTP, to, &p.token, timeout),
        Protocol::Udp => probe_udp(to, &p.token, timeout),
    }
}

fn probe_stream(proto: libc::c_int, to: SocketAddrV4, token: &str, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let mut s = match sock::connect(proto, to, timeout) {
        Ok(s) => s,
        Err(e) => return Outcome::Denied(e.to_string()),
    };
    let left = timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(100));
    let _ = s.set_read_timeout(Some(left));
    let mut buf = Vec::new();
    match (&mut s).take(256).read_to_end(&mut buf) {
        Ok(_) => check_answer(&String::from_utf8_lossy(&buf), token),
        Err(e) => Outcome::Wrong(format!(
            "connected, then {e} after {:?} ({} bytes)",
            start.elapsed(),
            buf.len()
        )),
    }
}

fn probe_udp(to: SocketAddrV4, token: &str, timeout: Duration) -> Outcome {
    let s = match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).and_then(|s| {
        s.connect(to)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => return Outcome::Denied(e.to_string()),
    };
    let wait = timeout / UDP_TRIES;
    let mut last = String::from("no answer");
    for _ in 0..UDP_TRIES {
        if let Err(e) = s.send(b"probe") {
            last = e.to_string();
            std::thread::sleep(wait);
            continue;
        }
        let _ = s.set_read_timeout(Some(wait));
        let mut buf = [0u8; 512];
        match s.recv(&mut buf) {
            Ok(n) => return check_answer(&String::from_utf8_lossy(&buf[..n]), token),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                last = "no answer".into();
            }
            Err(e) => {
                // An ICMP error (port unreachable, administratively prohibited) arrives as an
                // error on the connected socket: an answer of sorts, so no point retrying at once.
                last = e.to_string();
                std::thread::sleep(wait);
            }
        }
    }
    Outcome::Denied(last)
}

/// Runs every probe of every source in parallel: `sources` are (namespace, probes); the result
/// has the same shape.
pub fn probe_all(sources: Vec<(String, Vec<Probe>)>, timeout: Duration) -> Vec<Vec<Outcome>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = sources
            .into_iter()
            .map(|(ns, probes)| {
                scope.spawn(move || {
                    let n = probes.len();
                    let err_ns = ns.clone();
                    in_netns(&ns, move || {
                        std::thread::scope(|inner| {
                            let hs: Vec<_> = probes
                                .iter()
                                .map(|p| inner.spawn(move || probe(p, timeout)))
                                .collect();
                            hs.into_iter()
                                .map(|h| {
                                    h.join().unwrap_or_else(|_| {
                                        Outcome::Wrong("the probe thread panicked".into())
                                    })
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .unwrap_or_else(|e| {
                        vec![Outcome::Wrong(format!("cannot enter {err_ns}: {e:#}")); n]
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a prober thread panicked"))
            .collect()
    })
}

/// One probe from namespace `ns` (on a dedicated thread that enters it).
pub fn probe_from(ns: &str, p: Probe, timeout: Duration) -> Outcome {
    probe_all(vec![(ns.to_owned(), vec![p])], timeout)
        .pop()
        .and_then(|mut v| v.pop())
        .unwrap_or_else(|| Outcome::Wrong("no outcome".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_token_counts() {
        let ip = Ipv4Addr::new(10, 32, 0, 2);
        assert_eq!(check_answer("x/a 10.32.0.2\n", "x/a"), Outcome::Reached(ip));
        assert!(matches!(
            check_answer("x/b 10.32.0.2\n", "x/a"),
            Outcome::Wrong(_)
        ));
        assert!(matches!(check_answer("x/a\n", "x/a"), Outcome::Wrong(_)));
        assert!(matches!(check_answer("", "x/a"), Outcome::Wrong(_)));
    }
}
