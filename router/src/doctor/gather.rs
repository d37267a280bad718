//! The thin, reading half of `weft doctor`: files under /proc and /sys (read in the caller's
//! network namespace), the module lists of the running kernel, the CNI configuration directory,
//! the links of this namespace (netlink dumps), the local router's status, and TCP probes of the
//! peers. It creates nothing, writes nothing and loads no module: kernel features are judged by
//! evidence (`/proc/modules`, `/sys/module/<m>`, `modules.builtin`, `modules.dep`, `/proc/misc`,
//! links of that kind, `nft list tables`), never by creating a device. Everything is read under
//! a root path so that the tests can point it at a made-up tree.

use super::judge::{CniFile, Feature, LinkFact, Presence, TcpProbe};
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Reads a file under `root` (`rel` is absolute, e.g. `/proc/sys/net/ipv4/ip_forward`).
pub fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel.trim_start_matches('/'))).ok()
}

fn exists(root: &Path, rel: &str) -> bool {
    root.join(rel.trim_start_matches('/')).exists()
}

/// Whether a module list (`modules.builtin`, `modules.dep`) names `module` (`kernel/.../m.ko`,
/// possibly compressed: `m.ko.xz`, `m.ko.zst`).
fn lists(text: &str, module: &str) -> bool {
    let want = format!("/{module}.ko");
    text.lines().any(|l| {
        let path = l.split(':').next().unwrap_or_default().trim();
        path.find(&want).is_some_and(|at| {
            let rest = &path[at + want.len()..];
            rest.is_empty() || rest.starts_with('.')
        }) || path == format!("{module}.ko")
    })
}

/// Evidence of a kernel module under `root`: loaded (`/proc/modules`, `/sys/module/<m>`), built
/// in (`modules.builtin`), or loadable (`modules.dep`) for the running release.
pub fn module(root: &Path, module: &str) -> Presence {
    if read(root, "/proc/modules")
        .is_some_and(|m| m.lines().any(|l| l.split(' ').next() == Some(module)))
    {
        return Presence::Present(format!("{module} loaded (/proc/modules)"));
    }
    if exists(root, &format!("/sys/module/{module}")) {
        return Presence::Present(format!("/sys/module/{module}"));
    }
    let release = read(root, "/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_default();
    let dir = format!("/lib/modules/{release}");
    if read(root, &format!("{dir}/modules.builtin")).is_some_and(|t| lists(&t, module)) {
        return Presence::Present(format!("{module} built in ({dir}/modules.builtin)"));
    }
    match read(root, &format!("{dir}/modules.dep")) {
        Some(t) if lists(&t, module) => {
            Presence::Loadable(format!("{dir}/modules.dep lists {module}.ko"))
        }
        Some(_) => Presence::Absent(format!(
            "not loaded, not in {dir}/modules.builtin nor modules.dep"
        )),
        None => Presence::Unknown(format!("no {dir}/modules.dep")),
    }
}

/// Evidence of `feature` under `root`, with the kinds of the links of this namespace
/// (`link_kinds`) as extra proof for bridge and VXLAN.
pub fn feature(root: &Path, feature: Feature, link_kinds: &[String]) -> Presence {
    let has_kind = |k: &str| link_kinds.iter().any(|l| l == k);
    match feature {
        Feature::Tun => {
            let misc = read(root, "/proc/misc").is_some_and(|m| {
                m.lines()
                    .any(|l| l.split_whitespace().nth(1) == Some("tun"))
            });
            let dev = exists(root, "/dev/net/tun");
            match (misc, dev) {
                (true, true) => {
                    Presence::Present("/proc/misc lists tun, /dev/net/tun exists".into())
                }
                (_, false) => Presence::Absent("no /dev/net/tun".into()),
                (false, true) => module(root, "tun"),
            }
        }
        Feature::Bridge | Feature::Vxlan if has_kind(feature.name()) => Presence::Present(format!(
            "a {} link exists in this namespace",
            feature.name()
        )),
        Feature::BrNetfilter if exists(root, "/proc/sys/net/bridge/bridge-nf-call-iptables") => {
            Presence::Present("/proc/sys/net/bridge/bridge-nf-call-iptables exists".into())
        }
        Feature::Nftables => match module(root, "nf_tables") {
            p @ Presence::Present(_) => p,
            other if root == Path::new("/") => nft_works().unwrap_or(other),
            other => other,
        },
        f => module(root, f.module()),
    }
}

/// `nft list tables` (read-only) in this namespace: `Some(Present)` when it works (nf_tables is
/// in the kernel, even built in without a trace in /sys/module), `Some(Absent)` when the command
/// is missing, `None` when it failed otherwise (judged by the module lists instead).
fn nft_works() -> Option<Presence> {
    match Command::new("nft").args(["list", "tables"]).output() {
        Ok(o) if o.status.success() => Some(Presence::Present("`nft list tables` works".into())),
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Some(Presence::Absent("the nft command is not installed".into()))
        }
        Err(_) => None,
    }
}

/// The files of a CNI configuration directory a runtime reads (`*.conf`, `*.conflist`,
/// `*.json`), with the plugin types each names; `None` if the directory cannot be read.
pub fn cni_files(dir: &Path) -> Option<Vec<CniFile>> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ext = Path::new(&name)
            .extension()
            .and_then(|x| x.to_str())
            .unwrap_or_default();
        if !matches!(ext, "conf" | "conflist" | "json") || !e.path().is_file() {
            continue;
        }
        let types = std::fs::read_to_string(e.path())
            .map_err(|e| e.to_string())
            .and_then(|t| plugin_types(&t));
        out.push(CniFile { name, types });
    }
    Some(out)
}

/// The plugin types a CNI configuration or configuration list names.
pub fn plugin_types(text: &str) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut types = Vec::new();
    if let Some(t) = v.get("type").and_then(|t| t.as_str()) {
        types.push(t.to_string());
    }
    for p in v
        .get("plugins")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(t) = p.get("type").and_then(|t| t.as_str()) {
            types.push(t.to_string());
        }
    }
    Ok(types)
}

/// A link with what the checks need: kind, VXLAN port, IPv4 addresses, MTU, state.
#[derive(Debug, Clone)]
pub struct Link {
    /// What the foreign-device check judges.
    pub fact: LinkFact,
    /// MTU.
    pub mtu: u32,
    /// Up and not loopback.
    pub up: bool,
    /// Interface index.
    pub index: u32,
    /// The index of the bridge it is a port of.
    pub controller: Option<u32>,
    /// Its addresses, both families.
    pub ips: Vec<IpAddr>,
}

/// The ports of bridge `bridge` other than `skip` (the router's TAP and VXLAN device): the host
/// ends of the pods' veths, with their MTUs.
pub fn bridge_ports(links: &[Link], bridge: &str, skip: &[&str]) -> Vec<(String, u32)> {
    let Some(b) = links.iter().find(|l| l.fact.name == bridge) else {
        return Vec::new();
    };
    links
        .iter()
        .filter(|l| l.controller == Some(b.index) && !skip.contains(&l.fact.name.as_str()))
        .map(|l| (l.fact.name.clone(), l.mtu))
        .collect()
}

/// The links of the caller's network namespace (netlink dumps; nothing is changed).
pub fn links() -> anyhow::Result<Vec<Link>> {
    weft_netlink::block_on(|nl| async move {
        let mut out = Vec::new();
        let all = nl.addresses().await.unwrap_or_default();
        for l in nl.links().await? {
            let kind = l.kind.as_ref().map(|k| k.to_string()).unwrap_or_default();
            let vxlan_port = if kind == "vxlan" {
                nl.vxlan(&l.name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|(_, p)| p)
                    .map(|p| p.port)
            } else {
                None
            };
            let ips: Vec<(IpAddr, u8)> = all
                .iter()
                .filter(|(i, _, _)| *i == l.index)
                .map(|(_, a, p)| (*a, *p))
                .collect();
            let addrs = ips
                .iter()
                .filter_map(|(a, p)| match a {
                    IpAddr::V4(a) => super::judge::ipv4_net(*a, *p),
                    IpAddr::V6(_) => None,
                })
                .collect();
            out.push(Link {
                fact: LinkFact {
                    name: l.name.clone(),
                    kind,
                    vxlan_port,
                    addrs,
                },
                mtu: l.mtu,
                up: l.up && !l.loopback,
                index: l.index,
                controller: l.controller,
                ips: ips.into_iter().map(|(a, _)| a).collect(),
            });
        }
        Ok::<_, anyhow::Error>(out)
    })
}

/// The underlay link of a router listening on `ip`: the link holding the address, or for an
/// unspecified address the up link with the smallest MTU (the router's own rule).
pub fn underlay(links: &[Link], ip: IpAddr) -> Option<(String, u32)> {
    if ip.is_unspecified() {
        return links
            .iter()
            .filter(|l| l.up && l.mtu > 0)
            .min_by_key(|l| l.mtu)
            .map(|l| (l.fact.name.clone(), l.mtu));
    }
    links
        .iter()
        .find(|l| l.ips.contains(&ip))
        .map(|l| (l.fact.name.clone(), l.mtu))
}

/// Connects to `addr` within `timeout` and reads what the other end sends first (up to 8 bytes,
/// within `timeout`), then closes. A Weft router sends its preamble at once; the connection
/// then ends before any handshake, which the peer's router counts as a refused connection.
pub fn tcp_probe(addr: SocketAddr, timeout: Duration) -> TcpProbe {
    let mut s = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            return match e.kind() {
                ErrorKind::ConnectionRefused => TcpProbe::Refused,
                ErrorKind::TimedOut | ErrorKind::WouldBlock => TcpProbe::TimedOut(timeout),
                _ => TcpProbe::Error(e.to_string()),
            }
        }
    };
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    TcpProbe::Connected(buf[..got].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::path::PathBuf;

    /// A made-up root under the temporary directory, removed when dropped.
    struct Root(PathBuf);

    impl Root {
        fn new(tag: &str) -> Root {
            let p = std::env::temp_dir().join(format!(
                "weft-doctor-{tag}-{}-{:x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Root(p)
        }

        fn write(&self, rel: &str, text: &str) {
            let p = self.0.join(rel.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn module_evidence_from_a_made_up_tree() {
        let r = Root::new("mod");
        // No module lists at all: cannot tell.
        assert!(matches!(module(&r.0, "vxlan"), Presence::Unknown(_)));
        r.write("/proc/sys/kernel/osrelease", "6.1.0-test\n");
        r.write(
            "/lib/modules/6.1.0-test/modules.dep",
            "kernel/drivers/net/vxlan/vxlan.ko.xz: kernel/net/ipv4/udp_tunnel.ko.xz\n\
             kernel/net/bridge/br_netfilter.ko: kernel/net/bridge/bridge.ko\n",
        );
        r.write(
            "/lib/modules/6.1.0-test/modules.builtin",
            "kernel/drivers/net/tun.ko\n",
        );
        assert!(matches!(module(&r.0, "vxlan"), Presence::Loadable(_)));
        assert!(matches!(
            module(&r.0, "br_netfilter"),
            Presence::Loadable(_)
        ));
        assert!(matches!(module(&r.0, "tun"), Presence::Present(_)));
        // Not a prefix match: `bridge` is only a dependency here, `vxla` nothing.
        assert!(matches!(module(&r.0, "vxla"), Presence::Absent(_)));
        assert!(matches!(module(&r.0, "nf_tables"), Presence::Absent(_)));
        r.write("/proc/modules", "nf_tables 327680 0 - Live 0x0\n");
        assert!(matches!(module(&r.0, "nf_tables"), Presence::Present(_)));
        std::fs::create_dir_all(r.0.join("sys/module/bridge")).unwrap();
        assert!(matches!(module(&r.0, "bridge"), Presence::Present(_)));
    }

    #[test]
    fn features_use_their_own_evidence() {
        let r = Root::new("feat");
        r.write("/proc/sys/kernel/osrelease", "6.1.0-test\n");
        r.write("/lib/modules/6.1.0-test/modules.dep", "");
        // TUN: /proc/misc and the device node.
        assert!(matches!(
            feature(&r.0, Feature::Tun, &[]),
            Presence::Absent(_)
        ));
        r.write("/proc/misc", "229 fuse\n200 tun\n");
        r.write("/dev/net/tun", "");
        assert!(matches!(
            feature(&r.0, Feature::Tun, &[]),
            Presence::Present(_)
        ));
        // Bridge and VXLAN: a link of that kind is proof.
        assert!(matches!(
            feature(&r.0, Feature::Vxlan, &[]),
            Presence::Absent(_)
        ));
        assert!(matches!(
            feature(&r.0, Feature::Vxlan, &["veth".into(), "vxlan".into()]),
            Presence::Present(_)
        ));
        // br_netfilter: its sysctl in this namespace.
        assert!(matches!(
            feature(&r.0, Feature::BrNetfilter, &[]),
            Presence::Absent(_)
        ));
        r.write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1\n");
        assert!(matches!(
            feature(&r.0, Feature::BrNetfilter, &[]),
            Presence::Present(_)
        ));
        // nf_tables under a made-up root: the module lists only (nft runs only for "/").
        assert!(matches!(
            feature(&r.0, Feature::Nftables, &[]),
            Presence::Absent(_)
        ));
    }

    #[test]
    fn module_lists_match_whole_names() {
        assert!(lists("kernel/net/bridge/bridge.ko:\n", "bridge"));
        assert!(lists("kernel/net/bridge/bridge.ko.zst: x\n", "bridge"));
        assert!(!lists(
            "kernel/net/bridge/br_netfilter.ko: kernel/net/bridge/bridge.ko\n",
            "bridge"
        ));
        assert!(!lists("kernel/net/bridge/bridge.kox:\n", "bridge"));
    }

    #[test]
    fn cni_directory_listing() {
        let r = Root::new("cni");
        r.write(
            "/10-weft.conflist",
            r#"{"cniVersion":"1.0.0","name":"weft","plugins":[{"type":"weft-cni"},{"type":"portmap"}]}"#,
        );
        r.write(
            "/05-bridge.conf",
            r#"{"cniVersion":"0.4.0","name":"b","type":"bridge"}"#,
        );
        r.write("/20-broken.json", "{");
        r.write("/README", "not a configuration");
        r.write("/30-old.conflist.bak", "{}");
        let mut files = cni_files(&r.0).unwrap();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["05-bridge.conf", "10-weft.conflist", "20-broken.json"]
        );
        assert_eq!(files[0].types, Ok(vec!["bridge".to_string()]));
        assert_eq!(
            files[1].types,
            Ok(vec!["weft-cni".to_string(), "portmap".to_string()])
        );
        assert!(files[2].types.is_err());
        assert!(cni_files(&r.0.join("missing")).is_none());
    }

    fn link(name: &str, mtu: u32, up: bool, addr: Option<&str>) -> Link {
        Link {
            fact: LinkFact {
                name: name.into(),
                kind: String::new(),
                vxlan_port: None,
                addrs: addr.into_iter().filter_map(|a| a.parse().ok()).collect(),
            },
            mtu,
            up,
            index: 0,
            controller: None,
            ips: addr
                .into_iter()
                .map(|a| a.split('/').next().unwrap().parse().unwrap())
                .collect(),
        }
    }

    #[test]
    fn bridge_ports_are_the_links_it_controls_but_the_routers_own() {
        let mut links = vec![
            link("weft", 1436, true, None),
            link("weft-tap", 65000, true, None),
            link("weft-vxlan", 1436, true, None),
            link("vethA", 1436, true, None),
            link("vethB", 9000, true, None),
            link("eth0", 1500, true, None),
        ];
        for (i, l) in links.iter_mut().enumerate() {
            l.index = i as u32 + 1;
            l.controller = (1..5).contains(&i).then_some(1);
        }
        assert_eq!(
            bridge_ports(&links, "weft", &["weft-tap", "weft-vxlan"]),
            vec![("vethA".to_string(), 1436), ("vethB".to_string(), 9000)]
        );
        assert!(bridge_ports(&links, "nobridge", &[]).is_empty());
    }

    #[test]
    fn underlay_link_of_the_listen_address() {
        let links = [
            link("lo", 65536, false, Some("127.0.0.1/8")),
            link("eth0", 1400, true, Some("10.200.0.11/24")),
            link("weft", 1436, true, Some("10.32.0.1/12")),
            link("eth1", 9000, true, Some("fd00:200::11/64")),
        ];
        assert_eq!(
            underlay(&links, "fd00:200::11".parse().unwrap()),
            Some(("eth1".into(), 9000))
        );
        assert_eq!(
            underlay(&links, "10.200.0.11".parse().unwrap()),
            Some(("eth0".into(), 1400))
        );
        assert_eq!(underlay(&links, "10.9.9.9".parse().unwrap()), None);
        assert_eq!(
            underlay(&links, "0.0.0.0".parse().unwrap()),
            Some(("eth0".into(), 1400))
        );
    }

    #[test]
    fn tcp_probe_on_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            use std::io::Write;
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"WEFT\x01\x00\x01\x00").unwrap();
        });
        assert_eq!(
            tcp_probe(addr, Duration::from_secs(2)),
            TcpProbe::Connected(b"WEFT\x01\x00\x01\x00".to_vec())
        );
        server.join().unwrap();
        // Nothing listens there any more.
        assert_eq!(tcp_probe(addr, Duration::from_secs(2)), TcpProbe::Refused);
    }
}
