//! The reservations file `<state-dir>/reservations.json`: which address each pod interface
//! holds, loaded at start and written atomically (temporary file, sync, rename).

use super::*;
use anyhow::{Context, Result};
use gossip::ipam::Block;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use weft_api::ipam::{Attachment, PodRef, Reservation};

/// The reservations, as held in memory and on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    map: BTreeMap<Attachment, Reservation>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TableFile {
    /// The pod CIDR the reservations belong to.
    cidr: String,
    reservations: Vec<Reservation>,
}

impl Table {
    /// Every reservation, by attachment.
    pub fn list(&self) -> Vec<Reservation> {
        self.map.values().cloned().collect()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The address of `a`, if it holds one.
    pub fn get(&self, a: &Attachment) -> Option<IpAddr> {
        self.map.get(a).map(|r| r.address)
    }

    /// The whole reservation of `a`.
    pub fn reservation(&self, a: &Attachment) -> Option<&Reservation> {
        self.map.get(a)
    }

    /// Records a reservation (with no guarded port yet); `ipv6` is its dual-stack address.
    pub fn insert(
        &mut self,
        a: Attachment,
        (ip, ipv6): (IpAddr, Option<Ipv6Addr>),
        netns: String,
        pod: Option<PodRef>,
    ) {
        self.restore(Reservation {
            attachment: a,
            address: ip,
            netns,
            port: None,
            pod,
            ipv6,
        });
    }

    /// Sets every reservation's dual-stack IPv6 address to `map` of its address (at start: the
    /// IPv6 pod CIDR may have been added, changed or removed since the file was written).
    pub fn map_ipv6(&mut self, map: impl Fn(IpAddr) -> Option<Ipv6Addr>) {
        for r in self.map.values_mut() {
            r.ipv6 = map(r.address);
        }
    }

    /// Records `r` as it is (port included).
    pub fn restore(&mut self, r: Reservation) {
        self.map.insert(r.attachment.clone(), r);
    }

    /// Drops a reservation; returns it if it existed.
    pub fn remove(&mut self, a: &Attachment) -> Option<Reservation> {
        self.map.remove(a)
    }

    /// The lowest assignable address of `blocks` (lowest block first) that nobody holds.
    pub fn pick(&self, cidr: Block, blocks: &[Block]) -> Option<IpAddr> {
        let used: BTreeSet<IpAddr> = self.map.values().map(|r| r.address).collect();
        let mut blocks = blocks.to_vec();
        blocks.sort();
        for b in blocks {
            // At most one more than the reservations is ever looked at per block (the lowest
            // free address), so an IPv6 /64 costs no more than an IPv4 /24.
            for i in 2..b.size() {
                let Some(ip) = b.nth(i) else { break };
                if assignable(cidr, b, ip) && !used.contains(&ip) {
                    return Some(ip);
                }
            }
        }
        None
    }

    /// Reservations whose address is in none of `blocks`.
    pub fn lost(&self, blocks: &[Block]) -> Vec<Reservation> {
        self.list()
            .into_iter()
            .filter(|r| !blocks.iter().any(|b| b.contains(r.address)))
            .collect()
    }

    /// Reads the table from `path` (empty if the file does not exist). Reservations outside
    /// `cidr` are dropped with a warning (the pod CIDR changed).
    pub fn load(path: &Path, cidr: Block) -> Result<Table> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Table::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let f: TableFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a reservations file", path.display()))?;
        let mut t = Table::default();
        for r in f.reservations {
            if !cidr.contains(r.address) {
                tracing::warn!(
                    "dropping the reservation of {} for {}/{}: it is outside the pod CIDR {cidr} (was {})",
                    r.address,
                    r.attachment.container_id,
                    r.attachment.ifname,
                    f.cidr
                );
                continue;
            }
            t.restore(r);
        }
        Ok(t)
    }

    /// Writes the table to `path` atomically: a temporary file, synced, renamed over it, and
    /// the directory synced.
    pub fn save(&self, path: &Path, cidr: Block) -> Result<()> {
        let f = TableFile {
            cidr: cidr.to_string(),
            reservations: self.list(),
        };
        let text = serde_json::to_string_pretty(&f)?;
        let tmp = path.with_extension("json.tmp");
        let mut file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        drop(file);
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}
