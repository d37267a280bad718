//! The CNI operations: ADD, DEL, CHECK, STATUS and GC (VERSION is answered in `main.rs`).
//!
//! What each one changes on the host is listed in `docs/cni.md`.

use crate::config::Config;
use crate::env::Env;
use crate::error::{
    Failure, CHECK_MISMATCH, INVALID_CONFIG, LINK_FAILURE, NOT_AVAILABLE, UNKNOWN_CONTAINER,
};
use crate::netns::{format_mac, host_ns, in_host, set_if6_sysctl, set_if_sysctl, Netns, OrFailure};
use crate::result::{CniResult, Interface, Ip, Route};
use crate::{log, names, router};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};
use weft_api::guard::{GuardRequest, Port};
use weft_api::ipam::{AllocateRequest, Allocation, Attachment};
use weft_netlink::{BridgePortState, InfoKind, Netlink};

/// How long ADD waits for the host end to forward before announcing the pod (the kernel turns a
/// new bridge port on asynchronously; an announcement sent earlier is dropped by the bridge).
const FORWARDING_WAIT: Duration = Duration::from_secs(3);

/// ADD: reserve an address, wire the pod, print the result.
pub fn add(env: &Env, cfg: &Config) -> Result<String, Failure> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?.to_owned();
    let netns_path = env.netns()?;
    // Enter the namespace before reserving anything: a missing or wrong CNI_NETNS, or a name
    // already taken inside it, fails here with nothing to undo.
    let netns = Netns::open(Path::new(netns_path))?;
    let name = ifname.clone();
    let taken = netns.run(move |nl| async move {
        Ok(nl
            .link(&name)
            .await
            .or_link_failure(|| "listing links")?
            .is_some())
    })?;
    if taken {
        return Err(Failure::new(
            LINK_FAILURE,
            format!("an interface {ifname} already exists in {netns_path}"),
        )
        .details("CNI_IFNAME must name a new interface"));
    }
    let attachment = Attachment {
        container_id: container_id.to_owned(),
        ifname: ifname.clone(),
    };
    let alloc = router::allocate(
        &cfg.state_dir,
        &AllocateRequest {
            attachment: attachment.clone(),
            netns: netns_path.to_owned(),
            pod: env.pod()?,
        },
    )?;
    let six = alloc
        .ipv6
        .as_ref()
        .map(|s| format!(" and {}/{} via {}", s.address, s.prefix_len, s.gateway))
        .unwrap_or_default();
    log::line(&format!(
        "ADD {container_id}/{ifname}: {}/{} via {}{six} on {} (mtu {})",
        alloc.address, alloc.prefix_len, alloc.gateway, alloc.bridge, alloc.mtu
    ));
    let mtu = cfg.mtu.unwrap_or(alloc.mtu);
    let host_if = names::host_ifname(container_id, &ifname);
    // The port guard goes in after the pair exists (the pod's MAC is known) and before the host
    // end joins the bridge, so nothing the pod sends passes unchecked.
    let guard = |pod_mac: &str| {
        router::guard(
            &cfg.state_dir,
            &GuardRequest {
                attachment: attachment.clone(),
                port: Port {
                    name: host_if.clone(),
                    mac: pod_mac.to_owned(),
                },
            },
        )
        .map(|_| ())
    };
    let wired = wire(&netns, &ifname, &host_if, &alloc, mtu, guard);
    let (host_mac, pod_mac) = match wired {
        Ok(macs) => macs,
        Err(e) => {
            log::line(&format!("ADD {container_id}/{ifname} failed, undoing: {e}"));
            unwire(&netns, &ifname, &host_if);
            if let Err(r) = router::release(&cfg.state_dir, &attachment) {
                log::line(&format!("releasing after a failed ADD: {r}"));
            }
            return Err(e);
        }
    };
    let gateway = alloc.gateway.to_string();
    let mut ips = vec![Ip {
        address: format!("{}/{}", alloc.address, alloc.prefix_len),
        gateway: Some(gateway.clone()),
        interface: Some(1),
        ..Ip::default()
    }];
    let mut routes = vec![Route {
        dst: default_dst(alloc.gateway).into(),
        gw: Some(gateway),
        ..Route::default()
    }];
    if let Some(s) = &alloc.ipv6 {
        ips.push(Ip {
            address: format!("{}/{}", s.address, s.prefix_len),
            gateway: Some(s.gateway.to_string()),
            interface: Some(1),
            ..Ip::default()
        });
        routes.push(Route {
            dst: default_dst(IpAddr::V6(s.gateway)).into(),
            gw: Some(s.gateway.to_string()),
            ..Route::default()
        });
    }
    let ours = CniResult {
        interfaces: vec![
            Interface {
                name: host_if,
                mac: Some(host_mac),
                mtu: Some(mtu),
                ..Interface::default()
            },
            Interface {
                name: ifname,
                mac: Some(pod_mac),
                mtu: Some(mtu),
                sandbox: Some(netns_path.to_owned()),
                ..Interface::default()
            },
        ],
        ips,
        routes,
        dns: None,
    };
    // weft-cni is normally first in a chain; behind another plugin, its result comes first and
    // ours is appended.
    let mut result = match cfg.prev_result.clone() {
        Some(mut prev) => {
            prev.append(ours);
            prev
        }
        None => ours,
    };
    if result.dns.is_none() {
        result.dns = cfg.dns.clone();
    }
    Ok(result.to_value(cfg.version).to_string())
}

/// Creates and configures the veth pair; returns the MACs of the host and pod ends. `guard` is
/// called with the pod's MAC once the pair exists, before the host end joins the bridge.
fn wire(
    netns: &Netns,
    ifname: &str,
    host_if: &str,
    alloc: &Allocation,
    mtu: u32,
    guard: impl FnOnce(&str) -> Result<(), Failure>,
) -> Result<(String, String), Failure> {
    // Host: the bridge must exist (the router made it); a host end with our name is a leftover
    // of this same attachment (a DEL that never came), and goes.
    let bridge = alloc.bridge.clone();
    let stale = host_if.to_owned();
    let bridge_index = in_host(|nl| async move {
        let links = nl.links().await.or_link_failure(|| "listing links")?;
        let br = links
            .iter()
            .find(|l| l.name == bridge && l.kind == Some(InfoKind::Bridge))
            .ok_or_else(|| {
                Failure::new(LINK_FAILURE, format!("the bridge {bridge} does not exist"))
                    .details("the weft router creates it; is it running on this host?")
            })?;
        if let Some(old) = links.iter().find(|l| l.name == stale) {
            log::line(&format!("deleting the leftover host end {stale}"));
            nl.delete_link_if_present(old.index)
                .await
                .or_link_failure(|| format!("deleting {stale}"))?;
        }
        Ok(br.index)
    })?;

    // Pod: the pair (its host end created straight in the host namespace), the address, the
    // kernel's gratuitous ARP on address changes (arp_notify), and the IPv6 link-local address
    // derived from the MAC (the one the port guard allows), all before the link goes up. On a
    // dual-stack cluster also the IPv6 address, usable at once: no duplicate address detection
    // on the interface (accept_dad 0; the cluster's IPAM made the address unique) and the
    // address added with nodad; and the unsolicited neighbour advertisement on address changes
    // (ndisc_notify), IPv6's gratuitous ARP.
    let host_ns_file = host_ns()?;
    let (name, peer, addr, plen) = (
        ifname.to_owned(),
        host_if.to_owned(),
        alloc.address,
        alloc.prefix_len,
    );
    let six = alloc.ipv6.as_ref().map(|s| (s.address, s.prefix_len));
    let (pod_index, pod_mac) = netns.run(move |nl| async move {
        nl.create_veth(&name, &peer, mtu, &host_ns_file)
            .await
            .or_link_failure(|| format!("creating the veth pair {name}/{peer}"))?;
        let link = nl
            .link(&name)
            .await
            .or_link_failure(|| "listing links")?
            .ok_or_else(|| {
                Failure::new(LINK_FAILURE, format!("{name} vanished after its creation"))
            })?;
        set_if_sysctl(&name, "arp_notify", "1")?;
        // Without IPv6 in the pod there is no such file, and nothing to derive.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/addr_gen_mode"), "0");
        if addr.is_ipv6() || six.is_some() {
            set_if6_sysctl(&name, "disable_ipv6", "0")?;
            set_if6_sysctl(&name, "accept_dad", "0")?;
            set_if6_sysctl(&name, "ndisc_notify", "1")?;
        }
        nl.add_address(link.index, addr, plen)
            .await
            .or_link_failure(|| format!("adding {addr}/{plen} to {name}"))?;
        if let Some((a6, p6)) = six {
            nl.add_address(link.index, IpAddr::V6(a6), p6)
                .await
                .or_link_failure(|| format!("adding {a6}/{p6} to {name}"))?;
        }
        let mac = link
            .mac
            .ok_or_else(|| Failure::new(LINK_FAILURE, format!("{name} has no MAC address")))?;
        Ok((link.index, format_mac(&mac)))
    })?;
    guard(&pod_mac)?;

    // Host: the host end joins the bridge, goes up, and gets hairpin mode.
    let peer = host_if.to_owned();
    let host_mac = in_host(|nl| async move {
        let link = nl
            .link(&peer)
            .await
            .or_link_failure(|| "listing links")?
            .ok_or_else(|| Failure::new(LINK_FAILURE, format!("the host end {peer} is missing")))?;
        nl.attach(&peer, bridge_index, mtu)
            .await
            .or_link_failure(|| format!("attaching {peer} to the bridge"))?;
        nl.set_port_hairpin(&peer, true)
            .await
            .or_link_failure(|| format!("turning hairpin mode on for {peer}"))?;
        Ok(link.mac.as_ref().map(format_mac).unwrap_or_default())
    })?;

    // Pod: up, and the default routes.
    let (name, gw) = (ifname.to_owned(), alloc.gateway);
    let gw6 = alloc.ipv6.as_ref().map(|s| s.gateway);
    netns.run(move |nl| async move {
        nl.set_up(pod_index)
            .await
            .or_link_failure(|| format!("bringing {name} up"))?;
        nl.add_default_route(pod_index, gw)
            .await
            .or_link_failure(|| format!("adding the default route via {gw} on {name}"))?;
        if let Some(gw6) = gw6 {
            nl.add_default_route(pod_index, IpAddr::V6(gw6))
                .await
                .or_link_failure(|| format!("adding the IPv6 default route via {gw6} on {name}"))?;
        }
        Ok(())
    })?;

    // Host: wait until the bridge forwards on the host end...
    let peer = host_if.to_owned();
    let forwarding = in_host(|nl| async move {
        let deadline = Instant::now() + FORWARDING_WAIT;
        loop {
            let link = nl.link(&peer).await.or_link_failure(|| "listing links")?;
            if link.is_some_and(|l| l.oper_up && l.port_state == Some(BridgePortState::Forwarding))
            {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })?;
    if !forwarding {
        log::line(&format!(
            "{host_if} does not forward after {FORWARDING_WAIT:?}; announcing anyway"
        ));
    }

    // ...then announce the pod: setting its MAC address (to the same value) makes the kernel
    // send a gratuitous ARP, because arp_notify is on. The router and the other hosts learn
    // where the pod's MAC now lives.
    let name = ifname.to_owned();
    let pod_mac = netns.run(move |nl| async move {
        let link = nl
            .link(&name)
            .await
            .or_link_failure(|| "listing links")?
            .ok_or_else(|| {
                Failure::new(LINK_FAILURE, format!("{name} vanished during its setup"))
            })?;
        let mac = link
            .mac
            .ok_or_else(|| Failure::new(LINK_FAILURE, format!("{name} has no MAC address")))?;
        nl.set_mac(link.index, mac)
            .await
            .or_link_failure(|| format!("setting the MAC address of {name}"))?;
        Ok(format_mac(&mac))
    })?;
    Ok((host_mac, pod_mac))
}

/// Removes what [`wire`] may have created: deleting the host end removes the pair; the pod end
/// is deleted too in case the pair was split.
fn unwire(netns: &Netns, ifname: &str, host_if: &str) {
    let peer = host_if.to_owned();
    let host = in_host(|nl| async move {
        if let Some(l) = nl.link(&peer).await.or_link_failure(|| "listing links")? {
            nl.delete_link_if_present(l.index)
                .await
                .or_link_failure(|| format!("deleting {peer}"))?;
        }
        Ok(())
    });
    if let Err(e) = host {
        log::line(&format!("undoing ADD: {e}"));
    }
    let name = ifname.to_owned();
    let pod = netns.run(move |nl| async move {
        if let Some(l) = nl.link(&name).await.or_link_failure(|| "listing links")? {
            if l.kind == Some(InfoKind::Veth) {
                nl.delete_link_if_present(l.index)
                    .await
                    .or_link_failure(|| format!("deleting {name}"))?;
            }
        }
        Ok(())
    });
    if let Err(e) = pod {
        log::line(&format!("undoing ADD: {e}"));
    }
}

/// DEL: remove the pod's interface (or the host end when the namespace is gone) and release the
/// address. Whatever is already gone is fine; repeating DEL is fine.
pub fn del(env: &Env, cfg: &Config) -> Result<(), Failure> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?.to_owned();
    let host_if = names::host_ifname(container_id, &ifname);
    if let Some(path) = env.netns.as_deref() {
        match Netns::open(Path::new(path)) {
            Ok(netns) => {
                let name = ifname.clone();
                let pod = netns.run(move |nl| async move {
                    match nl.link(&name).await.or_link_failure(|| "listing links")? {
                        // Only a veth: CNI_IFNAME is ours, but a stranger's device is not
                        // deleted on a guess.
                        Some(l) if l.kind == Some(InfoKind::Veth) => {
                            nl.delete_link_if_present(l.index)
                                .await
                                .or_link_failure(|| format!("deleting {name}"))?;
                            Ok(true)
                        }
                        _ => Ok(false),
                    }
                });
                match pod {
                    Ok(deleted) => log::line(&format!(
                        "DEL {container_id}/{ifname}: pod interface {}",
                        if deleted { "deleted" } else { "already gone" }
                    )),
                    Err(e) => log::line(&format!("DEL {container_id}/{ifname}: {e}")),
                }
            }
            Err(e) => log::line(&format!("DEL {container_id}/{ifname}: netns gone ({e})")),
        }
    }
    let peer = host_if.clone();
    in_host(|nl| async move {
        if let Some(l) = nl.link(&peer).await.or_link_failure(|| "listing links")? {
            nl.delete_link_if_present(l.index)
                .await
                .or_link_failure(|| format!("deleting {peer}"))?;
        }
        Ok(())
    })?;
    let answer = router::release(
        &cfg.state_dir,
        &Attachment {
            container_id: container_id.to_owned(),
            ifname: ifname.clone(),
        },
    )?;
    log::line(&format!(
        "DEL {container_id}/{ifname}: reservation {}",
        if answer.released {
            "released"
        } else {
            "already gone"
        }
    ));
    Ok(())
}

/// CHECK: the attachment is as ADD left it, as the router and `prevResult` describe it.
pub fn check(env: &Env, cfg: &Config) -> Result<(), Failure> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?.to_owned();
    let netns_path = env.netns()?;
    let prev = cfg.prev_result.as_ref().ok_or_else(|| {
        Failure::new(INVALID_CONFIG, "CHECK needs a prevResult")
            .details("the runtime passes the result of the ADD as prevResult")
    })?;
    let report = router::report(&cfg.state_dir)?;
    let held = report
        .reservations
        .iter()
        .find(|r| r.attachment.container_id == container_id && r.attachment.ifname == ifname)
        .ok_or_else(|| {
            Failure::new(
                UNKNOWN_CONTAINER,
                format!("the router holds no address for {container_id}/{ifname}"),
            )
        })?;
    let address = held.address;
    let prefix_len = prefix_len_of(&report.cidr).unwrap_or(32);
    let expected = format!("{address}/{prefix_len}");

    // prevResult: our interface in this sandbox, with the router's address.
    let index = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.as_deref() == Some(netns_path))
        .ok_or_else(|| {
            Failure::new(
                CHECK_MISMATCH,
                format!("prevResult lists no interface {ifname} in {netns_path}"),
            )
        })? as u64;
    let ips: Vec<&Ip> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(index))
        .collect();
    let ip = ips
        .iter()
        .find(|ip| ip.address == expected)
        .ok_or_else(|| {
            let listed: Vec<&str> = ips.iter().map(|ip| ip.address.as_str()).collect();
            Failure::new(
                CHECK_MISMATCH,
                format!("prevResult gives {ifname} {listed:?}, the router holds {expected}"),
            )
        })?;
    let gateway: Option<IpAddr> = ip.gateway.as_deref().and_then(|g| g.parse().ok());
    // On a dual-stack cluster the IPv6 address too.
    let six: Option<(Ipv6Addr, u8, Option<Ipv6Addr>)> = match held.ipv6 {
        None => None,
        Some(a6) => {
            let p6 = prefix_len_of(&report.cidr6).unwrap_or(128);
            let want = format!("{a6}/{p6}");
            let ip6 = ips.iter().find(|ip| ip.address == want).ok_or_else(|| {
                let listed: Vec<&str> = ips.iter().map(|ip| ip.address.as_str()).collect();
                Failure::new(
                    CHECK_MISMATCH,
                    format!("prevResult gives {ifname} {listed:?}, the router holds {want} too"),
                )
            })?;
            Some((a6, p6, ip6.gateway.as_deref().and_then(|g| g.parse().ok())))
        }
    };

    // The pod's namespace: the interface, its address, the default route.
    let netns = Netns::open(Path::new(netns_path))?;
    let name = ifname.clone();
    netns.run(move |nl: Netlink| async move {
        let link = nl
            .link(&name)
            .await
            .or_link_failure(|| "listing links")?
            .ok_or_else(|| {
                Failure::new(
                    UNKNOWN_CONTAINER,
                    format!("there is no interface {name} in the pod"),
                )
            })?;
        if !link.up {
            return Err(Failure::new(CHECK_MISMATCH, format!("{name} is down")));
        }
        let addrs = nl
            .link_addresses(link.index)
            .await
            .or_link_failure(|| "listing addresses")?;
        let want = std::iter::once((address, prefix_len))
            .chain(six.map(|(a6, p6, _)| (IpAddr::V6(a6), p6)));
        for (a, p) in want {
            if !addrs.contains(&(a, p)) {
                return Err(
                    Failure::new(CHECK_MISMATCH, format!("{name} does not have {a}/{p}"))
                        .details(format!("it has {addrs:?}")),
                );
            }
        }
        if let Some((_, _, gw6)) = six {
            let routes = nl
                .default_routes6()
                .await
                .or_link_failure(|| "listing IPv6 routes")?;
            let ok = routes
                .iter()
                .any(|(gw, oif)| *oif == Some(link.index) && (gw6.is_none() || *gw == gw6));
            if !ok {
                return Err(Failure::new(
                    CHECK_MISMATCH,
                    format!(
                        "the pod has no IPv6 default route via {} on {name}",
                        gw6.map_or("its gateway".to_owned(), |g| g.to_string())
                    ),
                ));
            }
        }
        let ok = match address {
            IpAddr::V4(_) => {
                let routes = nl
                    .default_routes()
                    .await
                    .or_link_failure(|| "listing routes")?;
                routes.iter().any(|r| {
                    r.oif == Some(link.index)
                        && (gateway.is_none() || r.gateway.map(IpAddr::V4) == gateway)
                })
            }
            IpAddr::V6(_) => {
                let routes = nl
                    .default_routes6()
                    .await
                    .or_link_failure(|| "listing IPv6 routes")?;
                routes.iter().any(|(gw, oif)| {
                    *oif == Some(link.index) && (gateway.is_none() || gw.map(IpAddr::V6) == gateway)
                })
            }
        };
        if !ok {
            return Err(Failure::new(
                CHECK_MISMATCH,
                format!(
                    "the pod has no default route via {} on {name}",
                    gateway.map_or("its gateway".to_owned(), |g| g.to_string())
                ),
            ));
        }
        Ok(())
    })?;

    // The host end, on the bridge.
    let host_if = names::host_ifname(container_id, &ifname);
    let bridge = report.bridge.clone();
    in_host(|nl| async move {
        let links = nl.links().await.or_link_failure(|| "listing links")?;
        let host = links.iter().find(|l| l.name == host_if).ok_or_else(|| {
            Failure::new(CHECK_MISMATCH, format!("the host end {host_if} is missing"))
        })?;
        let on_bridge = links
            .iter()
            .any(|b| b.name == bridge && Some(b.index) == host.controller);
        if !on_bridge {
            return Err(Failure::new(
                CHECK_MISMATCH,
                format!("the host end {host_if} is not a port of the bridge {bridge}"),
            ));
        }
        Ok(())
    })
}

/// The default route's destination in `gw`'s family.
fn default_dst(gw: IpAddr) -> &'static str {
    if gw.is_ipv6() {
        "::/0"
    } else {
        "0.0.0.0/0"
    }
}

/// `N` of `A.B.C.D/N` (at most 32) or of an IPv6 `ADDR/N` (at most 128).
fn prefix_len_of(cidr: &str) -> Option<u8> {
    let (a, n) = cidr.split_once('/')?;
    let most = if a.contains(':') { 128 } else { 32 };
    n.parse().ok().filter(|n| *n <= most)
}

/// STATUS: whether the router can serve an ADD now.
pub fn status(cfg: &Config) -> Result<(), Failure> {
    match router::report(&cfg.state_dir) {
        Ok(r) if r.ready => Ok(()),
        Ok(r) => Err(Failure::new(
            NOT_AVAILABLE,
            format!(
                "the weft router cannot hand out addresses: {}",
                if r.reason.is_empty() {
                    "not ready"
                } else {
                    r.reason.as_str()
                }
            ),
        )),
        Err(f) => Err(Failure::new(NOT_AVAILABLE, f.msg).details(f.details)),
    }
}

/// GC: release every reservation not in `cni.dev/valid-attachments`, and delete the host ends on
/// the bridge that belong to no valid attachment.
pub fn gc(cfg: &Config) -> Result<(), Failure> {
    let valid = cfg.valid_attachments.clone().ok_or_else(|| {
        Failure::new(INVALID_CONFIG, "GC needs cni.dev/valid-attachments")
            .details("without the list every attachment would look stale")
    })?;
    let keep_names: BTreeSet<String> = valid
        .iter()
        .map(|a| names::host_ifname(&a.container_id, &a.ifname))
        .collect();
    let answer = router::gc(&cfg.state_dir, valid)?;
    for r in &answer.released {
        log::line(&format!(
            "GC released {} of {}/{}",
            r.address, r.attachment.container_id, r.attachment.ifname
        ));
    }
    let bridge = router::report(&cfg.state_dir)?.bridge;
    in_host(|nl| async move {
        let links = nl.links().await.or_link_failure(|| "listing links")?;
        let Some(br) = links.iter().find(|l| l.name == bridge) else {
            return Ok(());
        };
        for l in &links {
            if l.controller == Some(br.index)
                && names::is_host_ifname(&l.name)
                && !keep_names.contains(&l.name)
            {
                log::line(&format!("GC deletes the stale host end {}", l.name));
                nl.delete_link_if_present(l.index)
                    .await
                    .or_link_failure(|| format!("deleting {}", l.name))?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_lengths() {
        assert_eq!(prefix_len_of("10.32.0.0/12"), Some(12));
        assert_eq!(prefix_len_of("10.32.0.0/33"), None);
        assert_eq!(prefix_len_of("fd10:32::/48"), Some(48));
        assert_eq!(prefix_len_of("fd10:32::/129"), None);
        assert_eq!(prefix_len_of(""), None);
    }
}
