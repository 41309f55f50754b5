//! The controller's metrics (see `common::telemetry` for the conventions): members by state,
//! partitions by health, moves in progress and the bytes they have left, and the map epoch. All
//! are read from the cluster state when `/metrics` is scraped.

use common::placement::NodeState;
use common::proto::{ClusterStatus, MovePhase};
use metrics::{describe_gauge, gauge, Unit};

/// Gives every metric its help text and unit (called once at start).
pub fn describe() {
    describe_gauge!("velourfog_controller_members", Unit::Count, "Storage nodes in the map, by state.");
    describe_gauge!(
        "velourfog_controller_partitions",
        Unit::Count,
        "Partitions by health: all_replicas_up; write_quorum (a majority of replicas up, all_replicas_up included); degraded (a replica not up)."
    );
    describe_gauge!(
        "velourfog_controller_partitions_degraded",
        Unit::Count,
        "Partitions with a replica not up."
    );
    describe_gauge!("velourfog_controller_moves", Unit::Count, "Partition moves in progress, by phase.");
    describe_gauge!(
        "velourfog_controller_move_bytes_left",
        Unit::Bytes,
        "Bytes the moves in progress have left to copy."
    );
    describe_gauge!("velourfog_controller_map_epoch", "Epoch of the current partition map.");
    describe_gauge!("velourfog_controller_pending_nodes", Unit::Count, "Storage nodes waiting to be added.");
    describe_gauge!("velourfog_controller_frontends", Unit::Count, "Frontends following the map.");
}

/// Sets every gauge from `status`.
pub fn refresh(status: &ClusterStatus) {
    for (state, label) in
        [(NodeState::Up, "up"), (NodeState::CatchingUp, "catching_up"), (NodeState::Down, "down")]
    {
        let count = status.storage.iter().filter(|m| m.state == state).count();
        gauge!("velourfog_controller_members", "state" => label).set(count as f64);
    }
    let degraded = status.partitions_degraded.len();
    let quorate = status
        .partitions_degraded
        .iter()
        .filter(|p| p.replicas.iter().filter(|(_, s)| *s == NodeState::Up).count() > p.replicas.len() / 2)
        .count();
    let all_up = status.partitions_healthy;
    gauge!("velourfog_controller_partitions", "health" => "all_replicas_up").set(all_up as f64);
    gauge!("velourfog_controller_partitions", "health" => "write_quorum").set((all_up + quorate) as f64);
    gauge!("velourfog_controller_partitions", "health" => "degraded").set(degraded as f64);
    gauge!("velourfog_controller_partitions_degraded").set(degraded as f64);
    for (phase, label) in
        [(MovePhase::Queued, "queued"), (MovePhase::Copying, "copying"), (MovePhase::Retiring, "retiring")]
    {
        let count = status.moves.iter().filter(|m| m.phase == phase).count();
        gauge!("velourfog_controller_moves", "phase" => label).set(count as f64);
    }
    let left: u64 = status.moves.iter().map(|m| m.bytes_left).sum();
    gauge!("velourfog_controller_move_bytes_left").set(left as f64);
    gauge!("velourfog_controller_map_epoch").set(status.epoch.unwrap_or(0) as f64);
    gauge!("velourfog_controller_pending_nodes").set(status.pending.len() as f64);
    gauge!("velourfog_controller_frontends").set(status.frontends.len() as f64);
}
