//! The nftables text of the port guard: pure functions from the guarded ports to `nft -f`
//! scripts, so that the exact rules are unit-tested.
//!
//! One table, `table bridge weft_guard`, one base chain at bridge prerouting. Ports are not
//! written into rules: they are elements of sets keyed on `iifname`, so a pod coming or going
//! adds or deletes elements ([`add_script`], [`remove_script`]) and the rules never change.
//!
//! * `ports`: the guarded ports. Any other port (the TAP port, the VXLAN device, a port attached
//!   by hand) passes untouched.
//! * `port_mac` (port . MAC), `port_ip4` (port . IPv4), `port_ip6` (port . IPv6): what each port
//!   may use as Ethernet source, IPv4 source and ARP sender, IPv6 source.
//! * `port_nd_target`: the IPv6 addresses again, as 128-bit integers, because nft 1.0.6 has no
//!   `icmpv6 taddr`: the neighbour discovery target is read as raw payload (`@th,64,128`).
//! * `drops`: port -> its named counter `port_<port>`, counted in the `deny` chain.
//! * one named counter per reason, `reason_<reason>` ([`REASONS`]).
//! * `flood_rate`: the flood limit ([`FloodLimit`]), a dynamic set keyed on `iifname` whose
//!   elements carry one token bucket per port (created by the first broadcast or multicast frame
//!   of a port, gone a minute after its last one, or when the port stops being guarded). Frames to a group address beyond the rate are
//!   dropped for the reason `flood_limit`. The rate is written in the rule, so a new rate takes
//!   a reconcile (a router start), which also empties the set.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The table (family `bridge`).
pub const TABLE: &str = "weft_guard";

/// The reasons a frame is dropped, with what they mean (docs/security.md has the same list).
pub const REASONS: [(&str, &str); 11] = [
    (
        "multicast_source",
        "a multicast or broadcast Ethernet source",
    ),
    ("source_mac", "an Ethernet source that is not the pod's MAC"),
    (
        "ethertype",
        "neither IPv4, ARP nor IPv6 (VLAN tags included)",
    ),
    (
        "ipv4_source",
        "an IPv4 source that is not the pod's address",
    ),
    (
        "dhcp_server",
        "a DHCP or DHCPv6 server message (UDP source port 67 or 547)",
    ),
    ("arp_format", "ARP that is not Ethernet/IPv4"),
    (
        "arp_sender",
        "an ARP sender MAC or IPv4 address that is not the pod's",
    ),
    ("ipv6_source", "an IPv6 source that is not the pod's"),
    (
        "router_advert",
        "an ICMPv6 router advertisement or redirect",
    ),
    (
        "nd_target",
        "a neighbour advertisement for an address that is not the pod's",
    ),
    (
        "flood_limit",
        "a broadcast or multicast destination beyond the port's flood limit",
    ),
];

/// The flood limit of every guarded port: frames to broadcast and multicast destinations (ARP
/// requests, neighbour solicitations, mDNS, ...) beyond `pps` a second are dropped; a quiet port
/// may send `burst` at once (the size of the bucket, as `tests/tests/floods.rs` measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodLimit {
    /// Frames a second, at least 1.
    pub pps: u32,
    /// Frames let through at once after a quiet period, at least 1.
    pub burst: u32,
}

impl FloodLimit {
    /// The default: 1000 frames a second, bursts of 2000.
    pub const DEFAULT: FloodLimit = FloodLimit {
        pps: 1000,
        burst: 2000,
    };

    /// The limit for `--flood-limit pps --flood-burst burst`: `None` (no limit) when `pps` is 0;
    /// a burst of 0 means as many as `pps`.
    pub fn from_flags(pps: u32, burst: u32) -> Option<FloodLimit> {
        let burst = if burst == 0 { pps } else { burst };
        (pps > 0).then_some(FloodLimit { pps, burst })
    }
}

/// The sets that hold per-port elements, in the order their elements are added.
const SETS: [&str; 4] = ["port_mac", "port_ip4", "port_ip6", "port_nd_target"];
/// Most ports with a token bucket at once (a port's bucket goes a minute after its last flood).
const FLOOD_RATE_SIZE: u32 = 65536;
/// The chains, base chain first.
const CHAINS: [&str; 5] = ["prerouting", "from_ip4", "from_arp", "from_ip6", "deny"];

/// One guarded port and what it may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRules {
    /// The bridge port (the host end of the pod's veth pair).
    pub name: String,
    /// The pod's MAC address.
    pub mac: [u8; 6],
    /// Allowed IPv4 sources.
    pub ipv4: Vec<Ipv4Addr>,
    /// Allowed IPv6 sources.
    pub ipv6: Vec<Ipv6Addr>,
}

impl PortRules {
    /// A port whose pod has `mac` and `ipv4`: its IPv6 link-local address is the one derived
    /// from the MAC ([`link_local`]).
    pub fn new(name: &str, mac: [u8; 6], ipv4: &[Ipv4Addr]) -> PortRules {
        PortRules {
            name: name.to_owned(),
            mac,
            ipv4: ipv4.to_vec(),
            ipv6: vec![link_local(mac)],
        }
    }

    /// The named counter of the port.
    pub fn counter(&self) -> String {
        counter_name(&self.name)
    }
}

/// The named counter of port `name`.
pub fn counter_name(name: &str) -> String {
    format!("port_{name}")
}

/// The port of a counter name, if it is a port counter.
pub fn port_of_counter(counter: &str) -> Option<&str> {
    counter.strip_prefix("port_")
}

/// The IPv6 link-local address the kernel derives from `mac` (modified EUI-64, RFC 4291), which
/// it uses with `addr_gen_mode` 0 (the default; `weft-cni` sets it on the pod's interface).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let m = mac;
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
}

// Port names and MAC addresses are part of the API's contract (`POST /v1/ports/guard`): checked
// in weft-api, where they are unit-tested and fuzzed.
pub use weft_api::check::{format_mac, parse_mac, usable_mac, valid_port_name};

/// The table's objects without rules or elements: counters, sets, the counter map, the chains.
/// Declaring what exists already changes nothing (and keeps counter values).
fn declarations(out: &mut String) {
    let _ = writeln!(out, "table bridge {TABLE} {{");
    for (r, _) in REASONS {
        let _ = writeln!(out, "  counter reason_{r} {{\n  }}");
    }
    out.push_str(
        "  set ports {\n    type ifname\n  }\n\
         \x20 set port_mac {\n    type ifname . ether_addr\n  }\n\
         \x20 set port_ip4 {\n    type ifname . ipv4_addr\n  }\n\
         \x20 set port_ip6 {\n    type ifname . ipv6_addr\n  }\n\
         \x20 set port_nd_target {\n    typeof iifname . @th,64,128\n  }\n\
         \x20 map drops {\n    type ifname : counter\n  }\n",
    );
    let _ = writeln!(
        out,
        "  set flood_rate {{\n    type ifname\n    size {FLOOD_RATE_SIZE}\n    \
         flags dynamic,timeout\n    timeout 1m\n  }}"
    );
    out.push_str(
        "  chain prerouting {\n    type filter hook prerouting priority filter; policy accept;\n  }\n",
    );
    for c in &CHAINS[1..] {
        let _ = writeln!(out, "  chain {c} {{\n  }}");
    }
    out.push_str("}\n");
}

/// The flood limit's rule, if there is a limit.
fn flood_rule(limit: Option<FloodLimit>) -> String {
    let Some(FloodLimit { pps, burst }) = limit else {
        return String::new();
    };
    format!(
        "    ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 update @flood_rate \
         {{ iifname limit rate over {pps}/second burst {burst} packets }} \
         counter name \"reason_flood_limit\" goto deny\n"
    )
}

/// The rules (added to empty chains).
fn rules(out: &mut String, limit: Option<FloodLimit>) {
    let deny = |reason: &str| format!("counter name \"reason_{reason}\" goto deny");
    let _ = write!(
        out,
        "table bridge {TABLE} {{\n\
         \x20 chain prerouting {{\n\
         \x20   iifname != @ports accept\n\
         \x20   ether saddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 {}\n\
         \x20   iifname . ether saddr != @port_mac {}\n\
         {}\
         \x20   ether type vmap {{ ip : goto from_ip4, arp : goto from_arp, ip6 : goto from_ip6 }}\n\
         \x20   {}\n\
         \x20 }}\n\
         \x20 chain from_ip4 {{\n\
         \x20   iifname . ip saddr != @port_ip4 {}\n\
         \x20   udp sport 67 {}\n\
         \x20 }}\n\
         \x20 chain from_arp {{\n\
         \x20   arp htype . arp ptype . arp hlen . arp plen != {{ 1 . ip . 6 . 4 }} {}\n\
         \x20   iifname . arp saddr ether != @port_mac {}\n\
         \x20   arp operation request arp saddr ip 0.0.0.0 accept\n\
         \x20   iifname . arp saddr ip != @port_ip4 {}\n\
         \x20 }}\n\
         \x20 chain from_ip6 {{\n\
         \x20   ip6 saddr :: icmpv6 type nd-neighbor-solicit iifname . @th,64,128 @port_nd_target accept\n\
         \x20   ip6 saddr :: icmpv6 type {{ mld-listener-report, mld2-listener-report }} accept\n\
         \x20   iifname . ip6 saddr != @port_ip6 {}\n\
         \x20   icmpv6 type {{ nd-router-advert, nd-redirect }} {}\n\
         \x20   icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @port_nd_target {}\n\
         \x20   udp sport 547 {}\n\
         \x20 }}\n\
         \x20 chain deny {{\n\
         \x20   counter name iifname map @drops\n\
         \x20   drop\n\
         \x20 }}\n\
         }}\n",
        deny("multicast_source"),
        deny("source_mac"),
        flood_rule(limit),
        deny("ethertype"),
        deny("ipv4_source"),
        deny("dhcp_server"),
        deny("arp_format"),
        deny("arp_sender"),
        deny("arp_sender"),
        deny("ipv6_source"),
        deny("router_advert"),
        deny("nd_target"),
        deny("dhcp_server"),
    );
}

/// `"port" . value` for every value, comma-separated.
fn keyed<T>(port: &str, values: &[T], f: impl Fn(&T) -> String) -> String {
    values
        .iter()
        .map(|v| format!("\"{port}\" . {}", f(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The element lines of `p`'s sets (`verb` is `add` or `delete`), `ports` excluded.
fn set_elements(out: &mut String, verb: &str, p: &PortRules) {
    let n = &p.name;
    let lists = [
        keyed(n, &[p.mac], format_mac),
        keyed(n, &p.ipv4, Ipv4Addr::to_string),
        keyed(n, &p.ipv6, Ipv6Addr::to_string),
        keyed(n, &p.ipv6, |ip| format!("0x{:032x}", u128::from(*ip))),
    ];
    for (set, list) in SETS.iter().zip(lists) {
        if !list.is_empty() {
            let _ = writeln!(out, "{verb} element bridge {TABLE} {set} {{ {list} }}");
        }
    }
}

/// The lines that guard `p`: its counter, its elements, and last its membership of `ports`.
fn add_port(out: &mut String, p: &PortRules) {
    let (n, c) = (&p.name, p.counter());
    let _ = writeln!(out, "add counter bridge {TABLE} {c}");
    let _ = writeln!(
        out,
        "add element bridge {TABLE} drops {{ \"{n}\" : \"{c}\" }}"
    );
    set_elements(out, "add", p);
    let _ = writeln!(out, "add element bridge {TABLE} ports {{ \"{n}\" }}");
}

/// The lines that drop `p`'s elements and, unless `keep_counter`, its counter.
fn remove_port(out: &mut String, p: &PortRules, keep_counter: bool) {
    let n = &p.name;
    let _ = writeln!(out, "delete element bridge {TABLE} ports {{ \"{n}\" }}");
    set_elements(out, "delete", p);
    // Its flood bucket, if it has one: adding first makes the delete succeed either way (nft
    // 1.0.6 has no `destroy`).
    for verb in ["add", "delete"] {
        let _ = writeln!(
            out,
            "{verb} element bridge {TABLE} flood_rate {{ \"{n}\" }}"
        );
    }
    let _ = writeln!(out, "delete element bridge {TABLE} drops {{ \"{n}\" }}");
    if !keep_counter {
        let _ = writeln!(out, "delete counter bridge {TABLE} {}", p.counter());
    }
}

/// Replaces the whole table with one guarding `ports` (counters start at zero). The fallback
/// when [`reconcile_script`] fails (e.g. a table of an older layout).
pub fn replace_script(ports: &[PortRules], limit: Option<FloodLimit>) -> String {
    let mut out = format!("table bridge {TABLE}\ndelete table bridge {TABLE}\n");
    declarations(&mut out);
    rules(&mut out, limit);
    for p in ports {
        add_port(&mut out, p);
    }
    out
}

/// Brings the table to guarding exactly `ports` in one transaction, keeping the counters that
/// stay: every chain and set is refilled, the counters of ports no longer guarded
/// (`existing_counters` lists the table's counters now) are deleted. The flood limit's buckets
/// start full again (the rate may have changed).
pub fn reconcile_script(
    ports: &[PortRules],
    existing_counters: &[String],
    limit: Option<FloodLimit>,
) -> String {
    let mut out = String::new();
    declarations(&mut out);
    for c in CHAINS {
        let _ = writeln!(out, "flush chain bridge {TABLE} {c}");
    }
    for s in ["ports"].iter().chain(&SETS).chain(&["flood_rate"]) {
        let _ = writeln!(out, "flush set bridge {TABLE} {s}");
    }
    let _ = writeln!(out, "flush map bridge {TABLE} drops");
    for c in existing_counters {
        let stale = port_of_counter(c).is_some() && !ports.iter().any(|p| p.counter() == *c);
        if stale {
            let _ = writeln!(out, "delete counter bridge {TABLE} {c}");
        }
    }
    rules(&mut out, limit);
    for p in ports {
        add_port(&mut out, p);
    }
    out
}

/// Guards `new`, replacing `old` (the same attachment's previous port) if any.
pub fn add_script(new: &PortRules, old: Option<&PortRules>) -> String {
    let mut out = String::new();
    if let Some(o) = old {
        remove_port(&mut out, o, o.name == new.name);
    }
    add_port(&mut out, new);
    out
}

/// Stops guarding `p` (its frames pass unchecked, if the port still exists).
pub fn remove_script(p: &PortRules) -> String {
    let mut out = String::new();
    remove_port(&mut out, p, false);
    out
}

/// Removes the table (and succeeds when there is none).
pub fn remove_table_script() -> String {
    format!("table bridge {TABLE}\ndelete table bridge {TABLE}\n")
}

#[cfg(test)]
mod tests;
