//! The port guard: anti-spoofing on the bridge ports of pods attached by `weft-cni`, enforced in
//! the kernel by Weft's own nftables table `table bridge weft_guard` ([`rules`] writes it).
//!
//! A guarded port accepts only what its pod may send: the pod's MAC as Ethernet source, its
//! addresses as IP source and ARP/NDP sender, no router advertisements or redirects, no DHCP
//! server messages, no multicast source MAC, only IPv4, ARP and IPv6. The bridge drops the rest
//! at prerouting, before it forwards to another pod, the TAP port (the sleeve) or the VXLAN
//! device (the fast path), and counts the drop per port and per reason.
//!
//! The ports come from the reservations ([`crate::ipam`]): `weft-cni` registers the host end and
//! the pod's MAC (`POST /v1/ports/guard`) before the host end joins the bridge; releasing the
//! reservation removes the guard. A port change adds or deletes set elements in one `nft -f`
//! transaction; at start the table is reconciled from the reservations file without being
//! flushed (counters of remaining ports keep their values), and `weft leave` removes it.
//! Ports without a reservation (the TAP port, the VXLAN device, ports attached by hand) pass.
//!
//! The same table limits what a guarded port floods: frames to broadcast and multicast
//! destinations beyond `--flood-limit` a second ([`rules::FloodLimit`]) are dropped for the
//! reason `flood_limit`, in the kernel, so the limit holds on the sleeve and the fast path alike.

pub mod rules;

use crate::ipam::nft;
use anyhow::{Context, Result};
use rules::{FloodLimit, PortRules};
use std::collections::BTreeMap;
use std::sync::Mutex;
use weft_api::guard::{GuardReport, GuardedPort};
use weft_api::ipam::Reservation;

/// Packets and bytes of one named counter.
pub type Count = (u64, u64);

/// The guard's view of its table: whether the last change worked, and the counters last read.
#[derive(Debug, Default)]
pub struct Guard {
    /// `None` when the last change worked, else what failed.
    failed: Mutex<Option<String>>,
    /// Counter name -> (packets, bytes), as last read.
    counters: Mutex<BTreeMap<String, Count>>,
    /// The flood limit of every guarded port (`None`: no limit).
    flood_limit: Option<FloodLimit>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The guard entry of a reservation, if its port was registered (and is well formed).
pub fn port_rules(r: &Reservation) -> Option<PortRules> {
    let p = r.port.as_ref()?;
    let mac = rules::parse_mac(&p.mac)?;
    rules::valid_port_name(&p.name).then(|| {
        let v4: Vec<std::net::Ipv4Addr> = (r.addresses().into_iter())
            .filter_map(|a| match a {
                std::net::IpAddr::V4(x) => Some(x),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        let mut rules = PortRules::new(&p.name, mac, &v4);
        rules
            .ipv6
            .extend(r.addresses().into_iter().filter_map(|a| match a {
                std::net::IpAddr::V6(x) => Some(x),
                std::net::IpAddr::V4(_) => None,
            }));
        rules
    })
}

/// Runs `script` with `nft -f -` off the async threads.
async fn run(script: String) -> Result<()> {
    tokio::task::spawn_blocking(move || nft(&script)).await?
}

/// Reads the table's named counters (empty when there is no table).
async fn read_counters() -> Result<BTreeMap<String, Count>> {
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new("nft")
            .args(["-j", "list", "counters", "table", "bridge", rules::TABLE])
            .output()
    })
    .await?
    .context("running nft (is nftables installed?)")?;
    if !out.status.success() {
        return Ok(BTreeMap::new());
    }
    parse_counters(&String::from_utf8_lossy(&out.stdout))
}

/// The named counters in the output of `nft -j list counters`.
pub fn parse_counters(json: &str) -> Result<BTreeMap<String, Count>> {
    let v: serde_json::Value = serde_json::from_str(json).context("nft printed no JSON")?;
    let mut out = BTreeMap::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let c = &item["counter"];
        if let Some(name) = c["name"].as_str() {
            let n = |k: &str| c[k].as_u64().unwrap_or(0);
            out.insert(name.to_owned(), (n("packets"), n("bytes")));
        }
    }
    Ok(out)
}

impl Guard {
    /// A guard that has not touched nftables yet, limiting floods to `flood_limit`.
    pub fn new(flood_limit: Option<FloodLimit>) -> Guard {
        Guard {
            flood_limit,
            ..Guard::default()
        }
    }

    fn outcome(&self, r: Result<()>, what: &str) -> Result<()> {
        match &r {
            Ok(()) => *lock(&self.failed) = None,
            Err(e) => *lock(&self.failed) = Some(format!("{what}: {e:#}")),
        }
        r.with_context(|| format!("{what} (nftables table bridge {})", rules::TABLE))
    }

    /// Makes the table guard exactly `ports`, keeping the counters of those that stay; when that
    /// fails (a table of another layout), replaces the table.
    pub async fn reconcile(&self, ports: &[PortRules]) -> Result<()> {
        let existing: Vec<String> = read_counters().await?.into_keys().collect();
        let r = match run(rules::reconcile_script(ports, &existing, self.flood_limit)).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!("reconciling the port guard failed ({e:#}); replacing its table");
                run(rules::replace_script(ports, self.flood_limit)).await
            }
        };
        self.outcome(r, "reconciling the port guard")?;
        tracing::info!(ports = ports.len(), "port guard on");
        Ok(())
    }

    /// Guards `new`, replacing `old`. On failure the caller reconciles.
    pub async fn add(&self, new: &PortRules, old: Option<&PortRules>) -> Result<()> {
        let r = run(rules::add_script(new, old)).await;
        self.outcome(r, &format!("guarding {}", new.name))
    }

    /// Stops guarding `p`. On failure the caller reconciles.
    pub async fn remove(&self, p: &PortRules) -> Result<()> {
        let r = run(rules::remove_script(p)).await;
        self.outcome(r, &format!("removing the guard of {}", p.name))
    }

    /// Removes the table (`weft leave`).
    pub async fn remove_table(&self) -> Result<()> {
        let r = run(rules::remove_table_script()).await;
        lock(&self.counters).clear();
        self.outcome(r, "removing the port guard")
    }

    /// Reads the counters again (for a status report).
    pub async fn refresh(&self) {
        match read_counters().await {
            Ok(c) => *lock(&self.counters) = c,
            Err(e) => tracing::debug!("reading the port guard's counters: {e:#}"),
        }
    }

    /// The status section for `reservations`, with the counters last read.
    pub fn report(&self, reservations: &[Reservation]) -> GuardReport {
        let counters = lock(&self.counters);
        let ports = reservations
            .iter()
            .filter_map(|r| {
                let rules = port_rules(r)?;
                let (packets, bytes) = counters.get(&rules.counter()).copied().unwrap_or_default();
                Some(GuardedPort {
                    attachment: r.attachment.clone(),
                    port: r.port.clone()?,
                    address: r.address,
                    ipv6: r.ipv6,
                    dropped_packets: packets,
                    dropped_bytes: bytes,
                })
            })
            .collect();
        let drops = rules::REASONS
            .iter()
            .map(|(r, _)| {
                let n = counters.get(&format!("reason_{r}")).map_or(0, |c| c.0);
                ((*r).to_owned(), n)
            })
            .collect();
        GuardReport {
            state: lock(&self.failed).clone().unwrap_or_else(|| "on".into()),
            ports,
            drops,
            flood_limit_pps: self.flood_limit.map_or(0, |l| l.pps),
            flood_limit_burst: self.flood_limit.map_or(0, |l| l.burst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"counter": {"family": "bridge", "name": "reason_source_mac", "table": "weft_guard", "handle": 6, "packets": 3, "bytes": 180}},
            {"counter": {"family": "bridge", "name": "port_vw0011223344", "table": "weft_guard", "handle": 7, "packets": 5, "bytes": 300}}]}"#;
        let c = parse_counters(json).unwrap();
        assert_eq!(c["reason_source_mac"], (3, 180));
        assert_eq!(c["port_vw0011223344"], (5, 300));
        assert!(parse_counters("nope").is_err());
    }

    #[test]
    fn only_registered_well_formed_ports_are_guarded() {
        use weft_api::guard::Port;
        use weft_api::ipam::Attachment;
        let mut r = Reservation {
            attachment: Attachment {
                container_id: "c".into(),
                ifname: "eth0".into(),
            },
            address: "10.32.0.2".parse().unwrap(),
            netns: String::new(),
            port: None,
            pod: None,
            ipv6: None,
        };
        assert_eq!(port_rules(&r), None);
        r.port = Some(Port {
            name: "vw0011223344".into(),
            mac: "02:00:00:00:00:01".into(),
        });
        let p = port_rules(&r).unwrap();
        assert_eq!(p.ipv4, vec![r.address]);
        assert_eq!(
            p.ipv6,
            vec!["fe80::ff:fe00:1".parse::<std::net::Ipv6Addr>().unwrap()]
        );
        // On a dual-stack cluster the pod's IPv6 address is allowed too.
        r.ipv6 = Some("fd10:32::2".parse().unwrap());
        let p = port_rules(&r).unwrap();
        assert_eq!(
            p.ipv6,
            ["fe80::ff:fe00:1", "fd10:32::2"].map(|a| a.parse::<std::net::Ipv6Addr>().unwrap())
        );
        r.port.as_mut().unwrap().name = "bad\"name".into();
        assert_eq!(port_rules(&r), None);
    }
}
