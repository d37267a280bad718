//! The netfilter log reader (`weft_netlink::nflog`) against the kernel: a packet an nftables
//! rule logs to a group reaches a listener bound in the same network namespace, with the rule's
//! prefix and the packet's headers, from which `vswitch::wire::FlowRepr` reads the flow (what
//! the router shows as a NetworkPolicy denial). Needs root; runs in a namespace of its own.

use std::net::UdpSocket;
use std::time::Duration;
use vswitch::wire::FlowRepr;
use weft_lab::{in_netns, Lab};
use weft_netlink::nflog::NflogListener;

#[test]
fn a_logged_packet_reaches_the_listener_with_its_prefix_and_flow() {
    assert!(weft_lab::require_root(), "this test needs root");
    let mut lab = Lab::new("nflog").unwrap();
    let ns = lab.add_netns("h").unwrap();
    lab.exec_ok(&ns, &["ip", "link", "set", "lo", "up"])
        .unwrap();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let (got_tx, got_rx) = std::sync::mpsc::channel();
    let ns2 = ns.clone();
    // The listener's thread blocks in recv; it ends with the process if nothing comes.
    std::thread::spawn(move || {
        in_netns(&ns2, move || {
            let mut l = NflogListener::bind(8).expect("binding the log group");
            bound_tx.send(()).unwrap();
            loop {
                let batch = l.recv().expect("reading the log");
                if let Some(p) = batch.into_iter().next() {
                    got_tx.send(p).unwrap();
                    return;
                }
            }
        })
        .unwrap();
    });
    bound_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    lab.nft(
        &ns,
        "table inet weft_nflog_test {\n chain out {\n  type filter hook output priority 0; policy accept;\n  udp dport 4242 log group 8 prefix \"weft-policy ingress-deny: \"\n }\n}\n",
    )
    .unwrap();
    in_netns(&ns, || {
        let s = UdpSocket::bind("127.0.0.1:4141").unwrap();
        s.send_to(b"hello", "127.0.0.1:4242").unwrap();
    })
    .unwrap();
    let p = got_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no logged packet within 10 s");
    assert_eq!(p.prefix, "weft-policy ingress-deny: ");
    let flow = FlowRepr::parse(&p.payload).unwrap();
    assert_eq!(flow.to_string(), "udp 127.0.0.1:4141 -> 127.0.0.1:4242");
}
