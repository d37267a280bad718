//! The fabric: the peers this host can reach, the direct neighbour that leads to each, the
//! broadcast trees, and the neighbours by the address their datagrams come from. Built by the
//! control plane from the topology and replaced as a whole when it changes; read by the data
//! plane for every datagram and every batch of frames.
//!
//! It is generic over the router's peer entry (`P: `[`Peer`]): the engine reads a peer's name,
//! address, fast-path flag and whether it must encrypt through the trait, and hands `&P` back in
//! its answers, so the caller reaches its own per-peer data (counters, encryption session)
//! without a second lookup, and the two can never disagree about who is who.

use crate::switch::Decision;
use crate::wire::PeerName;
use foldhash::HashMap;
use foldhash::HashMapExt;
use std::net::SocketAddr;

/// What the engine needs to know about a peer entry of the fabric.
pub trait Peer {
    /// Its name.
    fn name(&self) -> PeerName;
    /// Where its sleeve datagrams go when it is a direct neighbour (`None`: reached through a
    /// relay only).
    fn udp_addr(&self) -> Option<SocketAddr>;
    /// It is reached through the kernel VXLAN fast path: broadcasts and unknown unicast reach it
    /// through the VXLAN device's flood list, so the sleeve must not flood to it.
    fn fast(&self) -> bool;
    /// Its traffic is encrypted (there is a session with it): datagrams in clear from it are
    /// refused.
    fn encrypts(&self) -> bool;
    /// The AEAD its datagrams are sealed with now, when it encrypts and that is known (for
    /// reports such as `weft trace`; the engine does not use it).
    fn aead(&self) -> Option<crate::session::Aead> {
        None
    }
}

/// Peers, next hops and broadcast trees; see the module documentation.
#[derive(Debug)]
pub struct Fabric<P> {
    /// Reachable peers, sorted by name.
    entries: Vec<P>,
    /// For each entry (same index), the index of the direct neighbour that leads to it.
    next_hop: Vec<Option<usize>>,
    /// Broadcast trees: for a source, the indices of the neighbours we forward its broadcasts to.
    children: HashMap<PeerName, Vec<usize>>,
    /// Neighbours by the address their datagrams come from.
    by_addr: HashMap<SocketAddr, usize>,
}

impl<P> Default for Fabric<P> {
    fn default() -> Self {
        Fabric {
            entries: Vec::new(),
            next_hop: Vec::new(),
            children: HashMap::new(),
            by_addr: HashMap::new(),
        }
    }
}

impl<P: Peer> Fabric<P> {
    /// Builds a fabric. `routes` maps a destination to its next hop (a direct neighbour, i.e. an
    /// entry with an address); `children` gives, per broadcast source (ourselves included), the
    /// neighbours to forward to (direct ones not on the fast path). Names not among `entries` are
    /// ignored; of two entries with one name, the first is kept.
    pub fn new(
        mut entries: Vec<P>,
        routes: &[(PeerName, PeerName)],
        children: &[(PeerName, Vec<PeerName>)],
    ) -> Self {
        entries.sort_by_key(|e| e.name());
        entries.dedup_by_key(|e| e.name());
        let index = |n: PeerName| entries.binary_search_by_key(&n, |e| e.name()).ok();
        let direct = |i: usize| entries[i].udp_addr().is_some();
        let mut next_hop = vec![None; entries.len()];
        for (dst, hop) in routes {
            if let (Some(d), Some(h)) = (index(*dst), index(*hop)) {
                if direct(h) {
                    next_hop[d] = Some(h);
                }
            }
        }
        let children = children
            .iter()
            .map(|(src, kids)| {
                let kids = kids
                    .iter()
                    .filter_map(|k| index(*k))
                    .filter(|&i| direct(i) && !entries[i].fast())
                    .collect();
                (*src, kids)
            })
            .collect();
        let by_addr = entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((e.udp_addr()?, i)))
            .collect();
        Fabric {
            entries,
            next_hop,
            children,
            by_addr,
        }
    }

    /// A fabric of direct neighbours only: each is its own next hop, and our broadcasts go to
    /// all of them.
    pub fn direct(me: PeerName, entries: Vec<P>) -> Self {
        let names: Vec<PeerName> = entries.iter().map(|e| e.name()).collect();
        let routes: Vec<_> = names.iter().map(|n| (*n, *n)).collect();
        Fabric::new(entries, &routes, &[(me, names)])
    }

    /// The entry for `name`.
    pub fn get(&self, name: PeerName) -> Option<&P> {
        self.index(name).map(|i| &self.entries[i])
    }

    fn index(&self, name: PeerName) -> Option<usize> {
        self.entries.binary_search_by_key(&name, |e| e.name()).ok()
    }

    /// True if `name` is a direct neighbour (an entry with an address).
    pub fn is_neighbour(&self, name: PeerName) -> bool {
        self.get(name).is_some_and(|e| e.udp_addr().is_some())
    }

    /// The direct neighbour that leads to `dst`, with its address.
    pub fn next_hop(&self, dst: PeerName) -> Option<(&P, SocketAddr)> {
        let hop = &self.entries[self.next_hop[self.index(dst)?]?];
        Some((hop, hop.udp_addr()?))
    }

    /// The neighbours a broadcast from `src` is forwarded to, with their addresses.
    pub fn children(&self, src: PeerName) -> Children<'_, P> {
        Children {
            entries: &self.entries,
            kids: self
                .children
                .get(&src)
                .map(|v| v.as_slice())
                .unwrap_or_default()
                .iter(),
        }
    }

    /// All entries, sorted by name.
    pub fn entries(&self) -> &[P] {
        &self.entries
    }

    /// The neighbour whose datagrams come from `addr`.
    pub fn by_addr(&self, addr: SocketAddr) -> Option<&P> {
        self.by_addr.get(&addr).map(|&i| &self.entries[i])
    }

    /// The neighbour that sent a datagram from `from` naming `src` as its source: the one at
    /// that address, else the one named (a neighbour whose address is not confirmed yet).
    pub fn sender(&self, from: SocketAddr, src: PeerName) -> Option<&P> {
        self.by_addr(from).or_else(|| self.get(src))
    }

    /// Where a frame the switch decided `decision` for goes when that is one peer: see
    /// [`Route`]. `None` for the flood tree (broadcast, multicast, unknown unicast, or a peer we
    /// can no longer reach).
    pub fn unicast_route(&self, decision: Decision) -> Option<Route<'_, P>> {
        let Decision::Unicast(p) = decision else {
            return None;
        };
        let (hop, addr) = self.next_hop(p)?;
        Some(Route {
            hop,
            addr,
            dst: self.get(p)?,
        })
    }

    /// [`unicast_route`](Self::unicast_route) when it goes through the sleeve (not to a
    /// fast-path peer's kernel VXLAN device).
    pub fn sleeve_route(&self, decision: Decision) -> Option<Route<'_, P>> {
        self.unicast_route(decision).filter(|r| !r.is_fast())
    }
}

/// Where a unicast frame goes: the neighbour `hop` at `addr`, on the way to `dst`.
#[derive(Debug)]
pub struct Route<'f, P> {
    /// The direct neighbour the datagram is sent to.
    pub hop: &'f P,
    /// Its address.
    pub addr: SocketAddr,
    /// The peer the frame is for (the hop itself, or a peer behind it).
    pub dst: &'f P,
}

impl<P> Clone for Route<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P> Copy for Route<'_, P> {}

impl<P: Peer> Route<'_, P> {
    /// The destination is the neighbour itself (no relay in between).
    pub fn is_direct(&self) -> bool {
        self.hop.name() == self.dst.name()
    }

    /// The frame goes to the destination's kernel VXLAN device (a direct neighbour on the fast
    /// path) rather than through the sleeve.
    pub fn is_fast(&self) -> bool {
        self.hop.fast() && self.is_direct()
    }
}

/// The neighbours a broadcast is forwarded to, with their addresses ([`Fabric::children`]).
#[derive(Debug)]
pub struct Children<'f, P> {
    entries: &'f [P],
    kids: core::slice::Iter<'f, usize>,
}

impl<P> Clone for Children<'_, P> {
    fn clone(&self) -> Self {
        Children {
            entries: self.entries,
            kids: self.kids.clone(),
        }
    }
}

impl<P: Peer> Children<'_, P> {
    /// True if there is no neighbour left to forward to.
    pub fn is_empty(&self) -> bool {
        self.clone().next().is_none()
    }

    /// No neighbours (a broadcast not passed on).
    pub fn none() -> Self {
        Children {
            entries: &[],
            kids: [].iter(),
        }
    }
}

impl<'f, P: Peer> Iterator for Children<'f, P> {
    type Item = (&'f P, SocketAddr);

    fn next(&mut self) -> Option<Self::Item> {
        for &i in self.kids.by_ref() {
            let e = &self.entries[i];
            if let Some(a) = e.udp_addr() {
                return Some((e, a));
            }
        }
        None
    }
}
