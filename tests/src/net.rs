//! Helpers of the suite's network tests: a one-shot TCP server and client inside namespaces
//! (what address a server sees tells whether traffic was translated), and a relay check around
//! an underlay link cut in the lab.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use weft_lab::testbed::{ping, tcp_transfer_between, Cluster};
use weft_lab::{in_netns, poll_until, Host};

/// Accepts one TCP connection on `bind` inside `ns` (within `timeout`), writes `reply` to it and
/// returns the peer's address as the server saw it.
pub fn serve_once(
    ns: &str,
    bind: SocketAddr,
    reply: &'static [u8],
    timeout: Duration,
) -> std::thread::JoinHandle<SocketAddr> {
    let ns = ns.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        in_netns(&ns, move || {
            let l = TcpListener::bind(bind).unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            let deadline = Instant::now() + timeout;
            loop {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        s.set_nonblocking(false).unwrap();
                        s.write_all(reply).unwrap();
                        return peer;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < deadline, "no connection to {bind}");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept on {bind}: {e}"),
                }
            }
        })
        .unwrap()
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("server listening");
    h
}

/// Connects to `to` from `ns` (retrying for up to 10 s) and reads what the server says.
pub fn fetch(ns: &str, to: SocketAddr) -> String {
    in_netns(ns, move || {
        let s = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
            TcpStream::connect_timeout(&to, Duration::from_secs(1)).ok()
        });
        let mut s = s.unwrap_or_else(|| panic!("cannot connect to {to}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .unwrap()
}

/// Cuts the underlay between h1 and h3, waits until each sees the other through h2, and checks
/// that pod `from` reaches pod `to` at each of `targets` (ping) and over the last one (a
/// checksummed transfer), h2 relaying.
pub fn relayed_around_a_cut(
    c: &Cluster,
    hosts: &[Host],
    (from, to): (&str, &str),
    targets: &[IpAddr],
) {
    let (a, b) = (
        hosts[0].underlay_ip6.unwrap(),
        hosts[2].underlay_ip6.unwrap(),
    );
    let ul = c.lab.underlay_ns().to_string();
    c.lab
        .nft(
            &ul,
            &format!(
                "table bridge weftblock {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    ip6 saddr {a} ip6 daddr {b} drop\n    ip6 saddr {b} ip6 daddr {a} drop\n  }}\n}}\n"
            ),
        )
        .unwrap();
    c.wait_path(&hosts[0], "h3", "via h2", Duration::from_secs(20))
        .unwrap();
    c.wait_path(&hosts[2], "h1", "via h2", Duration::from_secs(20))
        .unwrap();
    let relayed = c.status(&hosts[1]).unwrap().counters["relayed_datagrams"];
    for to in targets {
        assert!(
            poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
                ping(&c.lab, from, *to, 1).ok().filter(|p| p.received == 1)
            })
            .is_some(),
            "no relayed ping to {to}"
        );
    }
    let t = tcp_transfer_between(
        from,
        to,
        *targets.last().unwrap(),
        4 << 20,
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(t.intact(), "{t:?}");
    let after = c.status(&hosts[1]).unwrap().counters["relayed_datagrams"];
    assert!(
        after > relayed + 100,
        "h2 relayed {} datagrams",
        after - relayed
    );
}

/// Turns on UDP segmentation offload for `sock` (`UDP_SEGMENT`): each send of more than
/// `size` bytes leaves as datagrams of `size` bytes (the last shorter), handed to the network
/// as one super-frame, as QUIC stacks and other bulk UDP senders do.
pub fn set_udp_segment(sock: &std::net::UdpSocket, size: u16) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::from(size);
    // SAFETY: `v` is a live c_int and its size is passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
