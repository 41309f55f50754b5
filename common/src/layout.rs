//! Layout planning: which storage nodes should hold each partition after nodes join or leave or the
//! replication factor changes, moving as little data as possible.
//!
//! [`plan`] turns the present replica sets into new ones that guarantee:
//! - **Validity**: every partition has exactly `replication` (K) distinct nodes, all of them in
//!   the node list (replicas on nodes that left are dropped).
//! - **Balance**: with `T = P*K` replica slots over `S` nodes, every node holds `floor(T/S)` or
//!   `ceil(T/S)` slots, so the most loaded node is within [`MAX_IMBALANCE`] of the mean whenever
//!   the partition count allows it (`placement::choose_digits` picks such counts). The rounded-up
//!   slots go where they save moves.
//! - **Zones**: a node's zone is its `zone`, or a zone of its own when it has none. When the nodes
//!   span at least K zones, the K replicas of every partition are in K distinct zones (existing
//!   violations are repaired). A zone then holds at most P slots (one per partition), so a zone
//!   with more than its share of the nodes gets fewer slots per node and the other zones' nodes
//!   more, evenly (zone distinctness wins over balance); the nodes of one zone still differ by at
//!   most one slot. With fewer zones than K, zones are ignored.
//! - **Minimal movement**: of all layouts meeting the above, the plan keeps the most present
//!   (partition, node) pairs, so its [`moves`] equal [`minimum_moves`] exactly (callers accept up
//!   to 10% more). Adding a node moves just that node's share, and raising K one replica per
//!   partition. Removing a node moves its slots, and a few more when rebalancing needs them (S = 4
//!   → 3 at K = 2, P = 16 on a round-robin layout: 10 moves for the removed node's 8 slots).
//! - **Determinism**: nodes are taken in id order and nothing depends on hash iteration order.
//!
//! The plan is the optimum of a min-cost flow: source → partition (capacity K) → zone of the
//! partition (capacity 1) → node (capacity 1, cost 0 if the partition is on the node already,
//! 1 if not) → sink (the node's quota, with the rounded-up slots shared through pools). It is
//! solved by successive shortest paths with potentials, pushing blocking flows along all
//! shortest paths at once; P = 4096, K = 3, S = 64 takes a few tens of milliseconds in a release
//! build.
//!
//! [`MAX_IMBALANCE`]: crate::placement::MAX_IMBALANCE

use crate::placement::NodeId;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

/// A storage node the plan may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: NodeId,
    /// The node's failure domain (rack, availability zone); `None` is a zone of its own.
    pub zone: Option<String>,
}

impl Node {
    /// A node in no named zone (a failure domain of its own).
    pub fn new(id: NodeId) -> Self {
        Self { id, zone: None }
    }

    /// A node in the named zone.
    pub fn zoned(id: NodeId, zone: impl Into<String>) -> Self {
        Self { id, zone: Some(zone.into()) }
    }
}

/// Why no layout can be planned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("replication factor must be at least 1")]
    NoReplication,
    #[error("replication factor {replication} exceeds the {nodes} storage nodes available")]
    NotEnoughNodes { replication: usize, nodes: usize },
    #[error("storage node {0} is listed twice")]
    DuplicateNode(NodeId),
    #[error("no layout places every replica (a planner bug)")]
    Unplaceable,
}

/// The replica set every partition should have. `current[p]` is partition p's present set (it may
/// name nodes that are not in `nodes` any more — those are dropped — and may be shorter or longer
/// than `replication`, e.g. when K changes or a node was removed). Returns `current.len()` sets,
/// each with exactly `replication` distinct ids from `nodes`; kept replicas stay in their
/// positions and a new replica takes the position of one that went.
pub fn plan(
    current: &[Vec<NodeId>],
    nodes: &[Node],
    replication: usize,
) -> Result<Vec<Vec<NodeId>>, LayoutError> {
    solve(current, nodes, replication).map(|solution| solution.sets)
}

/// The fewest replica moves (a node added to a partition it did not hold) any valid, balanced plan
/// needs for this change: the yardstick `plan` is measured against (0 when `plan` fails). It solves
/// the same optimisation as [`plan`], whose moves are therefore exactly this minimum.
pub fn minimum_moves(current: &[Vec<NodeId>], nodes: &[Node], replication: usize) -> usize {
    solve(current, nodes, replication).map_or(0, |solution| solution.moves)
}

/// Replicas in `to[p]` that are not in `from[p]`, summed over partitions.
pub fn moves(from: &[Vec<NodeId>], to: &[Vec<NodeId>]) -> usize {
    let before = |p: usize| from.get(p).map_or(&[][..], Vec::as_slice);
    to.iter().enumerate().map(|(p, set)| set.iter().filter(|id| !before(p).contains(id)).count()).sum()
}

/// Splits every partition into 16^extra_digits partitions that keep its replica set: partition p
/// becomes p * 16^extra + i for i in 0..16^extra (a partition is a hex prefix of SHA-1, so the
/// data of the children is already on the same nodes).
pub fn split(current: &[Vec<NodeId>], extra_digits: u8) -> Vec<Vec<NodeId>> {
    let fan = 16usize.checked_pow(u32::from(extra_digits)).expect("too many extra digits");
    current.iter().flat_map(|set| std::iter::repeat_n(set, fan).cloned()).collect()
}

/// Replica slots per node id in `sets`.
pub fn load(sets: &[Vec<NodeId>]) -> BTreeMap<NodeId, usize> {
    let mut load = BTreeMap::new();
    for &id in sets.iter().flatten() {
        *load.entry(id).or_insert(0) += 1;
    }
    load
}

/// A plan and the moves it makes.
struct Solution {
    sets: Vec<Vec<NodeId>>,
    moves: usize,
}

/// Builds and solves the flow network, then reads the replica sets off it.
fn solve(current: &[Vec<NodeId>], nodes: &[Node], replication: usize) -> Result<Solution, LayoutError> {
    let cluster = Cluster::new(nodes, replication)?;
    let held: Vec<Vec<usize>> = current.iter().map(|set| cluster.held(set)).collect();
    let quotas = Quotas::new(&cluster, held.len(), replication);
    let mut network = Network::build(&cluster, &held, &quotas, replication);
    let (flow, cost) = network.graph.min_cost_flow(SOURCE, SINK);
    if flow != (held.len() * replication) as i64 {
        return Err(LayoutError::Unplaceable);
    }
    let sets: Vec<Vec<NodeId>> = network
        .choices
        .iter()
        .zip(current)
        .map(|(choices, present)| {
            let chosen: Vec<NodeId> = choices
                .iter()
                .filter(|&&(edge, _)| network.graph.cap[edge ^ 1] > 0)
                .map(|&(_, node)| cluster.ids[node])
                .collect();
            arrange(present, &chosen)
        })
        .collect();
    let moves = moves(current, &sets);
    debug_assert_eq!(moves as i64, cost, "flow cost and counted moves disagree");
    Ok(Solution { sets, moves })
}

/// Orders a partition's new replicas like its present ones: a kept replica stays where it was, a
/// new one takes the place of one that went, and any others go last.
fn arrange(present: &[NodeId], chosen: &[NodeId]) -> Vec<NodeId> {
    let mut fresh = chosen.iter().copied().filter(|id| !present.contains(id));
    let mut set = Vec::with_capacity(chosen.len());
    for id in present {
        if set.contains(id) {
            continue;
        }
        if chosen.contains(id) {
            set.push(*id);
        } else if let Some(new) = fresh.next() {
            set.push(new);
        }
    }
    set.extend(fresh);
    set
}

/// The nodes as the planner sees them: in id order, each with the index of its zone.
struct Cluster {
    ids: Vec<NodeId>,
    zone: Vec<usize>,
    zones: usize,
}

impl Cluster {
    /// Checks the request and numbers the zones (every node is its own zone when there are
    /// fewer zones than replicas, so zones are ignored).
    fn new(nodes: &[Node], replication: usize) -> Result<Self, LayoutError> {
        if replication == 0 {
            return Err(LayoutError::NoReplication);
        }
        let mut sorted: Vec<&Node> = nodes.iter().collect();
        sorted.sort_by_key(|node| node.id);
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0].id == pair[1].id) {
            return Err(LayoutError::DuplicateNode(pair[0].id));
        }
        if replication > sorted.len() {
            return Err(LayoutError::NotEnoughNodes { replication, nodes: sorted.len() });
        }
        let mut named: BTreeMap<&str, usize> = BTreeMap::new();
        let mut zone = Vec::with_capacity(sorted.len());
        let mut zones = 0;
        for node in &sorted {
            let index = match &node.zone {
                Some(name) => *named.entry(name.as_str()).or_insert(zones),
                None => zones,
            };
            zones = zones.max(index + 1);
            zone.push(index);
        }
        if zones < replication {
            zone = (0..sorted.len()).collect();
            zones = sorted.len();
        }
        Ok(Self { ids: sorted.iter().map(|node| node.id).collect(), zone, zones })
    }

    /// The indices of the nodes in `set` that the cluster still has, sorted and distinct.
    fn held(&self, set: &[NodeId]) -> Vec<usize> {
        let mut held: Vec<usize> = set.iter().filter_map(|id| self.ids.binary_search(id).ok()).collect();
        held.sort_unstable();
        held.dedup();
        held
    }

    /// The node indices of every zone.
    fn members(&self) -> Vec<Vec<usize>> {
        let mut members = vec![Vec::new(); self.zones];
        for (node, &zone) in self.zone.iter().enumerate() {
            members[zone].push(node);
        }
        members
    }
}

/// How many replica slots each node must hold: `base`, and one more for some. The nodes of zone z
/// share `extra[z]` such slots; zones that are not full (`pooled[z]`) draw theirs from a
/// cluster-wide pool of `pool` slots, full zones (exactly P slots) use all of theirs.
struct Quotas {
    base: Vec<usize>,
    extra: Vec<usize>,
    pooled: Vec<bool>,
    pool: usize,
}

impl Quotas {
    /// Water-fills the slots: every node gets the mean, except that a zone whose nodes' share
    /// would exceed one slot per partition is capped at P and the rest is spread over the others.
    fn new(cluster: &Cluster, partitions: usize, replication: usize) -> Self {
        let size: Vec<usize> = cluster.members().iter().map(Vec::len).collect();
        let slots = partitions * replication;
        let mut full = vec![false; cluster.zones];
        let (rest, spread) = loop {
            let rest = slots - partitions * full.iter().filter(|&&f| f).count();
            let open = || (0..cluster.zones).filter(|&z| !full[z]);
            let spread: usize = open().map(|z| size[z]).sum();
            let over = open()
                .filter(|&z| size[z] * rest > partitions * spread)
                .max_by_key(|&z| (size[z], Reverse(z)));
            match over {
                Some(z) => full[z] = true,
                None => break (rest, spread.max(1)),
            }
        };
        let even = rest / spread;
        let base = cluster.zone.iter().map(|&z| if full[z] { partitions / size[z] } else { even }).collect();
        let extra = (0..cluster.zones)
            .map(|z| match full[z] {
                true => partitions % size[z],
                // Never more than one extra per node, nor past one slot per partition.
                false => size[z].min(partitions.saturating_sub(size[z] * even)),
            })
            .collect();
        Self { base, extra, pooled: full.iter().map(|&f| !f).collect(), pool: rest - even * spread }
    }
}

const SOURCE: usize = 0;
const SINK: usize = 1;

/// The flow network of a planning problem, and for every partition its (edge, node) choices.
struct Network {
    graph: Graph,
    choices: Vec<Vec<(usize, usize)>>,
}

impl Network {
    /// Vertices: source, sink, partitions, nodes, zone pools, the cluster pool, then one vertex
    /// per (partition, zone of several nodes) so that a partition takes one node per zone.
    fn build(cluster: &Cluster, held: &[Vec<usize>], quotas: &Quotas, replication: usize) -> Self {
        let (partitions, nodes, zones) = (held.len(), cluster.ids.len(), cluster.zones);
        let node_vertex = |node: usize| 2 + partitions + node;
        let zone_vertex = |zone: usize| 2 + partitions + nodes + zone;
        let pool_vertex = 2 + partitions + nodes + zones;
        let mut graph = Graph::new(pool_vertex + 1);
        let members = cluster.members();
        let mut choices = Vec::with_capacity(partitions);
        for (p, held) in held.iter().enumerate() {
            graph.edge(SOURCE, 2 + p, replication, 0);
            let mut options = Vec::with_capacity(nodes);
            for group in &members {
                let from = match group.len() {
                    1 => 2 + p,
                    _ => {
                        let vertex = graph.vertex();
                        graph.edge(2 + p, vertex, 1, 0);
                        vertex
                    }
                };
                for &node in group {
                    let cost = i32::from(held.binary_search(&node).is_err());
                    options.push((graph.edge(from, node_vertex(node), 1, cost), node));
                }
            }
            choices.push(options);
        }
        for (node, &zone) in cluster.zone.iter().enumerate() {
            graph.edge(node_vertex(node), SINK, quotas.base[node], 0);
            if quotas.extra[zone] > 0 {
                graph.edge(node_vertex(node), zone_vertex(zone), 1, 0);
            }
        }
        for zone in 0..zones {
            let to = if quotas.pooled[zone] { pool_vertex } else { SINK };
            graph.edge(zone_vertex(zone), to, quotas.extra[zone], 0);
        }
        graph.edge(pool_vertex, SINK, quotas.pool, 0);
        Self { graph, choices }
    }
}

/// A flow network for min-cost flow; edge `e ^ 1` is the residual twin of edge `e`.
struct Graph {
    adj: Vec<Vec<u32>>,
    to: Vec<u32>,
    cap: Vec<i32>,
    cost: Vec<i32>,
}

impl Graph {
    fn new(vertices: usize) -> Self {
        Self { adj: vec![Vec::new(); vertices], to: Vec::new(), cap: Vec::new(), cost: Vec::new() }
    }

    fn vertex(&mut self) -> usize {
        self.adj.push(Vec::new());
        self.adj.len() - 1
    }

    /// Adds an edge and its residual twin; returns the edge.
    fn edge(&mut self, from: usize, to: usize, cap: usize, cost: i32) -> usize {
        let edge = self.to.len();
        self.to.extend([to as u32, from as u32]);
        self.cap.extend([i32::try_from(cap).expect("capacity fits i32"), 0]);
        self.cost.extend([cost, -cost]);
        self.adj[from].push(edge as u32);
        self.adj[to].push(edge as u32 + 1);
        edge
    }

    /// The cost of `edge` (leaving `from`) reduced by the potentials; never negative.
    fn reduced(&self, from: usize, edge: usize, pot: &[i64]) -> i64 {
        i64::from(self.cost[edge]) + pot[from] - pot[self.to[edge] as usize]
    }

    fn admissible(&self, from: usize, edge: usize, pot: &[i64]) -> bool {
        self.cap[edge] > 0 && self.reduced(from, edge, pot) == 0
    }

    /// Pushes the most flow from `s` to `t` at the least cost; returns (flow, cost).
    fn min_cost_flow(&mut self, s: usize, t: usize) -> (i64, i64) {
        let mut pot = vec![0i64; self.adj.len()];
        let (mut flow, mut cost) = (0, 0);
        while self.shortest_paths(s, t, &mut pot) {
            loop {
                let mut level = self.levels(s, &pot);
                if level[t] == u32::MAX {
                    break;
                }
                let pushed = self.blocking_flow(s, t, &pot, &mut level);
                flow += pushed;
                cost += pushed * (pot[t] - pot[s]);
            }
        }
        (flow, cost)
    }

    /// Dijkstra on reduced costs; updates the potentials so that every shortest `s`–`t` path is
    /// made of zero-cost edges (and no residual edge costs less than zero). Whether `t` is reachable.
    fn shortest_paths(&self, s: usize, t: usize, pot: &mut [i64]) -> bool {
        let mut dist = vec![i64::MAX; self.adj.len()];
        let mut done = vec![false; self.adj.len()];
        let mut heap = BinaryHeap::from([(Reverse(0), s)]);
        dist[s] = 0;
        while let Some((Reverse(d), v)) = heap.pop() {
            if std::mem::replace(&mut done[v], true) {
                continue;
            }
            if v == t {
                break;
            }
            for &edge in &self.adj[v] {
                let (edge, w) = (edge as usize, self.to[edge as usize] as usize);
                let next = d + self.reduced(v, edge, pot);
                if self.cap[edge] > 0 && next < dist[w] {
                    dist[w] = next;
                    heap.push((Reverse(next), w));
                }
            }
        }
        if !done[t] {
            return false;
        }
        for v in (0..self.adj.len()).filter(|&v| done[v]) {
            pot[v] += dist[v] - dist[t];
        }
        true
    }

    /// Breadth-first levels over the admissible edges (`u32::MAX`: unreachable).
    fn levels(&self, s: usize, pot: &[i64]) -> Vec<u32> {
        let mut level = vec![u32::MAX; self.adj.len()];
        let mut queue = VecDeque::from([s]);
        level[s] = 0;
        while let Some(v) = queue.pop_front() {
            for &edge in &self.adj[v] {
                let w = self.to[edge as usize] as usize;
                if level[w] == u32::MAX && self.admissible(v, edge as usize, pot) {
                    level[w] = level[v] + 1;
                    queue.push_back(w);
                }
            }
        }
        level
    }

    /// Augments along level-increasing admissible paths until none is left (iteratively, so deep
    /// paths cannot overflow the stack); returns the flow pushed.
    fn blocking_flow(&mut self, s: usize, t: usize, pot: &[i64], level: &mut [u32]) -> i64 {
        let mut arc = vec![0usize; self.adj.len()];
        let mut path: Vec<usize> = Vec::new();
        let (mut v, mut total) = (s, 0i64);
        loop {
            if v == t {
                let push = path.iter().map(|&edge| self.cap[edge]).min().unwrap_or(0);
                for &edge in &path {
                    self.cap[edge] -= push;
                    self.cap[edge ^ 1] += push;
                }
                total += i64::from(push);
                path.clear();
                v = s;
            } else if let Some(edge) = self.next_arc(v, &mut arc, level, pot) {
                path.push(edge);
                v = self.to[edge] as usize;
            } else {
                level[v] = u32::MAX;
                let Some(edge) = path.pop() else { return total };
                v = self.to[edge ^ 1] as usize;
                arc[v] += 1;
            }
        }
    }

    /// The first edge from `v`, at or after its current arc, that leads one level down an
    /// admissible edge.
    fn next_arc(&self, v: usize, arc: &mut [usize], level: &[u32], pot: &[i64]) -> Option<usize> {
        while let Some(&edge) = self.adj[v].get(arc[v]) {
            let (edge, w) = (edge as usize, self.to[edge as usize] as usize);
            if level[w] != u32::MAX && level[w] == level[v] + 1 && self.admissible(v, edge, pot) {
                return Some(edge);
            }
            arc[v] += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::MAX_IMBALANCE;
    use std::collections::BTreeSet;

    type Sets = Vec<Vec<NodeId>>;

    /// Node ids that are neither contiguous nor starting at zero.
    fn id(i: usize) -> NodeId {
        i as NodeId * 3 + 7
    }

    fn plain(ids: &[NodeId]) -> Vec<Node> {
        ids.iter().map(|&id| Node::new(id)).collect()
    }

    /// The partition count the caller picks: the smallest 16^d that keeps the rounded-up load
    /// within MAX_IMBALANCE of the mean and gives every node a slot.
    fn partitions_for(nodes: usize, replication: usize) -> usize {
        let balanced = |p: usize| {
            let slots = p * replication;
            let mean = slots as f64 / nodes as f64;
            slots >= nodes && slots.div_ceil(nodes) as f64 <= mean * (1.0 + MAX_IMBALANCE)
        };
        (1..=6).map(|d| 16usize.pow(d)).find(|&p| balanced(p)).unwrap_or(16usize.pow(6))
    }

    /// The controller's original layout: slot p*K+i on node (p*K+i) mod S.
    fn round_robin(ids: &[NodeId], partitions: usize, replication: usize) -> Sets {
        let slot = |p: usize, i: usize| ids[(p * replication + i) % ids.len()];
        (0..partitions).map(|p| (0..replication).map(|i| slot(p, i)).collect()).collect()
    }

    fn zone_of(nodes: &[Node], id: NodeId) -> String {
        let node = nodes.iter().find(|node| node.id == id).unwrap();
        node.zone.clone().unwrap_or_else(|| format!("node {id}"))
    }

    fn zones_active(nodes: &[Node], replication: usize) -> bool {
        nodes.iter().map(|node| zone_of(nodes, node.id)).collect::<BTreeSet<_>>().len() >= replication
    }

    /// An independent lower bound on the moves of a zoneless change: every node must reach its
    /// quota (the rounded-up ones at best on the nodes holding most) from what it holds, and every
    /// partition must reach K from its surviving replicas.
    fn lower_bound(current: &[Vec<NodeId>], nodes: &[Node], replication: usize) -> usize {
        let ids: BTreeSet<NodeId> = nodes.iter().map(|node| node.id).collect();
        let survivors: Sets = current
            .iter()
            .map(|set| set.iter().copied().filter(|id| ids.contains(id)).collect::<BTreeSet<_>>())
            .map(|set| set.into_iter().collect())
            .collect();
        let per_partition: usize = survivors.iter().map(|set| replication.saturating_sub(set.len())).sum();
        let held = load(&survivors);
        let mut counts: Vec<usize> = ids.iter().map(|id| held.get(id).copied().unwrap_or(0)).collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let slots = current.len() * replication;
        let (floor, extra) = (slots / ids.len(), slots % ids.len());
        let quota = |i: usize| floor + usize::from(i < extra);
        let per_node: usize = counts.iter().enumerate().map(|(i, &c)| quota(i).saturating_sub(c)).sum();
        per_partition.max(per_node)
    }

    /// Plans, checks every acceptance criterion, and returns the plan.
    fn checked(current: &[Vec<NodeId>], nodes: &[Node], replication: usize) -> Sets {
        let out = plan(current, nodes, replication).unwrap();
        let ids: BTreeSet<NodeId> = nodes.iter().map(|node| node.id).collect();
        assert_eq!(out.len(), current.len());
        for (p, set) in out.iter().enumerate() {
            let distinct: BTreeSet<NodeId> = set.iter().copied().collect();
            assert_eq!(set.len(), replication, "partition {p}: {set:?}");
            assert_eq!(distinct.len(), replication, "partition {p}: {set:?}");
            assert!(distinct.is_subset(&ids), "partition {p}: {set:?} uses unknown nodes");
        }
        if zones_active(nodes, replication) {
            check_zones(&out, nodes, current.len());
        } else {
            check_balance(&out, &ids);
            assert!(moves(current, &out) >= lower_bound(current, nodes, replication));
        }
        let mut reversed = nodes.to_vec();
        reversed.reverse();
        assert_eq!(plan(current, &reversed, replication).unwrap(), out, "node order changed the plan");
        assert_eq!(plan(current, nodes, replication).unwrap(), out, "not deterministic");
        let minimum = minimum_moves(current, nodes, replication);
        let made = moves(current, &out);
        assert!(made as f64 <= minimum as f64 * (1.0 + MAX_IMBALANCE), "{made} moves, minimum {minimum}");
        assert_eq!(made, minimum);
        out
    }

    /// Loads are floor or ceil of the mean, and so within MAX_IMBALANCE of it when P allows.
    fn check_balance(sets: &[Vec<NodeId>], ids: &BTreeSet<NodeId>) {
        let held = load(sets);
        let slots: usize = held.values().sum();
        let (floor, ceil) = (slots / ids.len(), slots.div_ceil(ids.len()));
        for id in ids {
            let got = held.get(id).copied().unwrap_or(0);
            assert!((floor..=ceil).contains(&got), "node {id} holds {got}, want {floor}..={ceil}: {held:?}");
        }
    }

    /// Distinct zones in every partition; no zone over P; a zone's nodes within one slot of each
    /// other; and plain balance when every zone can take its fair share.
    fn check_zones(sets: &[Vec<NodeId>], nodes: &[Node], partitions: usize) {
        for (p, set) in sets.iter().enumerate() {
            let zones: BTreeSet<String> = set.iter().map(|&id| zone_of(nodes, id)).collect();
            assert_eq!(zones.len(), set.len(), "partition {p}: {set:?} repeats a zone");
        }
        let held = load(sets);
        let mut by_zone: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for node in nodes {
            by_zone
                .entry(zone_of(nodes, node.id))
                .or_default()
                .push(held.get(&node.id).copied().unwrap_or(0));
        }
        let slots: usize = held.values().sum();
        for (zone, loads) in &by_zone {
            let (least, most) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
            assert!(most - least <= 1, "zone {zone} is uneven: {loads:?}");
            assert!(loads.iter().sum::<usize>() <= partitions, "zone {zone} holds a partition twice");
        }
        if by_zone.values().all(|loads| loads.len() * slots <= partitions * nodes.len()) {
            check_balance(sets, &nodes.iter().map(|node| node.id).collect());
        }
    }

    /// A membership change: start with `before` nodes at K0 (round-robin), remove `removed` of
    /// them, add `added` new ones, and replicate K1 times.
    struct Change {
        before: usize,
        removed: usize,
        added: usize,
        k0: usize,
        k1: usize,
    }

    fn change(before: usize, removed: usize, added: usize, k0: usize, k1: usize) -> Change {
        Change { before, removed, added, k0, k1 }
    }

    /// Runs a change and returns (moves, the independent lower bound, slots).
    fn run(c: &Change) -> (usize, usize, usize) {
        let old: Vec<NodeId> = (0..c.before).map(id).collect();
        // Remove from the middle, so that survivors sit on both sides of the gap.
        let gap = (c.before - c.removed) / 2;
        let mut ids: Vec<NodeId> = old
            .iter()
            .copied()
            .enumerate()
            .filter(|&(i, _)| i < gap || i >= gap + c.removed)
            .map(|(_, id)| id)
            .collect();
        ids.extend((0..c.added).map(|i| id(1000 + i)));
        let p0 = partitions_for(c.before, c.k0);
        let p1 = partitions_for(ids.len(), c.k1);
        let mut current = round_robin(&old, p0, c.k0);
        if p1 > p0 {
            current = split(&current, (p1 / p0).trailing_zeros() as u8 / 4);
        }
        let nodes = plain(&ids);
        let out = checked(&current, &nodes, c.k1);
        let held = load(&out);
        let mean = (current.len() * c.k1) as f64 / ids.len() as f64;
        let most = *held.values().max().unwrap() as f64;
        assert!(most <= mean * (1.0 + MAX_IMBALANCE), "most loaded {most} vs mean {mean:.2}");
        (moves(&current, &out), lower_bound(&current, &nodes, c.k1), current.len() * c.k1)
    }

    /// Grow by one, shrink by one, replace one, grow and shrink by several, K up and down, for S
    /// from 1 to 20 and a few up to 64.
    fn changes() -> Vec<Change> {
        let mut changes = Vec::new();
        for s in 1..=20 {
            for k in 1..=s.min(3) {
                changes.push(change(s, 0, 1, k, k));
                if k < s {
                    changes.push(change(s, 1, 0, k, k));
                }
                changes.push(change(s, 1, 1, k, k));
            }
        }
        for (s, added) in [(3, 3), (4, 4), (5, 4), (10, 6), (20, 10), (32, 32), (48, 16)] {
            changes.extend([change(s, 0, added, 3, 3), change(s, 0, added, 1, 1)]);
        }
        for (s, removed) in [(8, 3), (16, 6), (12, 9), (64, 16)] {
            changes.extend([change(s, removed, 0, 3, 3), change(s, removed, 0, 2, 2)]);
        }
        for (s, k0, k1) in [(5, 2, 3), (6, 3, 2), (10, 1, 3), (4, 3, 4), (20, 3, 5), (7, 5, 1), (64, 3, 2)] {
            changes.push(change(s, 0, 0, k0, k1));
        }
        changes.extend([change(63, 0, 1, 3, 3), change(64, 1, 0, 3, 3), change(64, 2, 2, 3, 3)]);
        changes.extend([change(5, 0, 1, 2, 3), change(6, 1, 0, 3, 2), change(10, 2, 3, 3, 2)]);
        changes.extend([change(8, 0, 8, 1, 3), change(20, 5, 0, 2, 4), change(3, 1, 2, 2, 3)]);
        changes
    }

    #[test]
    fn membership_changes_move_the_minimum() {
        for c in changes() {
            let (made, bound, slots) = run(&c);
            let what = format!(
                "S={} -{} +{} K={}->{}: {made} moves of {slots}",
                c.before, c.removed, c.added, c.k0, c.k1
            );
            // Without removals the simple bound is exact: new nodes and new replicas get their share.
            // A removal can cost more: S=4 -> 3 at K=2 (P=16) leaves the 8 partitions without node 0
            // on nodes 2 and 3 only, so node 0 must take 2 of them to reach its 10 slots.
            if c.removed == 0 || (c.added == c.removed && c.k0 == c.k1) {
                assert_eq!(made, bound, "{what}");
            }
        }
    }

    #[test]
    fn growing_one_node_moves_its_share_only() {
        // 5 -> 6 nodes at K=3: the new node's sixth of the slots moves, not half as in a re-deal.
        for partitions in [16, 256] {
            let old: Vec<NodeId> = (0..5).map(id).collect();
            let new: Vec<NodeId> = (0..6).map(id).collect();
            let current = round_robin(&old, partitions, 3);
            let out = checked(&current, &plain(&new), 3);
            assert_eq!(moves(&current, &out), partitions * 3 / 6);
            let redeal = moves(&current, &round_robin(&new, partitions, 3));
            assert!(redeal >= partitions * 3 * 2 / 5, "re-deal moves {redeal}");
        }
    }

    #[test]
    fn growth_sequence_three_four_six() {
        let ids: Vec<NodeId> = (0..6).map(id).collect();
        let start = round_robin(&ids[..3], 16, 3);
        let four = checked(&start, &plain(&ids[..4]), 3);
        assert_eq!((moves(&start, &four), minimum_moves(&start, &plain(&ids[..4]), 3)), (12, 12));
        let six = checked(&four, &plain(&ids), 3);
        assert_eq!((moves(&four, &six), minimum_moves(&four, &plain(&ids), 3)), (16, 16));
        // A re-deal moves as much for the first step and more for the second.
        assert_eq!(moves(&start, &round_robin(&ids[..4], 16, 3)), 12);
        assert!(moves(&round_robin(&ids[..4], 16, 3), &round_robin(&ids, 16, 3)) > 16);
    }

    #[test]
    fn fresh_layouts_are_balanced() {
        let sizes =
            (1..=20).flat_map(|s| (1..=s.min(4)).map(move |k| (s, k))).chain([(32, 3), (64, 3), (64, 1)]);
        for (s, k) in sizes {
            let ids: Vec<NodeId> = (0..s).map(id).collect();
            let current = vec![Vec::new(); partitions_for(s, k)];
            let out = checked(&current, &plain(&ids), k);
            assert_eq!(moves(&current, &out), current.len() * k);
        }
    }

    #[test]
    fn a_balanced_layout_stays_put() {
        for (s, k) in [(1, 1), (3, 3), (5, 3), (7, 2), (17, 1), (64, 3)] {
            let ids: Vec<NodeId> = (0..s).map(id).collect();
            let current = round_robin(&ids, partitions_for(s, k), k);
            assert_eq!(checked(&current, &plain(&ids), k), current);
        }
    }

    #[test]
    fn kept_replicas_keep_their_positions() {
        let ids: Vec<NodeId> = (0..5).map(id).collect();
        let current = round_robin(&ids, 16, 3);
        let gone = ids[2];
        let out = checked(&current, &plain(&[&ids[..2], &ids[3..]].concat()), 3);
        for (before, after) in current.iter().zip(&out) {
            for (slot, (&old, &new)) in before.iter().zip(after).enumerate() {
                assert!(old == new || old == gone, "slot {slot}: {before:?} -> {after:?}");
            }
        }
    }

    #[test]
    fn overlong_and_stale_sets_are_trimmed() {
        let ids: Vec<NodeId> = (0..4).map(id).collect();
        // Every partition names all four nodes, a node that left, and a duplicate.
        let current: Sets = (0..16).map(|_| [&ids[..], &[999, ids[0]]].concat()).collect();
        let out = checked(&current, &plain(&ids), 2);
        assert_eq!(moves(&current, &out), 0);
    }

    #[test]
    fn errors() {
        let nodes = plain(&[1, 2]);
        assert_eq!(plan(&[vec![1]], &nodes, 0), Err(LayoutError::NoReplication));
        assert_eq!(
            plan(&[vec![1]], &nodes, 3),
            Err(LayoutError::NotEnoughNodes { replication: 3, nodes: 2 })
        );
        assert_eq!(plan(&[vec![1]], &plain(&[1, 2, 1]), 1), Err(LayoutError::DuplicateNode(1)));
        assert_eq!(minimum_moves(&[vec![1]], &nodes, 3), 0);
        assert_eq!(plan(&[], &nodes, 2), Ok(Vec::new()));
    }

    /// Every zoneless balanced layout, searched exhaustively: the fewest moves from `current`.
    fn brute_minimum(current: &[Vec<NodeId>], ids: &[NodeId], replication: usize) -> usize {
        let mut subsets: Sets = vec![Vec::new()];
        for _ in 0..replication {
            let mut longer = Vec::new();
            for set in &subsets {
                for &id in ids.iter().filter(|&&id| set.last().is_none_or(|&last| id > last)) {
                    longer.push([&set[..], &[id]].concat());
                }
            }
            subsets = longer;
        }
        let slots = current.len() * replication;
        let (floor, ceil) = (slots / ids.len(), slots.div_ceil(ids.len()));
        let mut loads: BTreeMap<NodeId, usize> = ids.iter().map(|&id| (id, 0)).collect();
        let mut best = usize::MAX;
        search(current, &subsets, (floor, ceil), &mut loads, 0, &mut best);
        best
    }

    fn search(
        current: &[Vec<NodeId>],
        subsets: &Sets,
        (floor, ceil): (usize, usize),
        loads: &mut BTreeMap<NodeId, usize>,
        cost: usize,
        best: &mut usize,
    ) {
        let p = loads.values().sum::<usize>() / subsets[0].len();
        if cost >= *best {
            return;
        }
        if p == current.len() {
            if loads.values().all(|&l| l >= floor) {
                *best = cost;
            }
            return;
        }
        for set in subsets {
            if set.iter().any(|id| loads[id] >= ceil) {
                continue;
            }
            set.iter().for_each(|&id| *loads.get_mut(&id).unwrap() += 1);
            let added = set.iter().filter(|id| !current[p].contains(id)).count();
            search(current, subsets, (floor, ceil), loads, cost + added, best);
            set.iter().for_each(|&id| *loads.get_mut(&id).unwrap() -= 1);
        }
    }

    /// A small deterministic pseudo-random generator.
    fn lcg(seed: &mut u64) -> usize {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 33) as usize
    }

    /// `partitions` sets of 0 to K + 1 ids drawn from `pool` (duplicates and strangers included).
    fn random_sets(seed: &mut u64, partitions: usize, replication: usize, pool: &[NodeId]) -> Sets {
        (0..partitions)
            .map(|_| (0..lcg(seed) % (replication + 2)).map(|_| pool[lcg(seed) % pool.len()]).collect())
            .collect()
    }

    #[test]
    fn brute_force_agrees_on_tiny_clusters() {
        let mut seed = 7;
        for (partitions, nodes, replication) in
            [(4, 3, 2), (5, 4, 2), (6, 4, 1), (4, 5, 3), (5, 3, 1), (3, 4, 3)]
        {
            let ids: Vec<NodeId> = (0..nodes).map(id).collect();
            for _ in 0..6 {
                let pool: Vec<NodeId> = ids.iter().copied().chain([999]).collect();
                let current = random_sets(&mut seed, partitions, replication, &pool);
                let out = checked(&current, &plain(&ids), replication);
                let brute = brute_minimum(&current, &ids, replication);
                assert_eq!(moves(&current, &out), brute, "{current:?} over {ids:?} at K={replication}");
            }
        }
    }

    #[test]
    fn random_changes_with_zones_are_valid_and_minimal() {
        let mut seed = 11;
        let names = ["a", "b", "c", "d"];
        for round in 0..60 {
            let count = 2 + lcg(&mut seed) % 9;
            let nodes: Vec<Node> = (0..count)
                .map(|i| match lcg(&mut seed) % 5 {
                    4 => Node::new(id(i)),
                    z => Node::zoned(id(i), names[z]),
                })
                .collect();
            let replication = 1 + lcg(&mut seed) % count.min(4);
            let partitions = [16, 16, 256][round % 3];
            let pool: Vec<NodeId> = (0..count + 3).map(id).collect();
            let current = random_sets(&mut seed, partitions, replication, &pool);
            let out = checked(&current, &nodes, replication);
            assert_eq!(checked(&out, &nodes, replication), out, "a plan is its own fixed point");
        }
    }

    fn zoned(spec: &[(usize, &str)]) -> Vec<Node> {
        spec.iter().map(|&(i, zone)| Node::zoned(id(i), zone)).collect()
    }

    #[test]
    fn three_zones_of_two_nodes_take_one_replica_each() {
        let nodes = zoned(&[(0, "a"), (1, "a"), (2, "b"), (3, "b"), (4, "c"), (5, "c")]);
        let fresh = checked(&vec![Vec::new(); 16], &nodes, 3);
        assert!(load(&fresh).values().all(|&l| l == 8));
        // Zones introduced on a zoneless round-robin layout: the violations are repaired.
        let ids: Vec<NodeId> = (0..6).map(id).collect();
        let current = round_robin(&ids, 16, 3);
        let fixed = checked(&current, &nodes, 3);
        assert!(moves(&current, &fixed) > 0);
        // A node joins zone c: only its share moves; the zone's nodes split the zone's 16 slots.
        let mut grown = nodes.clone();
        grown.push(Node::zoned(id(6), "c"));
        let out = checked(&fixed, &grown, 3);
        assert_eq!(moves(&fixed, &out), 5);
        // Zone a loses a node: the survivor must hold every partition.
        let out = checked(&fixed, &nodes[1..], 3);
        assert_eq!(load(&out)[&id(1)], 16);
    }

    #[test]
    fn fewer_zones_than_replicas_are_ignored() {
        let nodes = zoned(&[(0, "a"), (1, "a"), (2, "a"), (3, "b"), (4, "b")]);
        let ids: Vec<NodeId> = nodes.iter().map(|node| node.id).collect();
        let current = round_robin(&ids[..4], 16, 3);
        let out = checked(&current, &nodes, 3);
        assert_eq!(out, checked(&current, &plain(&ids), 3));
    }

    #[test]
    fn uneven_zones_favour_distinct_zones_over_balance() {
        // Three zones for K=3: the lone nodes of a and b hold every partition.
        let nodes = zoned(&[(0, "a"), (1, "b"), (2, "c"), (3, "c"), (4, "c"), (5, "c")]);
        let out = checked(&vec![Vec::new(); 16], &nodes, 3);
        let held: Vec<usize> = load(&out).values().copied().collect();
        assert_eq!(held, [16, 16, 4, 4, 4, 4]);
        // Four zones of 1, 2, 3, 4 nodes: d is capped at 16, the rest spread evenly.
        let nodes = zoned(&[(0, "a"), (1, "b"), (2, "b"), (3, "c"), (4, "c"), (5, "c")]);
        let nodes = [nodes, zoned(&[(6, "d"), (7, "d"), (8, "d"), (9, "d")])].concat();
        let out = checked(&vec![Vec::new(); 16], &nodes, 3);
        let held = load(&out);
        assert!((6..10).all(|i| held[&id(i)] == 4), "{held:?}");
        assert!((0..6).all(|i| (5..=6).contains(&held[&id(i)])), "{held:?}");
        // Zoneless nodes are zones of their own.
        let nodes = [zoned(&[(0, "a"), (1, "a"), (2, "a")]), plain(&[id(3), id(4)])].concat();
        let out = checked(&round_robin(&(0..5).map(id).collect::<Vec<_>>(), 16, 3), &nodes, 3);
        assert!([id(3), id(4)].iter().all(|i| load(&out)[i] == 16));
    }

    #[test]
    fn split_keeps_replica_sets() {
        let current: Sets = vec![vec![1, 2], vec![3, 4], vec![5, 6]];
        assert_eq!(split(&current, 0), current);
        let once = split(&current, 1);
        assert_eq!(once.len(), 48);
        assert!((0..48).all(|child| once[child] == current[child / 16]));
        let twice = split(&current, 2);
        assert_eq!(twice, split(&once, 1));
        // A key's partition at one more digit is a child of its partition now.
        for key in [&b"foo"[..], b"", b"velour", b"fog"] {
            let parent = crate::partition::of(key, 1) as usize;
            let child = crate::partition::of(key, 2) as usize;
            assert_eq!(child / 16, parent);
            let sixteen: Sets = (0..16).map(|p| vec![p]).collect();
            assert_eq!(split(&sixteen, 1)[child], sixteen[parent]);
        }
    }

    #[test]
    fn moves_and_load_count_slots() {
        let from: Sets = vec![vec![1, 2], vec![2, 3]];
        let to: Sets = vec![vec![2, 1], vec![3, 4], vec![5, 6]];
        assert_eq!(moves(&from, &to), 3);
        assert_eq!(moves(&to, &to), 0);
        assert_eq!(load(&to), BTreeMap::from([(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]));
    }

    #[test]
    fn large_cluster_is_planned() {
        let ids: Vec<NodeId> = (0..64).map(id).collect();
        let current = round_robin(&ids[..63], 4096, 3);
        let out = plan(&current, &plain(&ids), 3).unwrap();
        assert_eq!(moves(&current, &out), 4096 * 3 / 64);
        assert_eq!(load(&out)[&ids[63]], 192);
    }
}
