//! Encrypted clusters end to end: what the underlay sees, peers without the secret, replayed
//! and tampered datagrams and rekeying under load (each with both AEADs), and the AEAD each
//! pair negotiates (`--cipher`).
//!
//! Needs root (network namespaces), tcpdump, and the `weft` binary (`scripts/test.sh`).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;
use weft_api::status::Report;
use weft_lab::testbed::{auto_cipher, ping, tcp_transfer_paced, weft_bin, Cluster};
use weft_lab::{in_netns, poll_until, Host, Pod, Signal};

const SECRET: &str = "the weft test secret, long enough\n";

fn cluster(tag: &str) -> Cluster {
    assert!(
        weft_lab::require_root(),
        "these tests need root and iproute2"
    );
    Cluster::new(tag, weft_bin().unwrap()).unwrap()
}

fn secret_file(c: &Cluster, name: &str, content: &str) -> String {
    let p: PathBuf = c.lab.dir().join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

/// Both AEADs, as `--cipher` names them.
const CIPHERS: [&str; 2] = ["chacha20-poly1305", "aes-256-gcm"];

/// Two hosts with the same router arguments and one pod each.
fn pair_in(c: &mut Cluster, args: &[&str]) -> (Vec<Host>, Vec<Pod>) {
    let hs = c.full_mesh(2, &[args, args]).unwrap();
    let pods = vec![
        c.add_pod(&hs[0], "p1", Ipv4Addr::new(10, 32, 1, 1))
            .unwrap(),
        c.add_pod(&hs[1], "p1", Ipv4Addr::new(10, 32, 2, 1))
            .unwrap(),
    ];
    (hs, pods)
}

/// UDP payloads of the datagrams in a pcap file (Ethernet, IPv4).
fn udp_payloads(pcap: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let incl = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let Some(frame) = pcap.get(at + 16..at + 16 + incl) else {
            break;
        };
        at += 16 + incl;
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 17 {
            continue;
        }
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        if let Some(p) = frame.get(14 + ihl + 8..) {
            out.push(p.to_vec());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Captures the underlay (the switch's port towards h1) while pod 1 pings pod 2 with a
/// recognisable payload; returns the captured UDP payloads.
fn capture_pings(c: &mut Cluster, pods: &[Pod], name: &str) -> Vec<Vec<u8>> {
    let file = c.lab.dir().join(format!("{name}.pcap"));
    let ul = c.lab.underlay_ns().to_string();
    let args: Vec<String> = ["-i", "h1", "-U", "-w", &file.display().to_string(), "udp"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let dump = c
        .lab
        .spawn(&ul, std::path::Path::new("/usr/bin/tcpdump"), &args, name)
        .unwrap();
    // tcpdump is ready once it created the file.
    poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
        file.exists().then_some(())
    })
    .expect("tcpdump started");
    std::thread::sleep(Duration::from_millis(300));
    // "WEFTSECRETPAYLD!" as a 16-byte ping pattern.
    let out = c
        .lab
        .exec(
            &pods[0].ns,
            &[
                "ping",
                "-n",
                "-q",
                "-c",
                "5",
                "-i",
                "0.2",
                "-s",
                "1000",
                "-p",
                "5745465453454352455450415959494c",
                &pods[1].ip.to_string(),
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::thread::sleep(Duration::from_millis(300));
    c.lab.kill(dump, Signal::SIGTERM).unwrap();
    c.lab.wait_exit(dump, Duration::from_secs(5)).unwrap();
    udp_payloads(&std::fs::read(&file).unwrap())
}

const PATTERN: &[u8] = b"WEFTSECRETPAYYIL";
/// The inner IPv4 source and destination of pod 1 -> pod 2, as they sit in an IP header.
const ADDRS: [u8; 8] = [10, 32, 1, 1, 10, 32, 2, 1];

#[test]
fn the_underlay_sees_neither_payload_nor_pod_addresses() {
    // Without a secret the capture shows both: the check below can fail.
    let mut c = cluster("wep");
    let (_, pods) = pair_in(&mut c, &[]);
    let plain = capture_pings(&mut c, &pods, "plain");
    assert!(
        plain.iter().any(|p| contains(p, PATTERN)),
        "no plaintext payload seen"
    );
    assert!(plain.iter().any(|p| contains(p, &ADDRS)));
    drop(c);

    let mut c = cluster("wee");
    let s = secret_file(&c, "secret", SECRET);
    let (hs, pods) = pair_in(&mut c, &["--secret-file", &s]);
    let r = c.status(&hs[0]).unwrap();
    assert!(r.encrypted);
    assert_eq!(r.peers[0].encryption, auto_cipher());
    assert_eq!(
        r.pod_mtu, 1411,
        "the pod MTU accounts for the encryption overhead"
    );
    assert!(ping(&c.lab, &pods[0].ns, pods[1].ip, 1).unwrap().received == 1);
    let sealed = capture_pings(&mut c, &pods, "sealed");
    assert!(sealed.len() >= 10, "captured {} datagrams", sealed.len());
    for p in &sealed {
        assert!(!contains(p, PATTERN), "payload in clear on the underlay");
        assert!(
            !contains(p, &ADDRS),
            "pod addresses in clear on the underlay"
        );
    }
    // And the data still flows intact.
    let t = tcp_transfer_paced(
        &pods[0],
        &pods[1],
        32 << 20,
        Duration::ZERO,
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(t.intact());
}

fn target_error(r: &Report) -> Option<String> {
    r.targets.iter().find_map(|t| match &t.state {
        weft_api::status::TargetState::Retrying { last_error, .. } => Some(last_error.clone()),
        weft_api::status::TargetState::Failed { reason } => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn peers_with_another_secret_or_none_are_refused_and_reported() {
    let mut c = cluster("wer");
    let good = secret_file(&c, "good", SECRET);
    let bad = secret_file(&c, "bad", "some other secret, also long\n");
    let h1 = c.add_host("h1").unwrap();
    let h2 = c.add_host("h2").unwrap();
    let h3 = c.add_host("h3").unwrap();
    c.start_router(&h1, &[], &["--secret-file", &good]).unwrap();
    c.start_router(&h2, &[&h1], &["--secret-file", &bad])
        .unwrap();
    c.start_router(&h3, &[&h1], &[]).unwrap();
    for (h, want) in [(&h2, "authentication failed"), (&h3, "encryption mismatch")] {
        let err = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
            target_error(&c.status(h).ok()?)
        })
        .unwrap_or_else(|| panic!("{} reports no failure", h.name));
        assert!(err.contains(want), "{}: {err}", h.name);
    }
    // The refusing side shows both, with the reason.
    let r = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let r = c.status(&h1).ok()?;
        (r.refused.len() == 2).then_some(r)
    })
    .expect("h1 lists both refused peers");
    assert!(
        r.refused
            .iter()
            .any(|x| x.reason.contains("authentication failed")),
        "{:?}",
        r.refused
    );
    assert!(
        r.refused
            .iter()
            .any(|x| x.reason.contains("encryption mismatch")),
        "{:?}",
        r.refused
    );
    assert!(r.peers.is_empty(), "nobody got in");
    // Several attempts later, each failure was logged once, not once per attempt.
    poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let r = c.status(&h2).ok()?;
        (r.targets[0].failures >= 3).then_some(())
    })
    .expect("h2 keeps retrying");
    let log = c.router_log(&h2);
    assert_eq!(log.matches("authentication failed").count(), 1, "{log}");
}

fn drops(c: &Cluster, h: &Host, reason: &str) -> u64 {
    c.status(h).unwrap().drops[reason]
}

#[test]
fn replayed_and_tampered_datagrams_are_dropped_and_counted() {
    for (tag, cipher) in ["wet", "wea"].into_iter().zip(CIPHERS) {
        replayed_and_tampered_with(tag, cipher);
    }
}

fn replayed_and_tampered_with(tag: &str, cipher: &str) {
    let mut c = cluster(tag);
    let s = secret_file(&c, "secret", SECRET);
    let args: &[&str] = &["--secret-file", &s, "--cipher", cipher];
    let (hs, pods) = pair_in(&mut c, args);
    let (h1, h2) = (&hs[0], &hs[1]);
    assert_eq!(c.status(h1).unwrap().peers[0].encryption, cipher);
    assert!(ping(&c.lab, &pods[0].ns, pods[1].ip, 1).unwrap().received == 1);
    let captured = capture_pings(&mut c, &pods, "replay");
    // A frames datagram h1 sealed (kind 1, flags 1, from h1's port 6783 — all captured ones are
    // ours; pick one of the echo requests, which are big).
    let sealed = captured
        .into_iter()
        .find(|p| p.len() > 1000 && p[1] == 1 && p[3] == 1)
        .expect("an encrypted frames datagram");
    let target = SocketAddr::from((h2.underlay_ip, 6783));
    let (replayed0, forged0) = (
        drops(&c, h2, "crypto_replayed"),
        drops(&c, h2, "crypto_auth_failed"),
    );
    let mut flipped = sealed.clone();
    let last = flipped.len() - 20;
    flipped[last] ^= 0x04;
    let src = h1.underlay_ip;
    in_netns(&h1.ns, move || {
        let sock = UdpSocket::bind((src, 0)).unwrap();
        for _ in 0..3 {
            sock.send_to(&sealed, target).unwrap();
        }
        sock.send_to(&flipped, target).unwrap();
    })
    .unwrap();
    let ok = poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let r = drops(&c, h2, "crypto_replayed");
        let f = drops(&c, h2, "crypto_auth_failed");
        (r >= replayed0 + 3 && f > forged0).then_some(())
    });
    assert!(ok.is_some(), "drops: {:?}", c.status(h2).unwrap().drops);
    // Traffic goes on.
    assert_eq!(
        ping(&c.lab, &pods[0].ns, pods[1].ip, 3).unwrap().received,
        3
    );
}

#[test]
fn a_transfer_across_several_rekeys_arrives_intact() {
    for (tag, cipher) in ["wek", "wef"].into_iter().zip(CIPHERS) {
        rekeys_with(tag, cipher);
    }
}

fn rekeys_with(tag: &str, cipher: &str) {
    let mut c = cluster(tag);
    let s = secret_file(&c, "secret", SECRET);
    let args: &[&str] = &[
        "--secret-file",
        &s,
        "--rekey-after",
        "1",
        "--cipher",
        cipher,
    ];
    let (hs, pods) = pair_in(&mut c, args);
    let (h1, h2) = (&hs[0], &hs[1]);
    let (p1, p2) = (&pods[0], &pods[1]);
    let t = tcp_transfer_paced(
        p1,
        p2,
        64 << 20,
        Duration::from_secs(6),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(t.intact(), "{t:?}");
    let r1 = c.status(h1).unwrap();
    let r2 = c.status(h2).unwrap();
    assert!(r2.peers[0].rekeys >= 3, "{:?}", r2.peers[0]);
    assert!(r1.peers[0].rekeys >= 3, "{:?}", r1.peers[0]);
    // Rekeys keep the pair's AEAD.
    assert_eq!(r1.peers[0].encryption, cipher);
    assert_eq!(r2.peers[0].encryption, cipher);
    let lost: u64 = ["crypto_unknown_key", "crypto_auth_failed", "crypto_too_old"]
        .iter()
        .map(|k| r1.drops[*k] + r2.drops[*k])
        .sum();
    assert_eq!(
        lost, 0,
        "datagrams lost to rekeying: {:?} {:?}",
        r1.drops, r2.drops
    );
}

#[test]
fn trusted_subnets_carry_data_in_clear_but_keep_the_control_channel_authenticated() {
    let mut c = cluster("weu");
    let s = secret_file(&c, "secret", SECRET);
    let args: &[&str] = &["--secret-file", &s, "--trusted-subnets", "10.200.0.0/24"];
    let (hs, pods) = pair_in(&mut c, args);
    let h1 = &hs[0];
    let r = c.status(h1).unwrap();
    assert!(r.encrypted);
    assert_eq!(r.peers[0].encryption, "trusted");
    let seen = capture_pings(&mut c, &pods, "trusted");
    assert!(
        seen.iter().any(|p| contains(p, PATTERN)),
        "trusted data goes in clear"
    );
    // A host on the trusted network without the secret still cannot join.
    let h3 = c.add_host("h3").unwrap();
    c.start_router(&h3, &[h1], &["--trusted-subnets", "10.200.0.0/24"])
        .unwrap();
    let err = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        target_error(&c.status(&h3).ok()?)
    })
    .expect("h3 is refused");
    assert!(err.contains("encryption mismatch"), "{err}");
}

#[test]
fn a_64_mib_transfer_crosses_encrypted_as_super_frames_intact() {
    let mut c = cluster("wegso");
    let s = secret_file(&c, "secret", SECRET);
    let args: &[&str] = &["--secret-file", &s];
    let (hs, pods) = pair_in(&mut c, args);
    let t = weft_lab::testbed::tcp_transfer(&pods[0], &pods[1], 64 << 20, Duration::from_secs(60))
        .unwrap();
    assert!(t.intact(), "{t:?}");
    let r1 = c.status(&hs[0]).unwrap();
    let r2 = c.status(&hs[1]).unwrap();
    // Super-frames were read and cut on the sender, sealed per datagram and sent several per
    // system call; the receiver opened every one and joined segments again.
    assert!(r1.counters["tap_rx_gso_frames"] > 0, "{:?}", r1.counters);
    assert!(r1.counters["udp_tx_gso_sends"] > 0, "{:?}", r1.counters);
    assert!(r2.counters["tap_tx_gso_frames"] > 0, "{:?}", r2.counters);
    // Segments crossed with partial TCP checksums (the AEAD tag covers them), and the
    // transfer is intact all the same.
    assert!(
        r1.counters["tx_csum_partial_segments"] > 0,
        "{:?}",
        r1.counters
    );
    let bad: u64 = [
        "crypto_malformed",
        "crypto_auth_failed",
        "crypto_replayed",
        "offload_error",
    ]
    .iter()
    .map(|k| r1.drops[*k] + r2.drops[*k])
    .sum();
    assert_eq!(bad, 0, "{:?} {:?}", r1.drops, r2.drops);
    eprintln!("64 MiB encrypted: {:.2} Gbit/s", t.gbits());
}

/// Two encrypted routers started at the same moment dial each other at once; one end may see the
/// winning connection replace its own while the other never had a second one. Both must use the
/// winner's data keys (a regression: the replacing end kept the loser's session and the data
/// path stayed down, seen once in two bench starts). Repeated, since the race is timing-bound:
/// the build before the fix failed about one round in fifteen.
#[test]
fn encrypted_routers_started_together_agree_on_their_data_keys() {
    for round in 0..10 {
        let mut c = cluster("wes");
        let s = secret_file(&c, "secret", SECRET);
        let hs = vec![c.add_host("h1").unwrap(), c.add_host("h2").unwrap()];
        c.start_routers_together(&hs, &["--secret-file", &s])
            .unwrap();
        let p1 = c
            .add_pod(&hs[0], "p1", Ipv4Addr::new(10, 32, 1, 1))
            .unwrap();
        c.add_pod(&hs[1], "p1", Ipv4Addr::new(10, 32, 2, 1))
            .unwrap();
        assert!(
            weft_lab::testbed::wait_ping(
                &c.lab,
                &p1,
                Ipv4Addr::new(10, 32, 2, 1),
                Duration::from_secs(15)
            ),
            "round {round}: no ping across an encrypted pair started together\nh1:\n{}\nh2:\n{}",
            c.router_log(&hs[0]),
            c.router_log(&hs[1])
        );
    }
}

/// Each pair of routers negotiates its AEAD: two on `auto` (one of them pinned to AES-256-GCM
/// in the second cluster) seal with AES-256-GCM where the CPU has AES instructions; a router
/// pinned to ChaCha20-Poly1305 and one on `auto` agree on ChaCha20-Poly1305; both report it and
/// traffic passes. Two pins that cannot meet are refused, with both named.
#[test]
fn each_pair_negotiates_its_cipher() {
    let want_auto = auto_cipher();
    let pin = |a: &'static str| -> Vec<&'static str> { vec!["--cipher", a] };
    for (tag, a1, a2, want) in [
        ("wca", vec![], vec![], want_auto),
        ("wcp", pin("aes-256-gcm"), vec![], "aes-256-gcm"),
        ("wcc", pin("chacha20-poly1305"), vec![], "chacha20-poly1305"),
    ] {
        let mut c = cluster(tag);
        let s = secret_file(&c, "secret", SECRET);
        let args1: Vec<&str> = ["--secret-file", s.as_str()]
            .into_iter()
            .chain(a1)
            .collect();
        let args2: Vec<&str> = ["--secret-file", s.as_str()]
            .into_iter()
            .chain(a2)
            .collect();
        let hs = c.full_mesh(2, &[&args1, &args2]).unwrap();
        let p1 = c
            .add_pod(&hs[0], "p1", Ipv4Addr::new(10, 32, 1, 1))
            .unwrap();
        let p2 = c
            .add_pod(&hs[1], "p1", Ipv4Addr::new(10, 32, 2, 1))
            .unwrap();
        for h in &hs {
            let r = c.status(h).unwrap();
            assert_eq!(r.peers[0].encryption, want, "{tag} on {}", h.name);
        }
        assert_eq!(ping(&c.lab, &p1.ns, p2.ip, 3).unwrap().received, 3, "{tag}");
        let t =
            tcp_transfer_paced(&p1, &p2, 8 << 20, Duration::ZERO, Duration::from_secs(30)).unwrap();
        assert!(t.intact(), "{tag}: {t:?}");
    }

    let mut c = cluster("wcx");
    let s = secret_file(&c, "secret", SECRET);
    let h1 = c.add_host("h1").unwrap();
    let h2 = c.add_host("h2").unwrap();
    c.start_router(&h1, &[], &["--secret-file", &s, "--cipher", "aes-256-gcm"])
        .unwrap();
    c.start_router(
        &h2,
        &[&h1],
        &["--secret-file", &s, "--cipher", "chacha20-poly1305"],
    )
    .unwrap();
    let err = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        target_error(&c.status(&h2).ok()?)
    })
    .expect("h2 reports why it cannot connect");
    assert!(err.contains("no cipher in common"), "{err}");
    assert!(
        err.contains("aes-256-gcm") && err.contains("chacha20-poly1305"),
        "{err}"
    );
    assert!(c.status(&h1).unwrap().peers.is_empty());
}
