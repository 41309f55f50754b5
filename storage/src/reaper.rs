//! Reaping tombstones: removing a deleted key's tombstone once nothing can bring the key back.
//!
//! A delete leaves a tombstone so that an older write of the key, arriving later or held by a
//! replica that missed the delete, loses to it. Kept forever, tombstones would make a store
//! grow with every key ever deleted. A tombstone stamped T is removed once both hold:
//!
//! 1. **No older write can still arrive**: T is more than the grace period G
//!    (`--tombstone-grace`) behind this node's clock, and every storage node refuses a
//!    frontend's write stamped more than G behind its own clock (`crate::Limits`). So any
//!    write that reaches a node after it removed T is stamped after T, and wins rightly.
//! 2. **No replica holds an older value**: every replica of the key's partition holds that
//!    very tombstone or nothing for the key, the partition is not moving, and every replica
//!    is up. A replica that was away (down, or cut off) blocks reaping in its partitions until
//!    it is back and has caught up, so it can never spread a value the others deleted. A node
//!    removed from the map purges its data before it could serve any.
//!
//! The partition's first replica coordinates (the others take over the tombstones it left
//! once they are older than 2G); pure rules in [`reapable_in`]. It asks every other replica
//! whether it holds the tombstone or nothing (`POST /v1/reap?phase=check`), then asks them to
//! drop it (`phase=drop`), then drops its own. A replica drops only the exact tombstone it is
//! asked about, and only once it is older than G by its own clock too; a node whose drop failed
//! still holds the tombstone and reaps it later (the others then answer "nothing").
//! Anti-entropy never sends a tombstone older than G to a node that holds nothing for the key
//! (`crate::repair`): for that node, nothing and the tombstone read the same, and it may have
//! reaped it.
//!
//! Cost: the store keeps an index of its tombstones by age (`crate::store::reaping`), so a pass
//! examines at most [`PASS_BUDGET`] index entries, continuing where the last pass stopped (and
//! the next comes at once while a backlog lasts); work is proportional to the deletes, not to
//! the data. What a reaped key loses: its 404 no longer carries the deletion's version.

use crate::repair::{decode_versions, encode_versions};
use crate::store::VersionEntry;
use crate::Node;
use bytes::Bytes;
use common::http::{Client, RpcError};
use common::partition::{self, Partition};
use common::placement::{NodeId, NodeState, PartitionMap};
use common::proto;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Index entries examined per pass.
pub const PASS_BUDGET: usize = 4096;
/// The pause between passes while a backlog lasts (a million deletes at once, say): a pass
/// then takes tens of milliseconds, so reaping takes a bounded share of the node.
const BACKLOG_PAUSE: Duration = Duration::from_millis(20);
/// Tombstones removed after which the store is compacted once the backlog is done: removing a
/// record writes a deletion marker into the engine, and the space comes back only when a
/// compaction merges the two (measured with `bench/reap.sh`: after reaping 1 M tombstones the
/// data directory kept growing until compacted).
const COMPACT_AFTER: usize = 100_000;
/// Deadline of one check or drop call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The two steps of reaping, as the `phase` parameter of `POST /v1/reap` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Does this node hold the tombstone or nothing? Changes nothing.
    Check,
    /// Drop the tombstone if it is exactly what this node holds.
    Drop,
}

impl Phase {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "check" => Some(Phase::Check),
            "drop" => Some(Phase::Drop),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Check => "check",
            Phase::Drop => "drop",
        }
    }
}

/// The peers that must agree before `me` reaps tombstones of `partition` under `map`, or why
/// it may not: the partition is moving, `me` is not one of its replicas, or a replica is not up.
pub fn reapable_in(map: &PartitionMap, partition: Partition, me: NodeId) -> Result<Vec<NodeId>, String> {
    let assignment = map.assignment(partition);
    if assignment.is_moving() {
        return Err(format!("partition {partition} is moving"));
    }
    if !assignment.replicas.contains(&me) {
        return Err(format!("node {me} is not a replica of partition {partition}"));
    }
    if let Some(&away) = assignment.replicas.iter().find(|&&id| map.state(id) != NodeState::Up) {
        return Err(format!("replica {away} of partition {partition} is not up"));
    }
    Ok(assignment.replicas.iter().copied().filter(|&id| id != me).collect())
}

/// Whether a tombstone stamped `timestamp` is past the grace period at `now` (microseconds).
pub fn past_grace(timestamp: u64, now: u64, grace_us: u64) -> bool {
    now.saturating_sub(timestamp) > grace_us
}

/// Serves `POST /v1/reap?phase=...`: for each (key, timestamp) of `body` (a versions list), one
/// byte, 1 if this node holds that tombstone or nothing (check), or holds nothing now (drop).
/// A key of a partition this node may not reap in, or too young by this node's clock, gets 0.
pub fn serve(node: &Node, phase: Phase, body: Bytes) -> Result<Bytes, String> {
    let entries = decode_versions(body).map_err(|e| e.to_string())?;
    let Some((map, me)) = node.map_and_id() else { return Ok(Bytes::from(vec![0; entries.len()])) };
    let now = common::version::now_micros();
    let eligible = |entry: &VersionEntry| {
        let partition = partition::of(&entry.key, map.digits);
        entry.tombstone
            && reapable_in(&map, partition, me).is_ok()
            && past_grace(entry.timestamp, now, node.limits.tombstone_grace_us)
    };
    let mut answer = vec![0u8; entries.len()];
    let chosen: Vec<usize> = (0..entries.len()).filter(|&i| eligible(&entries[i])).collect();
    tokio::task::block_in_place(|| -> Result<(), String> {
        match phase {
            Phase::Check => {
                for &i in &chosen {
                    let (key, timestamp) = (&entries[i].key, entries[i].timestamp);
                    let held =
                        node.store.holds_tombstone_or_nothing(key, timestamp).map_err(|e| e.to_string())?;
                    answer[i] = held as u8;
                }
            }
            Phase::Drop => {
                let tombstones: Vec<(Bytes, u64)> =
                    chosen.iter().map(|&i| (entries[i].key.clone(), entries[i].timestamp)).collect();
                let reaped = node.store.reap(&tombstones).map_err(|e| e.to_string())?;
                for (&i, gone) in chosen.iter().zip(reaped.gone) {
                    answer[i] = gone as u8;
                }
                count_reaped(node, reaped.removed);
            }
        }
        Ok(())
    })?;
    Ok(Bytes::from(answer))
}

fn count_reaped(node: &Node, removed: usize) {
    node.repair.tombstones_reaped.fetch_add(removed as u64, Ordering::Relaxed);
    crate::metrics::tombstones_reaped(removed as u64);
}

/// Reaps tombstones while the node is up, until `shutdown`: a pass every `interval`, or after
/// a short pause while the last pass left old enough tombstones unexamined.
pub async fn run(
    node: Arc<Node>,
    client: Client,
    interval: Duration,
    mut shutdown: common::shutdown::Shutdown,
) {
    let mut cursor = None;
    // Removals counted here include those other replicas asked for (`serve`).
    let removed = || node.repair.tombstones_reaped.load(Ordering::Relaxed);
    let (mut at_last_compaction, mut at_last_pass) = (removed(), removed());
    loop {
        let quiet = removed() == at_last_pass;
        at_last_pass = removed();
        if cursor.is_none() && quiet && removed() - at_last_compaction >= COMPACT_AFTER as u64 {
            // The backlog is done: reclaim the space of what it removed now, not whenever
            // later writes happen to compact that part of the tree.
            at_last_compaction = removed();
            let store = node.store.clone();
            let started = std::time::Instant::now();
            match tokio::task::spawn_blocking(move || store.compact()).await {
                Ok(Ok(())) => log::info!("compacted the store after reaping, in {:.1?}", started.elapsed()),
                Ok(Err(e)) => log::warn!("compaction after reaping failed: {e}"),
                Err(e) => log::warn!("compaction after reaping failed: {e}"),
            }
        }
        // While a backlog lasts, the next pass comes at once.
        let pause = if cursor.is_some() { BACKLOG_PAUSE } else { interval };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.wait() => return,
        }
        if node.read_permission().is_err() {
            continue;
        }
        match pass(&node, &client, cursor.take()).await {
            Ok(pass) => cursor = pass.next,
            Err(e) => log::warn!("reaping tombstones failed: {e}"),
        }
    }
}

/// What one [`pass`] did.
#[derive(Debug, Default)]
pub struct Pass {
    /// Where the next pass continues; `None`: from the oldest tombstone, after `interval`.
    pub next: Option<Vec<u8>>,
    /// Tombstones this node removed.
    pub removed: usize,
}

/// One pass: the tombstones past the grace period from `cursor` on, reaped where every
/// replica agrees.
pub async fn pass(node: &Node, client: &Client, cursor: Option<Vec<u8>>) -> Result<Pass, String> {
    let Some((map, me)) = node.map_and_id() else { return Ok(Pass { next: cursor, removed: 0 }) };
    let before = common::version::now_micros().saturating_sub(node.limits.tombstone_grace_us);
    let scan = tokio::task::block_in_place(|| node.store.reapable(before, cursor.as_deref(), PASS_BUDGET))
        .map_err(|e| e.to_string())?;
    let mut by_partition: BTreeMap<Partition, Vec<(Bytes, u64)>> = BTreeMap::new();
    for (key, timestamp) in scan.found {
        by_partition.entry(partition::of(&key, map.digits)).or_default().push((key, timestamp));
    }
    let now = common::version::now_micros();
    let mut removed = 0;
    for (partition, mut tombstones) in by_partition {
        // The partition's first replica reaps its tombstones; the others only those it left
        // (it was down, or reaped its own copy while a drop here failed), so the K replicas do
        // not all do the same work.
        if map.replicas_of(partition).first() != Some(&me) {
            let grace = node.limits.tombstone_grace_us;
            tombstones.retain(|&(_, timestamp)| past_grace(timestamp, now, grace.saturating_mul(2)));
        }
        if tombstones.is_empty() {
            continue;
        }
        match reapable_in(&map, partition, me) {
            Ok(peers) => removed += reap_partition(node, client, &map, &peers, tombstones).await?,
            Err(why) => log::debug!("not reaping {} tombstones: {why}", tombstones.len()),
        }
    }
    Ok(Pass { next: scan.next, removed })
}

/// Reaps `tombstones` (of one partition) on `peers` and here, those every peer agrees on;
/// returns how many this node removed.
async fn reap_partition(
    node: &Node,
    client: &Client,
    map: &PartitionMap,
    peers: &[NodeId],
    tombstones: Vec<(Bytes, u64)>,
) -> Result<usize, String> {
    let body = encode_tombstones(&tombstones);
    let mut agreed = vec![true; tombstones.len()];
    for answer in ask_all(client, map, peers, Phase::Check, &body).await {
        let Ok(answer) = answer else { return Ok(0) }; // a replica did not answer: not now
        for (agreed, &held) in agreed.iter_mut().zip(answer.iter()) {
            *agreed &= held == 1;
        }
    }
    let agreed: Vec<(Bytes, u64)> =
        tombstones.into_iter().zip(agreed).filter(|(_, agreed)| *agreed).map(|(t, _)| t).collect();
    if agreed.is_empty() {
        return Ok(0);
    }
    // The peers' answers do not matter: every one of them held the tombstone or nothing, so
    // none holds an older value; a peer that did not drop it reaps it itself later.
    let _ = ask_all(client, map, peers, Phase::Drop, &encode_tombstones(&agreed)).await;
    let reaped = tokio::task::block_in_place(|| node.store.reap(&agreed)).map_err(|e| e.to_string())?;
    count_reaped(node, reaped.removed);
    Ok(reaped.removed)
}

/// The body of a reap call: the tombstones as a versions list.
fn encode_tombstones(tombstones: &[(Bytes, u64)]) -> Bytes {
    let entries: Vec<VersionEntry> = tombstones
        .iter()
        .map(|(key, timestamp)| VersionEntry {
            key: key.clone(),
            timestamp: *timestamp,
            tombstone: true,
            value_fingerprint: 0,
        })
        .collect();
    encode_versions(&entries)
}

/// Sends one reap call to every peer at once; each peer's answer bytes, or why it failed.
async fn ask_all(
    client: &Client,
    map: &PartitionMap,
    peers: &[NodeId],
    phase: Phase,
    body: &Bytes,
) -> Vec<Result<Bytes, RpcError>> {
    let calls = peers.iter().map(|&peer| {
        let addr = map.member(peer).map(|m| m.addr.clone()).unwrap_or_default();
        let url = format!("http://{addr}{}?phase={}", proto::REAP_PATH, phase.name());
        let body = body.clone();
        async move {
            let make = || Request::post(url.as_str()).body(Full::new(body.clone())).expect("valid request");
            match client.send_collect(make, CALL_TIMEOUT).await? {
                (parts, answer) if parts.status == StatusCode::OK => Ok(answer),
                (parts, message) => Err(RpcError::Status {
                    status: parts.status,
                    message: String::from_utf8_lossy(&message).into_owned(),
                }),
            }
        }
    });
    futures_util::future::join_all(calls).await
}

/// The interval between passes for a grace period: a quarter of it, within 250 ms and 30 s.
pub fn interval_for(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_millis(250), Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::placement::{Assignment, Member};

    fn map(states: &[NodeState], assignment: Assignment) -> PartitionMap {
        let members: Vec<Member> = states
            .iter()
            .enumerate()
            .map(|(i, &state)| Member {
                state,
                ..Member::up(i as NodeId + 1, format!("127.0.0.1:{}", 7001 + i))
            })
            .collect();
        let mut map = PartitionMap::build(1, members, 3).expect("valid map");
        for p in 0..map.partition_count() {
            map.partitions[p as usize] = assignment.clone();
        }
        map
    }

    #[test]
    fn only_settled_partitions_whose_replicas_are_all_up_are_reaped() {
        use NodeState::*;
        let settled = Assignment::settled(vec![1, 2, 3]);
        let moving = Assignment { next: Some(vec![1, 2, 4]), ..settled.clone() };
        let retiring = Assignment { retiring: vec![4], ..settled.clone() };
        type Case<'a> = (&'a [NodeState], &'a Assignment, NodeId, Result<Vec<NodeId>, &'a str>);
        let cases: &[Case] = &[
            (&[Up, Up, Up], &settled, 1, Ok(vec![2, 3])),
            (&[Up, Up, Up], &settled, 3, Ok(vec![1, 2])),
            (&[Up, Up, Up, Up], &settled, 4, Err("not a replica")),
            (&[Up, Down, Up], &settled, 1, Err("replica 2 of partition 0 is not up")),
            (&[Up, Up, CatchingUp], &settled, 1, Err("replica 3 of partition 0 is not up")),
            (&[Up, Up, Up, Up], &moving, 1, Err("moving")),
            (&[Up, Up, Up, Up], &retiring, 1, Err("moving")),
        ];
        for (states, assignment, me, expected) in cases {
            let got = reapable_in(&map(states, (*assignment).clone()), 0, *me);
            match (got, expected) {
                (Ok(peers), Ok(want)) => assert_eq!(&peers, want, "{states:?} {assignment:?} me {me}"),
                (Err(why), Err(want)) => assert!(why.contains(want), "{why} should say {want}"),
                (got, want) => panic!("{states:?} {assignment:?} me {me}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_grace_period_is_strict_and_survives_clocks_behind() {
        assert!(!past_grace(100, 100, 0));
        assert!(past_grace(100, 101, 0));
        assert!(!past_grace(100, 1100, 1000));
        assert!(past_grace(100, 1101, 1000));
        assert!(!past_grace(5000, 100, 1000), "a tombstone from the future is not old");
    }

    #[test]
    fn passes_come_often_enough_but_not_too_often() {
        assert_eq!(interval_for(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(interval_for(Duration::from_millis(100)), Duration::from_millis(250));
        assert_eq!(interval_for(Duration::from_secs(3600)), Duration::from_secs(30));
    }
}
