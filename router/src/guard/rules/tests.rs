//! The scripts, as literal text. Each was also loaded with nft 1.0.6 into a scratch namespace in
//! the order a router runs them (tests/tests/guard.rs runs them for real).

use super::*;

fn pod(n: u8) -> PortRules {
    PortRules::new(
        &format!("vw00000000{n:02}"),
        [0x02, 0x42, 0, 0, 0, n],
        &[Ipv4Addr::new(10, 32, 0, n)],
    )
}

const POD_2: &str = "\
add counter bridge weft_guard port_vw0000000002
add element bridge weft_guard drops { \"vw0000000002\" : \"port_vw0000000002\" }
add element bridge weft_guard port_mac { \"vw0000000002\" . 02:42:00:00:00:02 }
add element bridge weft_guard port_ip4 { \"vw0000000002\" . 10.32.0.2 }
add element bridge weft_guard port_ip6 { \"vw0000000002\" . fe80::42:ff:fe00:2 }
add element bridge weft_guard port_nd_target { \"vw0000000002\" . 0xfe80000000000000004200fffe000002 }
add element bridge weft_guard ports { \"vw0000000002\" }
";

const DECLARATIONS: &str = "\
table bridge weft_guard {
  counter reason_multicast_source {
  }
  counter reason_source_mac {
  }
  counter reason_ethertype {
  }
  counter reason_ipv4_source {
  }
  counter reason_dhcp_server {
  }
  counter reason_arp_format {
  }
  counter reason_arp_sender {
  }
  counter reason_ipv6_source {
  }
  counter reason_router_advert {
  }
  counter reason_nd_target {
  }
  counter reason_flood_limit {
  }
  set ports {
    type ifname
  }
  set port_mac {
    type ifname . ether_addr
  }
  set port_ip4 {
    type ifname . ipv4_addr
  }
  set port_ip6 {
    type ifname . ipv6_addr
  }
  set port_nd_target {
    typeof iifname . @th,64,128
  }
  map drops {
    type ifname : counter
  }
  set flood_rate {
    type ifname
    size 65536
    flags dynamic,timeout
    timeout 1m
  }
  chain prerouting {
    type filter hook prerouting priority filter; policy accept;
  }
  chain from_ip4 {
  }
  chain from_arp {
  }
  chain from_ip6 {
  }
  chain deny {
  }
}
";

const RULES: &str = "\
table bridge weft_guard {
  chain prerouting {
    iifname != @ports accept
    ether saddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 counter name \"reason_multicast_source\" goto deny
    iifname . ether saddr != @port_mac counter name \"reason_source_mac\" goto deny
    ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 update @flood_rate { iifname limit rate over 1000/second burst 2000 packets } counter name \"reason_flood_limit\" goto deny
    ether type vmap { ip : goto from_ip4, arp : goto from_arp, ip6 : goto from_ip6 }
    counter name \"reason_ethertype\" goto deny
  }
  chain from_ip4 {
    iifname . ip saddr != @port_ip4 counter name \"reason_ipv4_source\" goto deny
    udp sport 67 counter name \"reason_dhcp_server\" goto deny
  }
  chain from_arp {
    arp htype . arp ptype . arp hlen . arp plen != { 1 . ip . 6 . 4 } counter name \"reason_arp_format\" goto deny
    iifname . arp saddr ether != @port_mac counter name \"reason_arp_sender\" goto deny
    arp operation request arp saddr ip 0.0.0.0 accept
    iifname . arp saddr ip != @port_ip4 counter name \"reason_arp_sender\" goto deny
  }
  chain from_ip6 {
    ip6 saddr :: icmpv6 type nd-neighbor-solicit iifname . @th,64,128 @port_nd_target accept
    ip6 saddr :: icmpv6 type { mld-listener-report, mld2-listener-report } accept
    iifname . ip6 saddr != @port_ip6 counter name \"reason_ipv6_source\" goto deny
    icmpv6 type { nd-router-advert, nd-redirect } counter name \"reason_router_advert\" goto deny
    icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @port_nd_target counter name \"reason_nd_target\" goto deny
    udp sport 547 counter name \"reason_dhcp_server\" goto deny
  }
  chain deny {
    counter name iifname map @drops
    drop
  }
}
";

#[test]
fn the_whole_table_replaced() {
    let want = format!(
        "table bridge weft_guard\ndelete table bridge weft_guard\n{DECLARATIONS}{RULES}{POD_2}"
    );
    assert_eq!(replace_script(&[pod(2)], Some(FloodLimit::DEFAULT)), want);
}

#[test]
fn the_flood_limit_follows_the_flags() {
    assert_eq!(FloodLimit::from_flags(0, 2000), None);
    assert_eq!(
        FloodLimit::from_flags(1000, 2000),
        Some(FloodLimit::DEFAULT)
    );
    let small = FloodLimit::from_flags(50, 0).unwrap();
    assert_eq!((small.pps, small.burst), (50, 50));
    let script = replace_script(&[pod(2)], Some(small));
    assert!(script.contains(
        "update @flood_rate { iifname limit rate over 50/second burst 50 packets } \
         counter name \"reason_flood_limit\" goto deny\n"
    ));
    // Off: no rule, but the set and the counter stay declared (a later start may turn it on).
    let off = replace_script(&[pod(2)], None);
    assert!(!off.contains("update @flood_rate"));
    assert!(off.contains("set flood_rate {") && off.contains("counter reason_flood_limit {"));
    assert_eq!(
        off.lines().count() + 1,
        replace_script(&[pod(2)], Some(small)).lines().count()
    );
}

#[test]
fn a_pod_coming_adds_elements_only() {
    assert_eq!(add_script(&pod(2), None), POD_2);
}

#[test]
fn a_pod_going_deletes_its_elements_and_counter() {
    assert_eq!(
        remove_script(&pod(2)),
        "\
delete element bridge weft_guard ports { \"vw0000000002\" }
delete element bridge weft_guard port_mac { \"vw0000000002\" . 02:42:00:00:00:02 }
delete element bridge weft_guard port_ip4 { \"vw0000000002\" . 10.32.0.2 }
delete element bridge weft_guard port_ip6 { \"vw0000000002\" . fe80::42:ff:fe00:2 }
delete element bridge weft_guard port_nd_target { \"vw0000000002\" . 0xfe80000000000000004200fffe000002 }
add element bridge weft_guard flood_rate { \"vw0000000002\" }
delete element bridge weft_guard flood_rate { \"vw0000000002\" }
delete element bridge weft_guard drops { \"vw0000000002\" }
delete counter bridge weft_guard port_vw0000000002
"
    );
}

#[test]
fn a_new_pair_on_the_same_port_keeps_its_counter() {
    let mut again = pod(2);
    again.mac = [0x02, 0, 0, 0, 0, 0x22];
    again.ipv6 = vec![link_local(again.mac)];
    assert_eq!(
        add_script(&again, Some(&pod(2))),
        "\
delete element bridge weft_guard ports { \"vw0000000002\" }
delete element bridge weft_guard port_mac { \"vw0000000002\" . 02:42:00:00:00:02 }
delete element bridge weft_guard port_ip4 { \"vw0000000002\" . 10.32.0.2 }
delete element bridge weft_guard port_ip6 { \"vw0000000002\" . fe80::42:ff:fe00:2 }
delete element bridge weft_guard port_nd_target { \"vw0000000002\" . 0xfe80000000000000004200fffe000002 }
add element bridge weft_guard flood_rate { \"vw0000000002\" }
delete element bridge weft_guard flood_rate { \"vw0000000002\" }
delete element bridge weft_guard drops { \"vw0000000002\" }
add counter bridge weft_guard port_vw0000000002
add element bridge weft_guard drops { \"vw0000000002\" : \"port_vw0000000002\" }
add element bridge weft_guard port_mac { \"vw0000000002\" . 02:00:00:00:00:22 }
add element bridge weft_guard port_ip4 { \"vw0000000002\" . 10.32.0.2 }
add element bridge weft_guard port_ip6 { \"vw0000000002\" . fe80::ff:fe00:22 }
add element bridge weft_guard port_nd_target { \"vw0000000002\" . 0xfe80000000000000000000fffe000022 }
add element bridge weft_guard ports { \"vw0000000002\" }
"
    );
    // Another port for the attachment: the old counter goes.
    let mut moved = pod(2);
    moved.name = "vw0000000099".into();
    assert!(add_script(&moved, Some(&pod(2)))
        .contains("delete counter bridge weft_guard port_vw0000000002\n"));
}

#[test]
fn reconciling_refills_without_dropping_the_table() {
    let existing = [
        "reason_source_mac".to_owned(),
        "port_vw0000000002".to_owned(),
        "port_vw0000000009".to_owned(),
    ];
    let want = format!(
        "{DECLARATIONS}\
flush chain bridge weft_guard prerouting
flush chain bridge weft_guard from_ip4
flush chain bridge weft_guard from_arp
flush chain bridge weft_guard from_ip6
flush chain bridge weft_guard deny
flush set bridge weft_guard ports
flush set bridge weft_guard port_mac
flush set bridge weft_guard port_ip4
flush set bridge weft_guard port_ip6
flush set bridge weft_guard port_nd_target
flush set bridge weft_guard flood_rate
flush map bridge weft_guard drops
delete counter bridge weft_guard port_vw0000000009
{RULES}{POD_2}"
    );
    assert_eq!(
        reconcile_script(&[pod(2)], &existing, Some(FloodLimit::DEFAULT)),
        want
    );
    assert!(!reconcile_script(&[], &[], None).contains("delete table"));
}

#[test]
fn the_table_goes_whole() {
    assert_eq!(
        remove_table_script(),
        "table bridge weft_guard\ndelete table bridge weft_guard\n"
    );
}

#[test]
fn link_local_addresses_are_modified_eui64() {
    let mac = [0x52, 0x3c, 0x41, 0x81, 0x40, 0x8d];
    assert_eq!(
        link_local(mac),
        "fe80::503c:41ff:fe81:408d".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(pod(2).ipv6, vec![link_local(pod(2).mac)]);
}

#[test]
fn only_safe_names_and_unicast_macs() {
    assert!(valid_port_name("vw0123456789"));
    assert!(valid_port_name("veth-a.b_c"));
    assert!(!valid_port_name(""));
    assert!(!valid_port_name("sixteen-chars-xx"));
    assert!(!valid_port_name("a\"b"));
    assert!(!valid_port_name("a b"));
    assert!(!valid_port_name("a}"));
    assert_eq!(
        parse_mac("02:42:AC:11:00:02"),
        Some([2, 0x42, 0xac, 0x11, 0, 2])
    );
    assert_eq!(parse_mac("02:42:ac:11:00"), None);
    assert_eq!(parse_mac("02:42:ac:11:00:02:03"), None);
    assert_eq!(parse_mac("2:42:ac:11:00:02"), None);
    assert_eq!(
        format_mac(&[2, 0x42, 0xac, 0x11, 0, 2]),
        "02:42:ac:11:00:02"
    );
    assert!(usable_mac([2, 0, 0, 0, 0, 1]));
    assert!(!usable_mac([1, 0, 0x5e, 0, 0, 1]));
    assert!(!usable_mac([0xff; 6]));
    assert!(!usable_mac([0; 6]));
    assert_eq!(port_of_counter("port_vw01"), Some("vw01"));
    assert_eq!(port_of_counter("reason_arp_sender"), None);
}
