//! Routes computed from a [`Topology`]: unicast next hops by shortest path, and per-source
//! broadcast trees.
//!
//! The graph has an edge A–B only when A lists B and B lists A (both usable, for
//! [`Routes::compute`]). A one-sided claim is ignored: it is either a connection still being set
//! up or a stale record, and a path over it could black-hole traffic.
//!
//! Every peer computes the same broadcast tree for a given source from the same view: a
//! breadth-first search from the source visiting neighbours in ascending name order; the parent of
//! a node is the first visited node adjacent to it. A broadcast from `src` is sent by `src` to its
//! children and forwarded by every peer to its own children, so in a stable topology each peer
//! receives it exactly once and there is no loop.

use crate::topology::{ConnEntry, Topology};
use crate::PeerName;
use std::collections::VecDeque;
use std::sync::OnceLock;

/// Up to this many peers, [`Routes::compute`] computes every source's broadcast children at once;
/// above, each source's are computed on first use and cached.
pub const EAGER_TREES_MAX_PEERS: usize = 256;

const NONE: u32 = u32::MAX;

/// Unicast and broadcast routes from the point of view of one peer ("us").
///
/// Computing costs O(N + E log d) for the graph plus one breadth-first search, O(N + E). Each
/// source's broadcast children cost another search, stopped as soon as all our neighbours are
/// placed in the tree; with [`EAGER_TREES_MAX_PEERS`] or fewer peers all sources are done in
/// [`compute`](Routes::compute) (at most 256 searches), above that lazily (first call per
/// source). Memory: O(N + E) plus our children per cached source.
pub struct Routes {
    ours: u32,
    names: Vec<PeerName>,
    /// Symmetric adjacency, each list in ascending name (= index) order.
    adj: Vec<Vec<u32>>,
    /// Hops from us; `NONE` when unreachable.
    dist: Vec<u32>,
    /// Our next hop towards each node (index); `NONE` for us and for unreachable nodes.
    first_hop: Vec<u32>,
    /// Our children in each source's broadcast tree.
    children: Vec<OnceLock<Vec<PeerName>>>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("ours", &self.names[self.ours as usize])
            .field("peers", &self.names.len())
            .field("edges", &(self.adj.iter().map(Vec::len).sum::<usize>() / 2))
            .field(
                "reachable",
                &self.dist.iter().filter(|d| **d != NONE).count(),
            )
            .finish()
    }
}

impl Routes {
    /// Routes of the data plane: an edge A–B when A lists B as usable and B lists A as usable.
    pub fn compute(topology: &Topology) -> Routes {
        let routes = Self::build(topology, |c| c.usable);
        if routes.names.len() <= EAGER_TREES_MAX_PEERS {
            for src in 0..routes.names.len() {
                if routes.dist[src] != NONE {
                    let children = routes.tree_children(src as u32);
                    let _ = routes.children[src].set(children);
                }
            }
        }
        routes
    }

    /// Routes of the control plane: an edge A–B when A and B list each other, usable or not
    /// (the TCP connection is up). Gossip travels over these; garbage collection keeps what they
    /// reach. Broadcast children are always computed lazily.
    pub fn compute_connections(topology: &Topology) -> Routes {
        Self::build(topology, |_| true)
    }

    fn build(topology: &Topology, edge: impl Fn(&ConnEntry) -> bool) -> Routes {
        let records: Vec<_> = topology.records().collect();
        let names: Vec<PeerName> = records.iter().map(|r| r.name).collect();
        let index = |n: PeerName| names.binary_search(&n).ok();
        let ours = index(topology.our_name()).expect("the view holds our own record") as u32;
        let adj: Vec<Vec<u32>> = records
            .iter()
            .map(|a| {
                a.conns
                    .iter()
                    .filter(|c| edge(c))
                    .filter_map(|c| {
                        let j = index(c.peer)?;
                        let back = records[j].conn(a.name)?;
                        edge(back).then_some(j as u32)
                    })
                    .collect()
            })
            .collect();
        let n = names.len();
        let mut dist = vec![NONE; n];
        let mut first_hop = vec![NONE; n];
        let mut order = Vec::with_capacity(n);
        dist[ours as usize] = 0;
        order.push(ours);
        let mut head = 0;
        while head < order.len() {
            let u = order[head];
            head += 1;
            for &v in &adj[u as usize] {
                if dist[v as usize] == NONE {
                    dist[v as usize] = dist[u as usize] + 1;
                    order.push(v);
                }
            }
        }
        // In level order, every node's predecessors on shortest paths are done before it; the
        // next hop is the lowest-named first hop among them.
        for &x in &order[1..] {
            let x = x as usize;
            first_hop[x] = if dist[x] == 1 {
                x as u32
            } else {
                adj[x]
                    .iter()
                    .filter(|&&y| dist[y as usize] == dist[x] - 1)
                    .map(|&y| first_hop[y as usize])
                    .min()
                    .unwrap_or(NONE)
            };
        }
        Routes {
            ours,
            names,
            adj,
            dist,
            first_hop,
            children: (0..n).map(|_| OnceLock::new()).collect(),
        }
    }

    fn index(&self, name: PeerName) -> Option<usize> {
        self.names.binary_search(&name).ok()
    }

    /// Our name.
    pub fn ours(&self) -> PeerName {
        self.names[self.ours as usize]
    }

    /// The neighbour to send a datagram for `dst` to: the first hop of a shortest path, the
    /// lowest-named one among equals. `None` for ourselves and for unreachable peers.
    pub fn next_hop(&self, dst: PeerName) -> Option<PeerName> {
        let i = self.index(dst)?;
        let h = self.first_hop[i];
        (h != NONE).then(|| self.names[h as usize])
    }

    /// Hops from us to `dst` (0 for ourselves), if reachable.
    pub fn hops(&self, dst: PeerName) -> Option<u32> {
        let d = self.dist[self.index(dst)?];
        (d != NONE).then_some(d)
    }

    /// The path to `dst`, from us to it (both included): the hops a datagram takes when every
    /// peer on the way applies [`next_hop`](Self::next_hop) to the same view. `None` when
    /// unreachable; `[us]` for ourselves. Costs one breadth-first search (for status pages, not
    /// for the data path).
    pub fn path(&self, dst: PeerName) -> Option<Vec<PeerName>> {
        let d = self.index(dst)?;
        if self.dist[d] == NONE {
            return None;
        }
        // Hops from every node to dst; each peer's next hop is its lowest-named neighbour one hop
        // closer (the same rule `first_hop` implements from our side).
        let mut to_dst = vec![NONE; self.names.len()];
        to_dst[d] = 0;
        let mut queue = VecDeque::from([d as u32]);
        while let Some(u) = queue.pop_front() {
            for &v in &self.adj[u as usize] {
                if to_dst[v as usize] == NONE {
                    to_dst[v as usize] = to_dst[u as usize] + 1;
                    queue.push_back(v);
                }
            }
        }
        let mut cur = self.ours;
        let mut path = vec![self.names[cur as usize]];
        while cur as usize != d {
            cur = *self.adj[cur as usize]
                .iter()
                .find(|&&v| Some(to_dst[v as usize]) == to_dst[cur as usize].checked_sub(1))
                .expect("a reachable node has a neighbour one hop closer");
            path.push(self.names[cur as usize]);
        }
        Some(path)
    }

    /// Every peer reachable from us, ourselves excluded, in ascending name order.
    pub fn reachable(&self) -> Vec<PeerName> {
        (0..self.names.len())
            .filter(|&i| i != self.ours as usize && self.dist[i] != NONE)
            .map(|i| self.names[i])
            .collect()
    }

    /// Our direct neighbours in this graph, in ascending name order.
    pub fn neighbours(&self) -> Vec<PeerName> {
        self.adj[self.ours as usize]
            .iter()
            .map(|&i| self.names[i as usize])
            .collect()
    }

    /// Our children in the broadcast tree rooted at `src`: the peers we forward `src`'s
    /// broadcasts to, in ascending name order. Empty when `src` is unknown or not reachable from
    /// us. For `src` = us, all our neighbours.
    pub fn broadcast_children(&self, src: PeerName) -> Vec<PeerName> {
        let Some(s) = self.index(src) else {
            return Vec::new();
        };
        if self.dist[s] == NONE {
            return Vec::new();
        }
        self.children[s]
            .get_or_init(|| self.tree_children(s as u32))
            .clone()
    }

    /// Breadth-first search from `src` (neighbours in ascending order) until every one of our
    /// neighbours has its parent; returns those whose parent is us.
    fn tree_children(&self, src: u32) -> Vec<PeerName> {
        let n = self.names.len();
        let ours = self.ours;
        let mine = &self.adj[ours as usize];
        let mut parent = vec![NONE; n];
        let mut seen = vec![false; n];
        let mut waiting = mine.iter().filter(|&&v| v != src).count();
        let mut queue = VecDeque::new();
        seen[src as usize] = true;
        queue.push_back(src);
        'search: while let Some(u) = queue.pop_front() {
            for &v in &self.adj[u as usize] {
                if seen[v as usize] {
                    continue;
                }
                seen[v as usize] = true;
                parent[v as usize] = u;
                queue.push_back(v);
                if mine.binary_search(&v).is_ok() {
                    waiting -= 1;
                    if waiting == 0 {
                        break 'search;
                    }
                }
            }
        }
        mine.iter()
            .filter(|&&v| parent[v as usize] == ours)
            .map(|&v| self.names[v as usize])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::tests::{conn, rec};
    use crate::topology::PeerRecord;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn p(n: u64) -> PeerName {
        PeerName(n)
    }

    /// A view of peer `me` over the undirected `edges` (all usable).
    fn graph(me: u64, nodes: u64, edges: &[(u64, u64)]) -> Topology {
        let mut adj: BTreeMap<u64, Vec<u64>> = (1..=nodes).map(|n| (n, vec![])).collect();
        for &(a, b) in edges {
            adj.get_mut(&a).unwrap().push(b);
            adj.get_mut(&b).unwrap().push(a);
        }
        let mut t = Topology::new(rec(me, 1, &adj[&me]));
        t.merge(
            adj.iter()
                .filter(|(n, _)| **n != me)
                .map(|(n, c)| rec(*n, 1, c))
                .collect::<Vec<PeerRecord>>(),
        );
        t
    }

    #[test]
    fn line() {
        let r = Routes::compute(&graph(1, 4, &[(1, 2), (2, 3), (3, 4)]));
        assert_eq!(r.next_hop(p(4)), Some(p(2)));
        assert_eq!(r.next_hop(p(2)), Some(p(2)));
        assert_eq!(r.next_hop(p(1)), None);
        assert_eq!(r.path(p(4)), Some(vec![p(1), p(2), p(3), p(4)]));
        assert_eq!(r.path(p(1)), Some(vec![p(1)]));
        assert_eq!(r.hops(p(4)), Some(3));
        assert_eq!(r.reachable(), vec![p(2), p(3), p(4)]);
        // From the middle: 1's broadcasts go on to 3 only; 4's back to 1 only.
        let r = Routes::compute(&graph(2, 4, &[(1, 2), (2, 3), (3, 4)]));
        assert_eq!(r.broadcast_children(p(1)), vec![p(3)]);
        assert_eq!(r.broadcast_children(p(4)), vec![p(1)]);
        assert_eq!(r.broadcast_children(p(2)), vec![p(1), p(3)]);
        assert_eq!(r.broadcast_children(p(3)), vec![p(1)]);
    }

    #[test]
    fn star() {
        let edges = [(1, 2), (1, 3), (1, 4), (1, 5)];
        let hub = Routes::compute(&graph(1, 5, &edges));
        for leaf in 2..=5 {
            assert_eq!(hub.next_hop(p(leaf)), Some(p(leaf)));
            let mut others: Vec<_> = (2..=5).filter(|l| *l != leaf).map(p).collect();
            others.sort();
            assert_eq!(hub.broadcast_children(p(leaf)), others);
        }
        let leaf = Routes::compute(&graph(3, 5, &edges));
        assert_eq!(leaf.next_hop(p(5)), Some(p(1)));
        assert_eq!(leaf.path(p(5)), Some(vec![p(3), p(1), p(5)]));
        for src in 1..=5 {
            assert!(leaf.broadcast_children(p(src)).is_empty() || src == 3);
        }
        assert_eq!(leaf.broadcast_children(p(3)), vec![p(1)]);
    }

    #[test]
    fn square_with_diagonal() {
        // 1 - 2
        // |   |
        // 4 - 3   and the diagonal 2 - 4.
        let edges = [(1, 2), (2, 3), (3, 4), (4, 1), (2, 4)];
        let r = Routes::compute(&graph(1, 4, &edges));
        // 3 is two hops away via 2 or 4: the lower name wins.
        assert_eq!(r.next_hop(p(3)), Some(p(2)));
        assert_eq!(r.path(p(3)), Some(vec![p(1), p(2), p(3)]));
        // Tree from 3: 3 -> {2, 4}; 1's parent is 2 (visited first). So 2 forwards to 1, 4 does
        // not.
        let r2 = Routes::compute(&graph(2, 4, &edges));
        let r4 = Routes::compute(&graph(4, 4, &edges));
        assert_eq!(r2.broadcast_children(p(3)), vec![p(1)]);
        assert!(r4.broadcast_children(p(3)).is_empty());
        // From 4, the diagonal makes 2 a direct hop.
        assert_eq!(r4.next_hop(p(2)), Some(p(2)));
    }

    #[test]
    fn asymmetric_edge_ignored() {
        // 1 lists 3 and 3 does not list 1: the way to 3 is through 2.
        let mut t = graph(1, 3, &[(1, 2), (2, 3)]);
        t.set_our_conns(vec![conn(2, true), conn(3, true)]);
        let r = Routes::compute(&t);
        assert_eq!(r.next_hop(p(3)), Some(p(2)));
        assert_eq!(r.neighbours(), vec![p(2)]);
    }

    #[test]
    fn unusable_edge_ignored_but_connected() {
        let mut t = graph(1, 3, &[(1, 2), (2, 3), (1, 3)]);
        t.set_our_conns(vec![conn(2, true), conn(3, false)]);
        let r = Routes::compute(&t);
        assert_eq!(r.next_hop(p(3)), Some(p(2)));
        assert_eq!(r.path(p(3)), Some(vec![p(1), p(2), p(3)]));
        // The control plane still uses the connection.
        let c = Routes::compute_connections(&t);
        assert_eq!(c.next_hop(p(3)), Some(p(3)));
        // A peer only reachable over an unusable connection has no route.
        t.set_our_conns(vec![conn(3, false)]);
        let r = Routes::compute(&t);
        assert_eq!(r.next_hop(p(2)), None);
        assert!(r.reachable().is_empty());
        assert!(r.broadcast_children(p(2)).is_empty(), "unreachable source");
        assert!(r.broadcast_children(p(99)).is_empty(), "unknown source");
    }

    #[test]
    fn next_hop_is_lowest_named_first_hop() {
        // Two shortest paths 1-5-3 and 1-2-4-... : to reach 6 (adjacent to 3 and 4), both
        // 1-5-3-6 and 1-2-4-6 have three hops; 2 < 5 wins.
        let edges = [(1, 5), (5, 3), (3, 6), (1, 2), (2, 4), (4, 6)];
        let r = Routes::compute(&graph(1, 6, &edges));
        assert_eq!(r.next_hop(p(6)), Some(p(2)));
        assert_eq!(r.path(p(6)), Some(vec![p(1), p(2), p(4), p(6)]));
    }

    /// Random connected graph: each node after the first links to 1..=3 earlier ones.
    fn arb_graph() -> impl Strategy<Value = (u64, Vec<(u64, u64)>)> {
        (2u64..32).prop_flat_map(|n| {
            let links = proptest::collection::vec((any::<u64>(), 1usize..4), n as usize - 1);
            (Just(n), links).prop_map(|(n, links)| {
                let mut edges = BTreeSet::new();
                for (i, (seed, k)) in links.into_iter().enumerate() {
                    let node = i as u64 + 2;
                    let mut s = seed;
                    for _ in 0..k {
                        s = crate::topology::mix(s);
                        let other = 1 + s % (node - 1);
                        edges.insert((other, node));
                    }
                }
                (n, edges.into_iter().collect())
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn broadcast_trees_reach_everyone_once((n, edges) in arb_graph()) {
            let routes: Vec<Routes> = (1..=n).map(|me| Routes::compute(&graph(me, n, &edges))).collect();
            let lazy: Vec<Routes> = (1..=n)
                .map(|me| Routes::compute_connections(&graph(me, n, &edges)))
                .collect();
            for src in 1..=n {
                for rs in [&routes, &lazy] {
                    // Sum of children over all peers = everyone but the source, each once.
                    let mut got = BTreeMap::new();
                    for r in rs.iter() {
                        for c in r.broadcast_children(p(src)) {
                            *got.entry(c).or_insert(0) += 1;
                        }
                    }
                    prop_assert_eq!(got.len() as u64, n - 1);
                    prop_assert!(got.values().all(|c| *c == 1));
                    prop_assert!(!got.contains_key(&p(src)));
                    // And forwarding from the source reaches everyone.
                    let mut reached = BTreeSet::from([src]);
                    let mut queue = vec![src];
                    while let Some(x) = queue.pop() {
                        for c in rs[x as usize - 1].broadcast_children(p(src)) {
                            prop_assert!(reached.insert(c.0), "{} reached twice", c);
                            queue.push(c.0);
                        }
                    }
                    prop_assert_eq!(reached.len() as u64, n);
                }
            }
            // Unicast: following next hops from anyone reaches the destination in `hops` steps.
            for a in 1..=n {
                for b in 1..=n {
                    let expected = routes[a as usize - 1].hops(p(b)).unwrap();
                    let path = routes[a as usize - 1].path(p(b)).unwrap();
                    prop_assert_eq!(path.len() as u32, expected + 1);
                    let mut at = a;
                    let mut steps = 0;
                    while at != b {
                        let next = routes[at as usize - 1].next_hop(p(b)).unwrap();
                        prop_assert_eq!(Some(&next), path.get(steps as usize + 1));
                        at = next.0;
                        steps += 1;
                        prop_assert!(steps <= expected);
                    }
                    prop_assert_eq!(steps, expected);
                }
            }
        }
    }
}
