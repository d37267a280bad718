//! The servers every pod (and every outside address) runs, as threads of the test process: one
//! dedicated OS thread per server enters the namespace, binds every socket there and serves them
//! all with `poll(2)` until the [`Server`] is dropped.
//!
//! * TCP (and SCTP, when the kernel has it) on [`PORTS`]: accept, write `<token> <peer address>`
//!   and a newline, close. The token names the endpoint (`x/a`), so a probe knows it reached the
//!   right one; the peer address tells the test what source address the server saw.
//! * UDP on [`PORTS`]: each datagram is answered with the same line.
//! * TCP [`ECHO_PORT`]: a long-lived echo, for the connections that must survive a policy change
//!   or a router restart; each connection gets its own thread (which inherits the namespace).

use super::sock;
use anyhow::{anyhow, Context, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;
use weft_lab::in_netns;

/// The ports the servers answer on, for TCP, UDP and SCTP.
pub const PORTS: [u16; 2] = [80, 81];
/// The TCP echo port.
pub const ECHO_PORT: u16 = 8080;
/// How often a server's loop looks at its stop flag.
const TICK: Duration = Duration::from_millis(100);

/// A running server; dropping it stops it (within [`TICK`]) and joins its threads.
#[derive(Debug)]
pub struct Server {
    token: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts the servers of `token` in namespace `ns`, bound to `bind` (`0.0.0.0` for a pod),
    /// with SCTP listeners too when `sctp`; returns once every socket is bound.
    pub fn start(ns: &str, token: &str, bind: Ipv4Addr, sctp: bool) -> Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        let (ns2, token2, stop2) = (ns.to_owned(), token.to_owned(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("serve-{token}"))
            .spawn(move || {
                let r = in_netns(&ns2, move || match Sockets::bind(bind, sctp) {
                    Ok(s) => {
                        let _ = tx.send(Ok(()));
                        s.serve(&token2, &stop2);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:#}")));
                    }
                });
                if let Err(e) = r {
                    eprintln!("server {ns2}: {e:#}");
                }
            })
            .context("spawning a server thread")?;
        let server = Server {
            token: token.to_owned(),
            stop,
            thread: Some(thread),
        };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(server),
            Ok(Err(e)) => Err(anyhow!("server {token} in {ns}: {e}")),
            Err(_) => Err(anyhow!("server {token} in {ns} did not start")),
        }
    }

    /// The token it answers with.
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a stream listener does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Token,
    Echo,
}

#[derive(Debug)]
struct Sockets {
    streams: Vec<(TcpListener, Mode)>,
    udp: Vec<UdpSocket>,
}

impl Sockets {
    fn bind(ip: Ipv4Addr, sctp: bool) -> Result<Sockets> {
        let mut streams = Vec::new();
        let mut udp = Vec::new();
        for port in PORTS {
            let addr = SocketAddrV4::new(ip, port);
            streams.push((
                sock::listen(sock::TCP, addr).with_context(|| format!("TCP {addr}"))?,
                Mode::Token,
            ));
            if sctp {
                streams.push((
                    sock::listen(sock::SCTP, addr).with_context(|| format!("SCTP {addr}"))?,
                    Mode::Token,
                ));
            }
            udp.push(UdpSocket::bind(addr).with_context(|| format!("UDP {addr}"))?);
        }
        let echo = SocketAddrV4::new(ip, ECHO_PORT);
        streams.push((
            sock::listen(sock::TCP, echo).with_context(|| format!("TCP {echo}"))?,
            Mode::Echo,
        ));
        for (l, _) in &streams {
            l.set_nonblocking(true)?;
        }
        for u in &udp {
            u.set_nonblocking(true)?;
        }
        Ok(Sockets { streams, udp })
    }

    fn serve(self, token: &str, stop: &Arc<AtomicBool>) {
        let mut echoes: Vec<JoinHandle<()>> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let fds: Vec<_> = self
                .streams
                .iter()
                .map(|(l, _)| (l.as_fd(), libc::POLLIN))
                .chain(self.udp.iter().map(|u| (u.as_fd(), libc::POLLIN)))
                .collect();
            let ready = match sock::poll(&fds, TICK) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("server {token}: poll: {e}");
                    return;
                }
            };
            for (i, (l, mode)) in self.streams.iter().enumerate() {
                if !ready[i] {
                    continue;
                }
                while let Ok((s, peer)) = l.accept() {
                    match mode {
                        Mode::Token => answer(s, &format!("{token} {}\n", peer.ip())),
                        Mode::Echo => {
                            let stop = stop.clone();
                            echoes.push(std::thread::spawn(move || echo(s, &stop)));
                        }
                    }
                }
            }
            for (i, u) in self.udp.iter().enumerate() {
                if !ready[self.streams.len() + i] {
                    continue;
                }
                let mut buf = [0u8; 512];
                while let Ok((_, peer)) = u.recv_from(&mut buf) {
                    let _ = u.send_to(format!("{token} {}\n", peer.ip()).as_bytes(), peer);
                }
            }
            echoes.retain(|t| !t.is_finished());
        }
        for t in echoes {
            let _ = t.join();
        }
    }
}

/// Writes `line` to a freshly accepted connection and closes it.
fn answer(mut s: TcpStream, line: &str) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    let _ = s.write_all(line.as_bytes());
    let _ = s.shutdown(std::net::Shutdown::Write);
}

/// Echoes what `s` sends until it closes, an error, or `stop`.
fn echo(mut s: TcpStream, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(TICK));
    let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}
