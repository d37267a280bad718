//! The pure half of `weft doctor`: facts in, [`Check`]s out. Nothing here reads the system; the
//! gathering layer ([`super::gather`]) collects the facts and the unit tests below feed made-up
//! ones. Every level (ok, warn, fail, skip) is decided here, so docs/operations.md ("weft
//! doctor") can be read against this file.

use ipnet::Ipv4Net;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use weft_api::doctor::{Check, Status};
use weft_api::status::{PeerReport, TargetState, TargetStatus};

/// What the local router does, as far as the checks need it (all off when no router answers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// A router answered on the API socket.
    pub router: bool,
    /// It runs pod IPAM (`--pod-cidr`): pods get addresses through weft-cni.
    pub ipam: bool,
    /// Its pod CIDR.
    pub pod_cidr: Option<Ipv4Net>,
    /// It enforces NetworkPolicy (`--policy-dir` or `--kubernetes`).
    pub policy: bool,
    /// Its own links: the bridge, the TAP port, the fast path's VXLAN device.
    pub own_links: Vec<String>,
    /// Its sleeve (control and data) port and its fast path port.
    pub ports: Vec<u16>,
    /// `None` when the fast path is on, else why not (`off: ...`).
    pub fastpath_off: Option<String>,
}

impl Context {
    /// The level of a problem that breaks only what NetworkPolicy needs.
    fn policy_level(&self) -> Status {
        if self.policy {
            Status::Fail
        } else {
            Status::Warn
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel features.
// ---------------------------------------------------------------------------------------------

/// A kernel feature Weft uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// TUN/TAP: the router's port on the bridge.
    Tun,
    /// The Linux bridge pods attach to.
    Bridge,
    /// VXLAN: the fast path.
    Vxlan,
    /// br_netfilter: bridged traffic through the IP hooks (Services, NetworkPolicy).
    BrNetfilter,
    /// nf_tables: masquerading, the port guard, NetworkPolicy.
    Nftables,
}

impl Feature {
    /// Every feature, in the order they are checked.
    pub const ALL: [Feature; 5] = [
        Feature::Tun,
        Feature::Bridge,
        Feature::Vxlan,
        Feature::BrNetfilter,
        Feature::Nftables,
    ];

    /// The check's name without `kernel.`.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Tun => "tun",
            Feature::Bridge => "bridge",
            Feature::Vxlan => "vxlan",
            Feature::BrNetfilter => "br_netfilter",
            Feature::Nftables => "nftables",
        }
    }

    /// The kernel module that provides it.
    pub fn module(self) -> &'static str {
        match self {
            Feature::Nftables => "nf_tables",
            f => f.name(),
        }
    }

    /// What breaks without it.
    fn breaks(self) -> &'static str {
        match self {
            Feature::Tun => "the router cannot create its TAP port: no pod traffic leaves the host",
            Feature::Bridge => "there is no bridge for pods to attach to",
            Feature::Vxlan => "no fast path: every packet goes through the router (slower)",
            Feature::BrNetfilter => {
                "bridged pod traffic skips the IP hooks: kube-proxy Services between pods of a \
                 host and NetworkPolicy do not see it"
            }
            Feature::Nftables => {
                "no masquerading, port guard or NetworkPolicy (the router loads nftables tables)"
            }
        }
    }

    /// The level when it is missing.
    fn level(self, ctx: &Context) -> Status {
        match self {
            Feature::Tun | Feature::Bridge => Status::Fail,
            Feature::Vxlan => Status::Warn,
            Feature::BrNetfilter => ctx.policy_level(),
            // Without a router we cannot tell whether IPAM will be on: assume it will.
            Feature::Nftables if ctx.ipam || ctx.policy || !ctx.router => Status::Fail,
            Feature::Nftables => Status::Warn,
        }
    }

    fn fix(self) -> String {
        match self {
            Feature::Nftables => "install nftables (`apt-get install nftables`) on a kernel with \
                                  CONFIG_NF_TABLES, then `modprobe nf_tables`"
                .into(),
            Feature::BrNetfilter => "modprobe br_netfilter && echo br_netfilter > \
                                     /etc/modules-load.d/br_netfilter.conf"
                .into(),
            Feature::Tun => "modprobe tun; if /dev/net/tun is still missing: mkdir -p /dev/net \
                             && mknod /dev/net/tun c 10 200"
                .into(),
            f => format!(
                "modprobe {m} (a kernel built with its option, as module or built in)",
                m = f.module()
            ),
        }
    }
}

/// What the gathering layer learnt about a kernel feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// In the running kernel (the evidence: `/sys/module/vxlan`, a link of that kind, ...).
    Present(String),
    /// Not loaded, but a module the kernel loads on first use (`modules.dep` lists it).
    Loadable(String),
    /// Neither loaded nor built in nor a module of this kernel (the module lists were read).
    Absent(String),
    /// Not seen, and the module lists could not be read: cannot tell.
    Unknown(String),
}

/// Judges a kernel feature. br_netfilter is not loaded on first use (nothing asks for it), so
/// for it "loadable" counts as missing.
pub fn kernel(feature: Feature, presence: &Presence, ctx: &Context) -> Check {
    let name = format!("kernel.{}", feature.name());
    let missing = |found: String| {
        Check::new(
            &name,
            feature.level(ctx),
            format!("{found}: {}", feature.breaks()),
        )
        .fix(feature.fix())
    };
    match presence {
        Presence::Present(how) => Check::new(&name, Status::Ok, how.clone()),
        Presence::Loadable(how) if feature == Feature::BrNetfilter => {
            missing(format!("{} not loaded ({how})", feature.module()))
        }
        Presence::Loadable(how) => Check::new(
            &name,
            Status::Ok,
            format!("{how}, loaded by the kernel on first use"),
        ),
        Presence::Absent(how) => missing(format!("{} missing ({how})", feature.module())),
        Presence::Unknown(how) => Check::new(
            &name,
            Status::Warn,
            format!(
                "{} not seen and no module list to look in ({how}); if missing: {}",
                feature.module(),
                feature.breaks()
            ),
        )
        .fix(feature.fix()),
    }
}

// ---------------------------------------------------------------------------------------------
// Sysctls.
// ---------------------------------------------------------------------------------------------

/// `net.ipv4.ip_forward` (`value`: the file's content, `None` if unreadable). Pods reach
/// Services, other hosts' addresses and the outside through the host's routing: 0 breaks them.
pub fn ip_forward(value: Option<&str>) -> Check {
    let name = "sysctl.ip_forward";
    match value.map(str::trim) {
        Some("1") => Check::new(name, Status::Ok, "net.ipv4.ip_forward = 1"),
        Some(v) => Check::new(
            name,
            Status::Fail,
            format!(
                "net.ipv4.ip_forward = {v}: pods cannot reach Services, other networks or the \
                 outside (the host does not route their packets)"
            ),
        )
        .fix(
            "sysctl -w net.ipv4.ip_forward=1, and net.ipv4.ip_forward = 1 in /etc/sysctl.d/ to \
             keep it",
        ),
        None => Check::new(
            name,
            Status::Skip,
            "cannot read /proc/sys/net/ipv4/ip_forward",
        ),
    }
}

/// `net.bridge.bridge-nf-call-iptables` (`None`: the file does not exist, br_netfilter is not
/// loaded in this network namespace). Fails when the router enforces NetworkPolicy (its rules
/// see bridged traffic only through it), warns otherwise (kube-proxy's Services between two pods
/// of this host need it, which the router cannot know).
pub fn bridge_nf_call_iptables(value: Option<&str>, ctx: &Context) -> Check {
    let name = "sysctl.bridge_nf_call_iptables";
    let level = ctx.policy_level();
    let why = if ctx.policy {
        "NetworkPolicy does not see traffic between pods (bridged frames skip the IP hooks), \
         nor do kube-proxy's Services"
    } else {
        "kube-proxy's Services between two pods of this host break (bridged replies skip the IP \
         hooks); NetworkPolicy would not work"
    };
    match value.map(str::trim) {
        Some("1") => Check::new(name, Status::Ok, "net.bridge.bridge-nf-call-iptables = 1"),
        Some(v) => Check::new(
            name,
            level,
            format!("net.bridge.bridge-nf-call-iptables = {v}: {why}"),
        )
        .fix(
            "sysctl -w net.bridge.bridge-nf-call-iptables=1 \
             net.bridge.bridge-nf-call-ip6tables=1, and the same in /etc/sysctl.d/ to keep it",
        ),
        None => Check::new(
            name,
            level,
            format!(
                "no /proc/sys/net/bridge/bridge-nf-call-iptables (br_netfilter not loaded): {why}"
            ),
        )
        .fix(
            "modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1 \
             (br_netfilter in /etc/modules-load.d/ to keep it)",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// CNI configuration.
// ---------------------------------------------------------------------------------------------

/// One file of the CNI configuration directory that a runtime would read (`*.conf`,
/// `*.conflist`, `*.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniFile {
    /// Its name.
    pub name: String,
    /// The plugin types it names (`"type"` at the top or in `"plugins"`), or why it did not
    /// parse.
    pub types: Result<Vec<String>, String>,
}

/// The plugin type of weft-cni.
pub const WEFT_CNI_TYPE: &str = "weft-cni";

/// Which configuration the runtime uses: containerd and CRI-O take the first file of the
/// directory in lexical order (libcni's `ConfFiles`, sorted). Fails when another network's file
/// sorts before Weft's; `files` is the directory listing (`None`: no directory).
pub fn cni_order(dir: &str, files: Option<&[CniFile]>, ctx: &Context) -> Check {
    let name = "cni.config_order";
    let none_level = if ctx.ipam { Status::Warn } else { Status::Skip };
    let install = format!(
        "write Weft's conflist as {dir}/10-weft.conflist (docs/cni.md, deploy/kubernetes/weft.yaml)"
    );
    let mut files: Vec<&CniFile> = files.unwrap_or_default().iter().collect();
    if files.is_empty() {
        let what = if ctx.ipam {
            "the container runtime will not attach pods to Weft"
        } else {
            "not a CNI node, or pods are attached by hand"
        };
        return Check::new(
            name,
            none_level,
            format!("no CNI configuration in {dir}: {what}"),
        )
        .fix(if ctx.ipam { install } else { String::new() });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let describe = |f: &CniFile| match &f.types {
        Ok(t) if t.is_empty() => format!("{} (no plugin type)", f.name),
        Ok(t) => format!("{} ({})", f.name, t.join(", ")),
        Err(e) => format!("{} (does not parse: {e})", f.name),
    };
    let weft = files.iter().position(|f| {
        f.types
            .as_ref()
            .is_ok_and(|t| t.iter().any(|t| t == WEFT_CNI_TYPE))
    });
    match weft {
        Some(0) => Check::new(
            name,
            Status::Ok,
            format!(
                "the runtime uses {}, the first of {} file(s) in {dir}",
                describe(files[0]),
                files.len()
            ),
        ),
        Some(i) => {
            let before: Vec<String> = files[..i].iter().map(|f| describe(f)).collect();
            Check::new(
                name,
                Status::Fail,
                format!(
                    "{} sort(s) before Weft's {} in {dir}: the runtime uses {} and pods do not \
                     join Weft",
                    before.join(", "),
                    files[i].name,
                    files[0].name
                ),
            )
            .fix(format!(
                "remove the other network's file(s) from {dir} (e.g. mv {dir}/{} /root/), or \
                 rename Weft's to sort first (00-weft.conflist)",
                files[0].name
            ))
        }
        None => Check::new(
            name,
            none_level,
            format!(
                "no configuration in {dir} uses {WEFT_CNI_TYPE}; the runtime uses {}",
                describe(files[0])
            ),
        )
        .fix(if ctx.ipam { install } else { String::new() }),
    }
}

// ---------------------------------------------------------------------------------------------
// Devices of other overlays.
// ---------------------------------------------------------------------------------------------

/// A link of this network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFact {
    /// Its name.
    pub name: String,
    /// Its kind (`bridge`, `vxlan`, ...; empty for none).
    pub kind: String,
    /// For a VXLAN device, its UDP port.
    pub vxlan_port: Option<u16>,
    /// Its IPv4 addresses.
    pub addrs: Vec<Ipv4Net>,
}

/// Weave Net's devices: it uses TCP and UDP 6783 and UDP 6784, the ports Weft uses.
const WEAVE: [&str; 4] = ["weave", "datapath", "vxlan-6784", "vxlan-6783"];
/// Devices other overlays and CNI plugins create, and who makes them.
const OTHERS: [(&str, &str); 9] = [
    ("flannel.", "flannel"),
    ("flannel-v6.", "flannel"),
    ("flannel-wg", "flannel"),
    ("cni0", "flannel or the bridge CNI plugin"),
    ("cilium_", "Cilium"),
    ("vxlan.calico", "Calico"),
    ("vxlan-v6.calico", "Calico"),
    ("kube-bridge", "kube-router"),
    ("docker_gwbridge", "Docker swarm"),
];

/// Whether `link` belongs to another overlay, and how badly it collides: a device of Weave Net
/// (same ports), a VXLAN device on one of our ports, or one whose address lies in the pod CIDR
/// fails; any other known overlay device warns (two CNIs on one host fight over routes and
/// configuration). `None` for links that are none of these (ours included).
pub fn foreign_link(link: &LinkFact, ctx: &Context) -> Option<Check> {
    if ctx.own_links.contains(&link.name) {
        return None;
    }
    let name = format!("links.{}", link.name);
    let remove = format!(
        "remove the other overlay (its DaemonSet or service), then `ip link delete {}`",
        link.name
    );
    if WEAVE.contains(&link.name.as_str()) {
        return Some(
            Check::new(
                name,
                Status::Fail,
                format!(
                    "{} is Weave Net's: it uses TCP/UDP 6783 and UDP 6784 like Weft, one of the \
                     two cannot bind or receives the other's traffic",
                    link.name
                ),
            )
            .fix(remove),
        );
    }
    if let Some(port) = link.vxlan_port.filter(|p| ctx.ports.contains(p)) {
        return Some(
            Check::new(
                name,
                Status::Fail,
                format!(
                    "VXLAN device {} uses UDP {port}, one of Weft's ports: its packets and \
                     Weft's get mixed up",
                    link.name
                ),
            )
            .fix(format!(
                "`ip link delete {}`, or run Weft on other ports (--listen, --vxlan-port)",
                link.name
            )),
        );
    }
    let owner = OTHERS
        .iter()
        .find(|(prefix, _)| {
            if prefix.ends_with(['.', '_']) {
                link.name.starts_with(prefix)
            } else {
                link.name == *prefix
            }
        })
        .map(|(_, who)| *who)?;
    let overlap: Vec<String> = match ctx.pod_cidr {
        Some(cidr) => link
            .addrs
            .iter()
            .filter(|a| cidr.contains(&a.network()) || a.contains(&cidr.network()))
            .map(|a| a.to_string())
            .collect(),
        None => Vec::new(),
    };
    let kind = if link.kind.is_empty() {
        String::new()
    } else {
        format!(" ({})", link.kind)
    };
    Some(if overlap.is_empty() {
        Check::new(
            name,
            Status::Warn,
            format!(
                "{}{kind} is made by {owner}: another overlay on this host competes with Weft \
                 for pods and routes",
                link.name
            ),
        )
        .fix(remove)
    } else {
        Check::new(
            name,
            Status::Fail,
            format!(
                "{}{kind} is made by {owner} and holds {} inside the pod CIDR {}: pod addresses \
                 collide",
                link.name,
                overlap.join(", "),
                ctx.pod_cidr.map(|c| c.to_string()).unwrap_or_default()
            ),
        )
        .fix(remove)
    })
}

/// [`foreign_link`] for every link; one `links` check saying so when there is none.
pub fn foreign_links(links: &[LinkFact], ctx: &Context) -> Vec<Check> {
    let found: Vec<Check> = links.iter().filter_map(|l| foreign_link(l, ctx)).collect();
    if found.is_empty() {
        vec![Check::new(
            "links",
            Status::Ok,
            format!("no device of another overlay among {} link(s)", links.len()),
        )]
    } else {
        found
    }
}

// ---------------------------------------------------------------------------------------------
// The router and its underlay.
// ---------------------------------------------------------------------------------------------

/// Whether the local router answered (`Err`: why not).
pub fn router(answer: Result<&weft_api::status::Report, &str>, state_dir: &str) -> Check {
    match answer {
        Ok(r) => Check::new(
            "router",
            Status::Ok,
            format!(
                "weft {} ({}) up {} s on {}, {} peer(s)",
                r.version,
                r.nickname,
                r.uptime_secs,
                r.listen,
                r.peers.len()
            ),
        ),
        Err(e) => Check::new(
            "router",
            Status::Warn,
            format!("no router answers at {state_dir} ({e}): peer checks skipped"),
        )
        .fix("start it (`weft router ...`, or its service), or pass its --state-dir"),
    }
}

/// The underlay link's MTU now (`now`: device and MTU, `None` if not found) against the MTU the
/// router computed its pod MTU from at start.
pub fn underlay_mtu(now: Option<(&str, u32)>, router_underlay: u32, pod_mtu: u32) -> Check {
    let name = "mtu.underlay";
    match now {
        None => Check::new(
            name,
            Status::Skip,
            "the router's listen address is on no link of this namespace",
        ),
        Some((dev, mtu)) if mtu == router_underlay => {
            Check::new(name, Status::Ok, format!("{dev} MTU {mtu}, pods {pod_mtu}"))
        }
        Some((dev, mtu)) if mtu < router_underlay => Check::new(
            name,
            Status::Fail,
            format!(
                "{dev} MTU is {mtu} but the router started with {router_underlay} (pods \
                 {pod_mtu}): its largest datagrams no longer fit and are lost"
            ),
        )
        .fix(format!(
            "ip link set {dev} mtu {router_underlay}, or restart the router to compute the pod \
             MTU from {mtu} (then every host needs the same pod MTU)"
        )),
        Some((dev, mtu)) => Check::new(
            name,
            Status::Warn,
            format!(
                "{dev} MTU is {mtu}, above the {router_underlay} the router started with: pods \
                 use {pod_mtu}, smaller than they could"
            ),
        )
        .fix("restart the router to use it (on every host, so that pod MTUs match)"),
    }
}

/// The MTUs of the pods' ports on the bridge (`ports`: the host ends of their veths) against the
/// pod MTU. A pod whose interface is larger sends frames the overlay cannot carry: the sleeve
/// answers them with ICMP "fragmentation needed" / "packet too big", but the bridge drops them
/// without a word on their way to the fast path's VXLAN device, whose MTU is the pod MTU.
pub fn pod_ports(bridge: &str, ports: &[(String, u32)], pod_mtu: u32, ctx: &Context) -> Check {
    let name = "mtu.pods";
    let big: Vec<String> = ports
        .iter()
        .filter(|(_, m)| *m > pod_mtu)
        .map(|(n, m)| format!("{n} ({m})"))
        .collect();
    if big.is_empty() {
        return Check::new(
            name,
            Status::Ok,
            format!(
                "{} pod port(s) on {bridge}, none above the pod MTU {pod_mtu}",
                ports.len()
            ),
        );
    }
    let (status, what) = if ctx.fastpath_off.is_none() {
        (
            Status::Fail,
            "frames above it to pods on other hosts are dropped by the bridge without an ICMP              answer on the fast path (an MTU black hole)",
        )
    } else {
        (
            Status::Warn,
            "their larger packets are answered with ICMP by the router (fragmentation needed)              and must be sent again smaller",
        )
    };
    Check::new(
        name,
        status,
        format!(
            "pod ports on {bridge} above the pod MTU {pod_mtu}: {}; {what}",
            big.join(", ")
        ),
    )
    .fix(format!(
        "give those pods (their eth0 and the host end of the veth) MTU {pod_mtu}: weft-cni does          for the pods it attaches; a pod attached otherwise needs it set by hand"
    ))
}

// ---------------------------------------------------------------------------------------------
// Peers.
// ---------------------------------------------------------------------------------------------

/// The outcome of a TCP connect to a peer's control port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpProbe {
    /// Connected; the first bytes the other end sent (a Weft router sends its 8-byte preamble,
    /// `WEFT...`, at once).
    Connected(Vec<u8>),
    /// Refused (RST): nothing listens, or a firewall rejects.
    Refused,
    /// No answer within the timeout: a firewall drops, or the host is down.
    TimedOut(Duration),
    /// Another error (no route, ...).
    Error(String),
}

/// Judges the TCP probe of `addr` (the peer called `label`).
pub fn peer_tcp(label: &str, addr: SocketAddr, probe: &TcpProbe) -> Check {
    let name = format!("peer.{label}.tcp");
    let port = addr.port();
    let open = format!(
        "allow TCP {port} from this host on {ip} (e.g. `nft add rule inet filter input tcp dport \
         {port} accept` there) and on the way",
        ip = addr.ip()
    );
    match probe {
        TcpProbe::Connected(b) if b.starts_with(b"WEFT") => Check::new(
            name,
            Status::Ok,
            format!("TCP {addr} answers with a Weft preamble"),
        ),
        TcpProbe::Connected(b) => Check::new(
            name,
            Status::Fail,
            format!(
                "TCP {addr} accepts but does not speak Weft (first bytes {:?}): another service \
                 holds the port",
                String::from_utf8_lossy(&b[..b.len().min(8)])
            ),
        )
        .fix(format!(
            "stop what listens on TCP {port} on {} (Weave Net?)",
            addr.ip()
        )),
        TcpProbe::Refused => Check::new(
            name,
            Status::Fail,
            format!("TCP {addr} refused: no router listens there, or a firewall rejects"),
        )
        .fix(format!("start the router on {}; {open}", addr.ip())),
        TcpProbe::TimedOut(t) => Check::new(
            name,
            Status::Fail,
            format!(
                "TCP {addr} did not answer within {} ms: a firewall drops it, or the host is down",
                t.as_millis()
            ),
        )
        .fix(open),
        TcpProbe::Error(e) => Check::new(name, Status::Fail, format!("TCP {addr}: {e}")).fix(open),
    }
}

/// Judges the UDP sleeve path to a peer from the router's view: the router sends a heartbeat
/// every second to the peer's UDP port and the peer's router answers it (a third party cannot
/// get an answer: heartbeats from unknown peers are dropped, and encrypted ones need the
/// session's key).
pub fn peer_udp(label: &str, p: &PeerReport, udp_port: u16) -> Check {
    let name = format!("peer.{label}.udp");
    match p.state.as_str() {
        "established" if !p.addr.is_empty() => Check::new(
            name,
            Status::Ok,
            format!(
                "UDP heartbeats to {} answered{}",
                p.addr,
                p.rtt_ms
                    .map(|r| format!(", round trip {r:.2} ms"))
                    .unwrap_or_default()
            ),
        ),
        "established" => Check::new(name, Status::Ok, "established"),
        "connected, data path down" => Check::new(
            name,
            Status::Fail,
            format!(
                "control connection up but UDP heartbeats to {} go unanswered for 3.5 s: UDP \
                 {udp_port} is blocked one way or both, pod traffic {}",
                p.addr,
                if p.path.starts_with("via ") {
                    format!("takes a relay ({})", p.path)
                } else {
                    "to it is lost".into()
                }
            ),
        )
        .fix(format!(
            "allow UDP {udp_port} both ways between this host and {label} (e.g. `nft add rule \
             inet filter input udp dport {udp_port} accept` on both)"
        )),
        "reachable" => Check::new(
            name,
            Status::Warn,
            format!(
                "no direct connection, reached {}: traffic takes a detour through another host",
                p.path
            ),
        )
        .fix(format!(
            "allow TCP and UDP {udp_port} between this host and {label}"
        )),
        other => Check::new(name, Status::Fail, format!("{other}: no path to it")).fix(format!(
            "allow TCP and UDP {udp_port} between this host and {label}"
        )),
    }
}

/// Judges the fast path to a peer: the routers exchange VXLAN probes every second on the fast
/// path's port and report what arrives (`p.fastpath` is the router's reason).
pub fn peer_vxlan(label: &str, p: &PeerReport, ctx: &Context, vxlan_port: u16) -> Check {
    let name = format!("peer.{label}.vxlan");
    if let Some(off) = &ctx.fastpath_off {
        return Check::new(name, Status::Skip, format!("fast path {off}"));
    }
    let reason = p.fastpath.as_str();
    let blocked = |which: &str| {
        Check::new(
            name.clone(),
            Status::Warn,
            format!(
                "{which}: UDP {vxlan_port} is blocked, pod traffic to {label} stays on the \
                 sleeve through the router (works, slower)"
            ),
        )
        .fix(format!(
            "allow UDP {vxlan_port} both ways between this host and {label} (e.g. `nft add rule \
             inet filter input udp dport {vxlan_port} accept` on both)"
        ))
    };
    match reason {
        "VXLAN probes answered both ways" => Check::new(
            name,
            Status::Ok,
            format!("VXLAN probes on UDP {vxlan_port} answered both ways: fast path in use"),
        ),
        "probing" | "sleeve: probes good, waiting to confirm" => Check::new(
            name,
            Status::Ok,
            format!("{reason} (moves to the fast path after 5 s of good probes)"),
        ),
        "sleeve: our VXLAN probes do not arrive" => blocked("our VXLAN probes do not reach it"),
        "sleeve: no VXLAN probe from the peer" => blocked("its VXLAN probes do not reach us"),
        "sleeve: the peer reports no fast path" => {
            Check::new(name, Status::Skip, "the peer runs without the fast path")
        }
        "sleeve: UDP path not confirmed" => Check::new(
            name,
            Status::Skip,
            "needs the UDP sleeve path first (see the udp check)",
        ),
        "sleeve: relays in use" => Check::new(
            name,
            Status::Skip,
            "the mesh is not a full mesh (relays in use): the fast path waits for it",
        ),
        other => Check::new(name, Status::Skip, format!("fast path: {other:?}")),
    }
}

/// Judges the pod MTU of a peer against ours. The report shows the smaller of the two
/// (`p.mtu`), so a peer with a smaller pod MTU shows here, and one with a larger one on its own
/// host's doctor.
pub fn peer_mtu(label: &str, p: &PeerReport, ours: u32) -> Check {
    let name = format!("peer.{label}.mtu");
    if p.mtu == 0 {
        return Check::new(
            name,
            Status::Skip,
            "not a direct neighbour: its MTU is unknown",
        );
    }
    if p.mtu < ours {
        return Check::new(
            name,
            Status::Fail,
            format!(
                "{label}'s pods use MTU {}, ours {ours}: our largest datagrams do not fit its \
                 underlay and large packets between the hosts are lost",
                p.mtu
            ),
        )
        .fix(format!(
            "give every host the same pod MTU: `--mtu {}` on every router (the smallest), or \
             raise {label}'s underlay MTU and restart its router",
            p.mtu
        ));
    }
    Check::new(name, Status::Ok, format!("pod MTU {ours} on both"))
}

/// Offsets from which the clock check warns: logs, metrics and key ages of the hosts no longer
/// line up.
pub const CLOCK_WARN_MS: i64 = 2_000;
/// Offsets from which it fails: an hour is well on the way to the 24 h beyond which gossip refuses
/// a host's records as too far ahead (docs/security.md), and TLS to an API server fails sooner.
pub const CLOCK_FAIL_MS: i64 = 3_600_000;

/// Clock skew with the neighbours, from the offsets their hellos gave (`clock_offset_ms`: their
/// clock minus ours, one-way delay included). Skipped without a neighbour that sends its clock.
pub fn clock(peers: &[PeerReport]) -> Check {
    let worst = peers
        .iter()
        .filter_map(|p| Some((p, p.clock_offset_ms?)))
        .max_by_key(|(_, o)| o.unsigned_abs());
    let Some((p, offset)) = worst else {
        return Check::new(
            "clock",
            Status::Skip,
            "no neighbour reported its clock (none connected, or routers of an older version)",
        )
        .fix("keep every host on NTP: timedatectl show -p NTPSynchronized");
    };
    let label = label(&p.nickname, &p.addr);
    let found = format!(
        "{label}'s clock is {} ms {} ours (the largest offset of {} neighbour(s), measured at \
         their hello)",
        offset.unsigned_abs(),
        if offset >= 0 { "ahead of" } else { "behind" },
        peers.iter().filter(|p| p.clock_offset_ms.is_some()).count()
    );
    let fix = format!(
        "synchronise the clocks of this host and {label} (NTP: timedatectl show -p \
         NTPSynchronized on both), then reconnect (weft reload or a router restart) to measure \
         again"
    );
    match offset.unsigned_abs() {
        o if o >= CLOCK_FAIL_MS.unsigned_abs() => Check::new("clock", Status::Fail, found).fix(fix),
        o if o >= CLOCK_WARN_MS.unsigned_abs() => Check::new("clock", Status::Warn, found).fix(fix),
        _ => Check::new("clock", Status::Ok, found),
    }
}

/// The label a peer's checks are named by: its nickname, else its address.
pub fn label(nickname: &str, addr: &str) -> String {
    let n = if nickname.is_empty() { addr } else { nickname };
    n.chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect()
}

/// The dial targets that never became a peer: addresses to probe by themselves (with the
/// router's last error).
pub fn failing_targets(targets: &[TargetStatus]) -> Vec<(String, String)> {
    targets
        .iter()
        .filter_map(|t| match &t.state {
            TargetState::Established { .. } => None,
            TargetState::Connecting => Some((t.addr.clone(), "connecting".into())),
            TargetState::Retrying { last_error, .. } => Some((
                t.addr.clone(),
                format!("the router's dials fail: {last_error}"),
            )),
            TargetState::Failed { reason } => Some((t.addr.clone(), reason.clone())),
        })
        .collect()
}

/// A probe of a target the router fails to dial: adds the router's error to the TCP verdict.
pub fn target_tcp(addr: SocketAddr, router_says: &str, probe: &TcpProbe) -> Check {
    let mut c = peer_tcp(&addr.to_string(), addr, probe);
    c.found = format!("{}; {router_says}", c.found);
    if c.status == Status::Ok && router_says != "connecting" {
        // The port answers us, so the router's trouble is elsewhere (secret, version, ...).
        c.status = Status::Fail;
        c.fix = format!("see `weft status targets` and the router's log for {addr}");
    }
    c
}

/// Parses a peer or target address: `IP:PORT`, or an IP with `default_port`.
pub fn socket_addr(s: &str, default_port: u16) -> Option<SocketAddr> {
    s.parse().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, default_port))
    })
}

/// Parses an IPv4 network with host bits (an interface address).
pub fn ipv4_net(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Net> {
    Ipv4Net::new(addr, prefix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ctx() -> Context {
        Context {
            router: true,
            ipam: true,
            pod_cidr: Some("10.32.0.0/12".parse().unwrap()),
            policy: false,
            own_links: vec!["weft".into(), "weft-tap".into(), "weft-vxlan".into()],
            ports: vec![6783, 6784],
            fastpath_off: None,
        }
    }

    fn peer(state: &str, fastpath: &str, mtu: u32) -> PeerReport {
        PeerReport {
            name: "aa:bb".into(),
            nickname: "h2".into(),
            addr: "10.200.0.12:6783".into(),
            state: state.into(),
            path: "direct".into(),
            mtu,
            rtt_ms: Some(0.25),
            rtt_histogram: None,
            tx_frames: 0,
            tx_bytes: 0,
            tx_datagrams: 0,
            rx_frames: 0,
            rx_bytes: 0,
            rx_datagrams: 0,
            relayed_datagrams: 0,
            drops: BTreeMap::new(),
            encryption: "none".into(),
            fastpath: fastpath.into(),
            key_epoch: None,
            rekeys: 0,
            secret: None,
            key_age_secs: None,
            clock_offset_ms: None,
        }
    }

    #[test]
    fn kernel_features_by_evidence_and_need() {
        let c = ctx();
        let present = Presence::Present("/sys/module/vxlan".into());
        assert_eq!(kernel(Feature::Vxlan, &present, &c).status, Status::Ok);
        let loadable = Presence::Loadable("modules.dep lists vxlan.ko".into());
        assert_eq!(kernel(Feature::Vxlan, &loadable, &c).status, Status::Ok);
        let absent = Presence::Absent("not in modules.builtin nor modules.dep".into());
        // Missing VXLAN only costs the fast path; missing TUN or bridge breaks everything.
        assert_eq!(kernel(Feature::Vxlan, &absent, &c).status, Status::Warn);
        let tun = kernel(Feature::Tun, &absent, &c);
        assert_eq!(tun.status, Status::Fail);
        assert!(tun.fix.contains("modprobe tun"), "{tun:?}");
        assert_eq!(kernel(Feature::Bridge, &absent, &c).status, Status::Fail);
        // nf_tables: needed by IPAM (masquerade, guard) and policy; without a router, assumed.
        assert_eq!(kernel(Feature::Nftables, &absent, &c).status, Status::Fail);
        let plain = Context {
            ipam: false,
            ..ctx()
        };
        assert_eq!(
            kernel(Feature::Nftables, &absent, &plain).status,
            Status::Warn
        );
        assert_eq!(
            kernel(Feature::Nftables, &absent, &Context::default()).status,
            Status::Fail
        );
        // br_netfilter is never loaded on first use: loadable is missing; fails under policy.
        let br = kernel(Feature::BrNetfilter, &loadable, &c);
        assert_eq!(br.status, Status::Warn);
        assert!(br.fix.contains("modprobe br_netfilter"));
        let policy = Context {
            policy: true,
            ..ctx()
        };
        assert_eq!(
            kernel(Feature::BrNetfilter, &loadable, &policy).status,
            Status::Fail
        );
        let unknown = Presence::Unknown("no /lib/modules".into());
        assert_eq!(kernel(Feature::Tun, &unknown, &c).status, Status::Warn);
        assert_eq!(kernel(Feature::Tun, &unknown, &c).name, "kernel.tun");
        assert_eq!(Feature::Nftables.module(), "nf_tables");
    }

    #[test]
    fn sysctls() {
        assert_eq!(ip_forward(Some("1\n")).status, Status::Ok);
        let off = ip_forward(Some("0\n"));
        assert_eq!(off.status, Status::Fail);
        assert!(off.fix.starts_with("sysctl -w net.ipv4.ip_forward=1"));
        assert_eq!(ip_forward(None).status, Status::Skip);

        let c = ctx();
        let policy = Context {
            policy: true,
            ..ctx()
        };
        assert_eq!(bridge_nf_call_iptables(Some("1"), &c).status, Status::Ok);
        assert_eq!(bridge_nf_call_iptables(Some("0"), &c).status, Status::Warn);
        let off = bridge_nf_call_iptables(Some("0"), &policy);
        assert_eq!(off.status, Status::Fail);
        assert!(off.fix.contains("bridge-nf-call-iptables=1"));
        assert!(off.found.contains("NetworkPolicy"));
        let missing = bridge_nf_call_iptables(None, &policy);
        assert_eq!(missing.status, Status::Fail);
        assert!(missing.fix.starts_with("modprobe br_netfilter"));
        assert_eq!(bridge_nf_call_iptables(None, &c).status, Status::Warn);
    }

    fn file(name: &str, types: &[&str]) -> CniFile {
        CniFile {
            name: name.into(),
            types: Ok(types.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn cni_configuration_order() {
        let c = ctx();
        let d = "/etc/cni/net.d";
        let ours = [file("10-weft.conflist", &["weft-cni", "portmap"])];
        assert_eq!(cni_order(d, Some(&ours), &c).status, Status::Ok);
        // Another network sorting first wins: fail, naming it and how to move it.
        let mut two = vec![
            ours[0].clone(),
            file("05-flannel.conflist", &["flannel", "portmap"]),
        ];
        let f = cni_order(d, Some(&two), &c);
        assert_eq!(f.status, Status::Fail, "{f:?}");
        assert!(f.found.contains("05-flannel.conflist (flannel, portmap)"));
        assert!(f.fix.contains("mv /etc/cni/net.d/05-flannel.conflist"));
        // Sorting after ours is harmless; so is a file that does not parse after ours.
        two[1].name = "99-flannel.conflist".into();
        two.push(CniFile {
            name: "50-broken.conf".into(),
            types: Err("expected value".into()),
        });
        assert_eq!(cni_order(d, Some(&two), &c).status, Status::Ok);
        // One that does not parse before ours fails too (runtimes stop at it or skip it).
        two[2].name = "01-broken.conf".into();
        let f = cni_order(d, Some(&two), &c);
        assert_eq!(f.status, Status::Fail);
        assert!(f.found.contains("does not parse"));
        // No directory, or none of ours: a warning with IPAM, skipped without.
        assert_eq!(cni_order(d, None, &c).status, Status::Warn);
        let plain = Context {
            ipam: false,
            ..ctx()
        };
        assert_eq!(cni_order(d, None, &plain).status, Status::Skip);
        let foreign = [file("10-calico.conflist", &["calico"])];
        assert_eq!(cni_order(d, Some(&foreign), &c).status, Status::Warn);
        assert_eq!(cni_order(d, Some(&foreign), &plain).status, Status::Skip);
    }

    fn link(name: &str, kind: &str, port: Option<u16>, addrs: &[&str]) -> LinkFact {
        LinkFact {
            name: name.into(),
            kind: kind.into(),
            vxlan_port: port,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn devices_of_other_overlays() {
        let c = ctx();
        let ok = [
            link("lo", "", None, &["127.0.0.1/8"]),
            link("eth0", "veth", None, &["10.200.0.11/24"]),
            link("weft", "bridge", None, &["10.32.0.1/12"]),
            link("weft-vxlan", "vxlan", Some(6784), &[]),
            // A VXLAN device of something else on another port, not a known overlay name.
            link("vx0", "vxlan", Some(4789), &[]),
        ];
        let checks = foreign_links(&ok, &c);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].name, "links");
        assert_eq!(checks[0].status, Status::Ok);

        let flannel = link("flannel.1", "vxlan", Some(8472), &["10.244.0.0/32"]);
        let f = foreign_link(&flannel, &c).unwrap();
        assert_eq!(
            (f.name.as_str(), f.status),
            ("links.flannel.1", Status::Warn)
        );
        assert!(f.fix.contains("ip link delete flannel.1"));
        // cni0 holding an address in the pod CIDR collides.
        let cni0 = link("cni0", "bridge", None, &["10.32.200.1/24"]);
        let f = foreign_link(&cni0, &c).unwrap();
        assert_eq!(f.status, Status::Fail, "{f:?}");
        assert!(f.found.contains("10.32.200.1/24"));
        // ...a wider network around the pod CIDR too; outside it only warns.
        let wide = link("cni0", "bridge", None, &["10.0.0.1/8"]);
        assert_eq!(foreign_link(&wide, &c).unwrap().status, Status::Fail);
        let apart = link("cni0", "bridge", None, &["10.88.0.1/16"]);
        assert_eq!(foreign_link(&apart, &c).unwrap().status, Status::Warn);
        // Weave Net's devices and any VXLAN device on our ports fail.
        assert_eq!(
            foreign_link(&link("weave", "bridge", None, &[]), &c)
                .unwrap()
                .status,
            Status::Fail
        );
        let same_port = foreign_link(&link("vx1", "vxlan", Some(6784), &[]), &c).unwrap();
        assert_eq!(same_port.status, Status::Fail);
        assert!(same_port.found.contains("UDP 6784"));
        // Names are matched whole or by their prefix, not by substring.
        assert!(foreign_link(&link("mycni0", "bridge", None, &[]), &c).is_none());
        assert!(foreign_link(&link("cilium_vxlan", "vxlan", Some(8472), &[]), &c).is_some());
        // A router whose own bridge is called cni0 is not foreign to itself.
        let own = Context {
            own_links: vec!["cni0".into()],
            ..ctx()
        };
        assert!(foreign_link(&cni0, &own).is_none());
        let list = foreign_links(&[flannel, cni0], &c);
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn underlay_mtu_against_the_router() {
        assert_eq!(
            underlay_mtu(Some(("eth0", 1500)), 1500, 1436).status,
            Status::Ok
        );
        let lower = underlay_mtu(Some(("eth0", 1400)), 1500, 1436);
        assert_eq!(lower.status, Status::Fail);
        assert!(lower.fix.contains("ip link set eth0 mtu 1500"));
        assert_eq!(
            underlay_mtu(Some(("eth0", 9000)), 1500, 1436).status,
            Status::Warn
        );
        assert_eq!(underlay_mtu(None, 1500, 1436).status, Status::Skip);
    }

    #[test]
    fn pod_ports_above_the_pod_mtu() {
        let ports = |m: &[(&str, u32)]| -> Vec<(String, u32)> {
            m.iter().map(|(n, m)| (n.to_string(), *m)).collect()
        };
        let ok = pod_ports("weft", &ports(&[("vethA", 1436)]), 1436, &ctx());
        assert_eq!(ok.status, Status::Ok, "{ok:?}");
        assert_eq!(pod_ports("weft", &[], 1436, &ctx()).status, Status::Ok);
        let big = ports(&[("vethA", 1436), ("vethB", 9000)]);
        let fast = pod_ports("weft", &big, 1436, &ctx());
        assert_eq!(fast.status, Status::Fail, "{fast:?}");
        assert!(fast.found.contains("vethB (9000)") && !fast.found.contains("vethA"));
        assert!(fast.fix.contains("MTU 1436"));
        let sleeve = Context {
            fastpath_off: Some("off: --no-fastpath".into()),
            ..ctx()
        };
        assert_eq!(pod_ports("weft", &big, 1436, &sleeve).status, Status::Warn);
    }

    #[test]
    fn peer_tcp_probes() {
        let a: SocketAddr = "10.200.0.12:6783".parse().unwrap();
        let ok = peer_tcp(
            "h2",
            a,
            &TcpProbe::Connected(b"WEFT\x01\x00\x01\x00".to_vec()),
        );
        assert_eq!((ok.name.as_str(), ok.status), ("peer.h2.tcp", Status::Ok));
        let other = peer_tcp("h2", a, &TcpProbe::Connected(b"SSH-2.0".to_vec()));
        assert_eq!(other.status, Status::Fail);
        assert!(other.found.contains("does not speak Weft"));
        let dropped = peer_tcp("h2", a, &TcpProbe::TimedOut(Duration::from_secs(2)));
        assert_eq!(dropped.status, Status::Fail);
        assert!(dropped.found.contains("2000 ms"));
        assert!(dropped.fix.contains("tcp dport 6783 accept"));
        assert_eq!(peer_tcp("h2", a, &TcpProbe::Refused).status, Status::Fail);
        assert_eq!(
            peer_tcp("h2", a, &TcpProbe::Error("no route".into())).status,
            Status::Fail
        );
        // A target the router cannot dial although the port answers: the trouble is elsewhere.
        let t = target_tcp(
            a,
            "the router's dials fail: authentication failed",
            &TcpProbe::Connected(b"WEFT\x01\x01\x01\x00".to_vec()),
        );
        assert_eq!(t.status, Status::Fail);
        assert!(t.found.contains("authentication failed"));
        let t = target_tcp(a, "connecting", &TcpProbe::Connected(b"WEFT".to_vec()));
        assert_eq!(t.status, Status::Ok);
        assert_eq!(t.name, "peer.10.200.0.12:6783.tcp");
    }

    #[test]
    fn peer_udp_paths() {
        let ok = peer_udp("h2", &peer("established", "", 1436), 6783);
        assert_eq!(ok.status, Status::Ok);
        assert!(ok.found.contains("0.25 ms"));
        let down = peer_udp("h2", &peer("connected, data path down", "", 1436), 6783);
        assert_eq!(
            (down.name.as_str(), down.status),
            ("peer.h2.udp", Status::Fail)
        );
        assert!(down.fix.contains("udp dport 6783 accept"));
        let mut relayed = peer("reachable", "", 0);
        relayed.path = "via h3".into();
        relayed.addr.clear();
        assert_eq!(peer_udp("h2", &relayed, 6783).status, Status::Warn);
        assert_eq!(
            peer_udp("h2", &peer("unreachable", "", 0), 6783).status,
            Status::Fail
        );
    }

    #[test]
    fn peer_fast_paths() {
        let c = ctx();
        let p = |reason: &str| peer_vxlan("h2", &peer("established", reason, 1436), &c, 6784);
        assert_eq!(p("VXLAN probes answered both ways").status, Status::Ok);
        assert_eq!(
            p("sleeve: probes good, waiting to confirm").status,
            Status::Ok
        );
        let lost = p("sleeve: our VXLAN probes do not arrive");
        assert_eq!(
            (lost.name.as_str(), lost.status),
            ("peer.h2.vxlan", Status::Warn)
        );
        assert!(lost.fix.contains("udp dport 6784 accept"));
        assert_eq!(
            p("sleeve: no VXLAN probe from the peer").status,
            Status::Warn
        );
        assert_eq!(p("sleeve: UDP path not confirmed").status, Status::Skip);
        assert_eq!(
            p("sleeve: the peer reports no fast path").status,
            Status::Skip
        );
        let off = Context {
            fastpath_off: Some("off: encrypted".into()),
            ..ctx()
        };
        let s = peer_vxlan(
            "h2",
            &peer("established", "off: encrypted", 1436),
            &off,
            6784,
        );
        assert_eq!(s.status, Status::Skip);
        assert!(s.found.contains("encrypted"));
    }

    #[test]
    fn peer_mtus() {
        assert_eq!(
            peer_mtu("h2", &peer("established", "", 1436), 1436).status,
            Status::Ok
        );
        let small = peer_mtu("h2", &peer("established", "", 1336), 1436);
        assert_eq!(small.status, Status::Fail);
        assert!(small.fix.contains("--mtu 1336"));
        assert_eq!(
            peer_mtu("h2", &peer("reachable", "", 0), 1436).status,
            Status::Skip
        );
    }

    #[test]
    fn clock_is_judged_by_the_largest_offset() {
        let a = peer("established", "", 1410);
        let mut b = peer("established", "", 1410);
        b.nickname = "h3".into();
        let at = |a: Option<i64>, b: Option<i64>, p: &mut [PeerReport]| {
            p[0].clock_offset_ms = a;
            p[1].clock_offset_ms = b;
            clock(p)
        };
        let mut ps = [a, b];
        assert_eq!(at(None, None, &mut ps).status, Status::Skip);
        assert_eq!(at(Some(3), Some(-40), &mut ps).status, Status::Ok);
        let c = at(Some(3), Some(-5_000), &mut ps);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.found.contains("h3's clock is 5000 ms behind ours"),
            "{}",
            c.found
        );
        let c = at(Some(7_200_000), None, &mut ps);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.found.contains("h2's clock is 7200000 ms ahead of"),
            "{}",
            c.found
        );
    }

    #[test]
    fn labels_targets_and_addresses() {
        assert_eq!(label("h2", "10.0.0.2:6783"), "h2");
        assert_eq!(label("", "10.0.0.2:6783"), "10.0.0.2:6783");
        assert_eq!(label("my host", ""), "my_host");
        assert_eq!(
            socket_addr("10.0.0.2", 6783),
            Some("10.0.0.2:6783".parse().unwrap())
        );
        assert_eq!(
            socket_addr("10.0.0.2:7000", 6783),
            Some("10.0.0.2:7000".parse().unwrap())
        );
        assert_eq!(socket_addr("nope", 6783), None);
        let targets = vec![
            TargetStatus {
                addr: "10.0.0.2:6783".into(),
                state: TargetState::Established { peer: "x".into() },
                failures: 0,
                discovered: false,
            },
            TargetStatus {
                addr: "10.0.0.3:6783".into(),
                state: TargetState::Retrying {
                    next_attempt_in_ms: 10,
                    last_error: "timed out".into(),
                },
                failures: 3,
                discovered: false,
            },
        ];
        let f = failing_targets(&targets);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, "10.0.0.3:6783");
        assert!(f[0].1.contains("timed out"));
        assert_eq!(
            ipv4_net("10.32.0.1".parse().unwrap(), 12)
                .unwrap()
                .to_string(),
            "10.32.0.1/12"
        );
    }
}
