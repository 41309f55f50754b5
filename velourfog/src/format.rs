//! Pure rendering of the controller's answers for people: the `status` report, one line of
//! progress while a change settles, byte sizes, rates and durations.
//!
//! No I/O here, so every layout is unit-tested. Column widths follow the content, and lines carry
//! no trailing spaces, so the output is stable enough to diff. Machine-readable output does not
//! come from here: `--json` prints the controller's own JSON (and [`Progress`]).

use common::placement::{NodeId, NodeState};
use common::proto::{ClusterStatus, JoinPolicy, MovePhase, MoveStatus, PartitionHealth};
use serde::Serialize;
use std::fmt::Write;

/// Degraded partitions listed one by one in `status`; any more are only counted.
pub const MAX_DEGRADED_LISTED: usize = 10;

/// Where a change stands while `--wait` polls: the moves left and, for a node removal, whether
/// the node is still a member.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Progress {
    /// The map epoch the progress was read at.
    pub epoch: Option<u64>,
    /// Partition moves in progress or queued.
    pub moves_left: usize,
    /// Of those, the moves whose new replicas are pulling the partition.
    pub copying: usize,
    /// Of those, the moves letting the old replicas go.
    pub retiring: usize,
    /// Of those, the moves waiting for a transfer slot.
    pub queued: usize,
    /// Bytes copied and still to copy, over the moves in progress.
    pub bytes_done: u64,
    pub bytes_left: u64,
    /// Sum of the moves' transfer rates.
    pub rate_bytes_per_s: f64,
    /// Seconds until every move is done at that rate, once there is a rate. Queued moves count
    /// as large as the average move in progress: keys hash evenly over the partitions.
    pub eta_s: Option<f64>,
    /// The node being removed, while the controller still lists it as a member.
    pub node_still_member: Option<NodeId>,
}

impl Progress {
    /// True once nothing is left to wait for.
    pub fn is_done(&self) -> bool {
        self.moves_left == 0 && self.node_still_member.is_none()
    }
}

/// Sums up `status` for a wait on its moves and, if `leaving` is given, on that node's leaving.
pub fn progress(status: &ClusterStatus, leaving: Option<NodeId>) -> Progress {
    let count = |phase| status.moves.iter().filter(|m| m.phase == phase).count();
    let bytes_done = status.moves.iter().map(|m| m.bytes_done).sum();
    let bytes_left: u64 = status.moves.iter().map(|m| m.bytes_left).sum();
    // `+ 0.0`: an empty float sum is -0.0, which would show in the JSON.
    let rate = status.moves.iter().map(|m| m.rate_bytes_per_s).filter(|r| r.is_finite()).sum::<f64>() + 0.0;
    let queued = count(MovePhase::Queued);
    let sized: Vec<u64> = status
        .moves
        .iter()
        .filter(|m| m.phase == MovePhase::Copying)
        .map(|m| m.bytes_done + m.bytes_left)
        .filter(|&size| size > 0)
        .collect();
    let average = if sized.is_empty() { 0.0 } else { sized.iter().sum::<u64>() as f64 / sized.len() as f64 };
    let to_copy = bytes_left as f64 + queued as f64 * average;
    Progress {
        epoch: status.epoch,
        moves_left: status.moves.len(),
        copying: count(MovePhase::Copying),
        retiring: count(MovePhase::Retiring),
        queued,
        bytes_done,
        bytes_left,
        rate_bytes_per_s: rate,
        eta_s: (rate > 0.0).then(|| to_copy / rate),
        node_still_member: leaving.filter(|&id| status.storage.iter().any(|s| s.node_id == id)),
    }
}

/// One line of progress, such as
/// `3 moves left (1 copying, 2 queued): 1.2 MiB done, 3.4 MiB left, 8.0 MiB/s, ETA 0.4 s`.
pub fn format_progress(progress: &Progress) -> String {
    if progress.moves_left == 0 {
        return match progress.node_still_member {
            Some(id) => format!("all moves done; waiting for node {id} to leave the map"),
            None => "all moves done".to_owned(),
        };
    }
    let phases: Vec<String> =
        [(progress.copying, "copying"), (progress.retiring, "retiring"), (progress.queued, "queued")]
            .into_iter()
            .filter(|&(n, _)| n > 0)
            .map(|(n, phase)| format!("{n} {phase}"))
            .collect();
    format!(
        "{} left ({}): {} done, {} left, {}, ETA {}",
        plural(progress.moves_left, "move"),
        phases.join(", "),
        human_bytes(progress.bytes_done),
        human_bytes(progress.bytes_left),
        human_rate(progress.rate_bytes_per_s),
        progress.eta_s.map_or_else(|| "-".to_owned(), human_duration),
    )
}

/// The `status` report: the cluster line, the member table, pending nodes, frontends,
/// partition health and every move.
pub fn format_status(status: &ClusterStatus) -> String {
    let mut out = String::new();
    out.push_str(&cluster_line(status));
    out.push('\n');
    out.push_str(&members_table(status));
    if !status.pending.is_empty() {
        out.push_str("pending (approve with `velourfog node add ADDR`):\n");
        for p in &status.pending {
            let zone = p.zone.as_deref().unwrap_or("-");
            let seen = human_duration(p.last_seen_ms as f64 / 1000.0);
            let _ = writeln!(out, "  {}  zone {zone}, last seen {seen} ago", p.addr);
        }
    }
    let frontends: Vec<&str> = status.frontends.iter().map(|f| f.addr.as_str()).collect();
    let _ = writeln!(
        out,
        "frontends: {}",
        if frontends.is_empty() { "none".to_owned() } else { frontends.join(", ") }
    );
    if status.epoch.is_some() {
        out.push_str(&health(status.partitions_healthy, &status.partitions_degraded));
    }
    out.push_str(&moves(&status.moves));
    out
}

fn cluster_line(status: &ClusterStatus) -> String {
    let join = match status.join {
        JoinPolicy::Auto => "auto",
        JoinPolicy::Manual => "manual",
    };
    let k = status.replication;
    match (status.epoch, status.partitions) {
        (Some(epoch), partitions) => format!(
            "cluster: map epoch {epoch}, {}, {}, {k} replicas each, join {join}",
            plural(status.storage.len(), "storage node"),
            plural(partitions.unwrap_or(0) as usize, "partition"),
        ),
        (None, _) => format!(
            "cluster: not formed yet, {} of {} storage nodes registered, {k} replicas each, join {join}",
            status.storage.len(),
            status.expected_storage,
        ),
    }
}

fn members_table(status: &ClusterStatus) -> String {
    if status.storage.is_empty() {
        return "no storage nodes registered\n".to_owned();
    }
    let rows = status
        .storage
        .iter()
        .map(|s| {
            let mut state = state_name(s.state).to_owned();
            if s.leaving {
                state.push_str(" (leaving)");
            }
            if s.disk.is_some_and(|d| d.refusing_writes) {
                state.push_str(" (disk full)");
            }
            vec![
                s.node_id.to_string(),
                s.addr.clone(),
                state,
                s.zone.clone().unwrap_or_else(|| "-".to_owned()),
                s.partitions.to_string(),
                format!("{} ago", human_duration(s.last_seen_ms as f64 / 1000.0)),
            ]
        })
        .collect();
    let header = ["id", "addr", "state", "zone", "partitions", "last seen"];
    table(&header, &[true, false, false, false, true, true], rows)
}

fn health(healthy: usize, degraded: &[PartitionHealth]) -> String {
    let mut out = format!("partitions: {healthy} healthy, {} degraded\n", degraded.len());
    for d in degraded.iter().take(MAX_DEGRADED_LISTED) {
        let replicas: Vec<String> =
            d.replicas.iter().map(|&(id, state)| format!("{id} ({})", state_name(state))).collect();
        let _ = writeln!(out, "  partition {}: replicas {}", d.partition, replicas.join(", "));
    }
    if degraded.len() > MAX_DEGRADED_LISTED {
        let _ = writeln!(out, "  ... and {} more", degraded.len() - MAX_DEGRADED_LISTED);
    }
    out
}

fn moves(moves: &[MoveStatus]) -> String {
    if moves.is_empty() {
        return "moves: none, every partition is where it belongs\n".to_owned();
    }
    let queued = moves.iter().filter(|m| m.phase == MovePhase::Queued).count();
    let mut out = format!("moves: {} in progress, {queued} queued\n", moves.len() - queued);
    let rows = moves
        .iter()
        .map(|m| {
            let started = m.phase != MovePhase::Queued;
            let bytes = |b: u64| if started { human_bytes(b) } else { "-".to_owned() };
            vec![
                format!("partition {}", m.partition),
                phase_name(m.phase).to_owned(),
                format!("{:?} -> {:?}", m.from, m.to),
                bytes(m.bytes_done),
                bytes(m.bytes_left),
                if started { human_rate(m.rate_bytes_per_s) } else { "-".to_owned() },
                m.eta_s.map_or_else(|| "-".to_owned(), human_duration),
            ]
        })
        .collect();
    let header = ["move", "phase", "from -> to", "done", "left", "rate", "ETA"];
    out.push_str(&table(&header, &[false, false, false, true, true, true, true], rows));
    out
}

/// Lays out `rows` under `header` in columns two spaces apart, indented by two, numbers
/// (`right`) aligned right, without trailing spaces.
fn table(header: &[&str], right: &[bool], rows: Vec<Vec<String>>) -> String {
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let lines: Vec<Vec<String>> = std::iter::once(header).chain(rows).collect();
    let widths: Vec<usize> =
        (0..right.len()).map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::from(" ");
        for (c, cell) in line.iter().enumerate() {
            let w = widths[c];
            let _ = if right[c] { write!(text, " {cell:>w$} ") } else { write!(text, " {cell:<w$} ") };
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// How `status` names a node state.
pub fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Up => "up",
        NodeState::CatchingUp => "catching up",
        NodeState::Down => "down",
    }
}

/// How `status` names a move phase.
pub fn phase_name(phase: MovePhase) -> &'static str {
    match phase {
        MovePhase::Queued => "queued",
        MovePhase::Copying => "copying",
        MovePhase::Retiring => "retiring",
    }
}

/// A byte count in binary units with one decimal: `512 B`, `1.5 KiB`, `3.4 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    // 1023.95 and up would print as "1024.0": move to the next unit instead.
    while value >= 1023.95 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A transfer rate such as `8.0 MiB/s`, or `-` while there is none.
pub fn human_rate(bytes_per_s: f64) -> String {
    if bytes_per_s.is_finite() && bytes_per_s > 0.0 {
        format!("{}/s", human_bytes(bytes_per_s.round() as u64))
    } else {
        "-".to_owned()
    }
}

/// A duration in seconds, coarser as it grows: `0.4 s`, `42 s`, `3 min 20 s`, `2 h 05 min`.
pub fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_owned();
    }
    if seconds < 9.95 {
        return format!("{seconds:.1} s");
    }
    let whole = seconds.round() as u64;
    match whole {
        0..=59 => format!("{whole} s"),
        60..=3599 => format!("{} min {:02} s", whole / 60, whole % 60),
        _ => format!("{} h {:02} min", whole / 3600, whole % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::proto::{FrontendStatus, PendingStatus, StorageStatus};

    #[test]
    fn byte_sizes_read_in_binary_units() {
        let cases: &[(u64, &str)] = &[
            (0, "0 B"),
            (1, "1 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (1_048_575, "1.0 MiB"),
            (1_258_291, "1.2 MiB"),
            (3_565_158, "3.4 MiB"),
            (5 << 30, "5.0 GiB"),
            (3 << 40, "3.0 TiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for &(bytes, expected) in cases {
            assert_eq!(human_bytes(bytes), expected, "{bytes} bytes");
        }
    }

    #[test]
    fn durations_and_rates_read_at_a_sensible_precision() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0 s"),
            (0.42, "0.4 s"),
            (9.94, "9.9 s"),
            (9.96, "10 s"),
            (42.4, "42 s"),
            (200.0, "3 min 20 s"),
            (3599.4, "59 min 59 s"),
            (7500.0, "2 h 05 min"),
            (-1.0, "-"),
            (f64::NAN, "-"),
            (f64::INFINITY, "-"),
        ];
        for &(seconds, expected) in cases {
            assert_eq!(human_duration(seconds), expected, "{seconds} s");
        }
        assert_eq!(human_rate(8.0 * 1024.0 * 1024.0), "8.0 MiB/s");
        assert_eq!(human_rate(0.0), "-");
        assert_eq!(human_rate(f64::NAN), "-");
    }

    fn node(node_id: NodeId, port: u16, partitions: usize) -> StorageStatus {
        StorageStatus {
            node_id,
            addr: format!("127.0.0.1:{port}"),
            state: NodeState::Up,
            last_seen_ms: 300,
            partitions,
            zone: None,
            leaving: false,
            map_epoch: Some(12),
            disk: None,
        }
    }

    fn a_move(partition: u32, phase: MovePhase, done: u64, left: u64, rate: f64) -> MoveStatus {
        MoveStatus {
            partition,
            phase,
            from: vec![1, 2, 3],
            to: vec![1, 4, 3],
            bytes_done: done,
            bytes_left: left,
            rate_bytes_per_s: rate,
            eta_s: (rate > 0.0).then(|| left as f64 / rate),
        }
    }

    /// A cluster removing node 2: one move copying, one queued, one partition degraded.
    fn removing_node_2() -> ClusterStatus {
        let mut leaving = node(2, 7002, 0);
        leaving.leaving = true;
        let mut full = node(3, 7003, 12);
        full.disk = Some(common::proto::DiskStatus {
            free_bytes: 100 << 20,
            total_bytes: 10 << 30,
            floor_bytes: 256 << 20,
            refusing_writes: true,
        });
        let mut zoned = node(4, 7010, 12);
        zoned.zone = Some("rack-b".to_owned());
        zoned.state = NodeState::CatchingUp;
        ClusterStatus {
            expected_storage: 3,
            replication: 3,
            epoch: Some(12),
            partitions: Some(16),
            storage: vec![node(1, 7001, 12), leaving, full, zoned],
            frontends: vec![FrontendStatus {
                frontend_id: 1,
                addr: "127.0.0.1:8000".to_owned(),
                last_seen_ms: 10,
            }],
            partitions_healthy: 15,
            partitions_degraded: vec![PartitionHealth {
                partition: 3,
                replicas: vec![(1, NodeState::Up), (4, NodeState::CatchingUp), (3, NodeState::Up)],
            }],
            join: JoinPolicy::Manual,
            pending: vec![PendingStatus {
                addr: "127.0.0.1:7020".to_owned(),
                zone: None,
                last_seen_ms: 1200,
            }],
            moves: vec![
                a_move(3, MovePhase::Copying, 1_258_291, 3_565_158, 8.0 * 1024.0 * 1024.0),
                a_move(11, MovePhase::Queued, 0, 0, 0.0),
            ],
        }
    }

    #[test]
    fn status_shows_members_pending_health_and_moves() {
        let expected = "\
cluster: map epoch 12, 4 storage nodes, 16 partitions, 3 replicas each, join manual
  id  addr            state           zone    partitions  last seen
   1  127.0.0.1:7001  up              -               12  0.3 s ago
   2  127.0.0.1:7002  up (leaving)    -                0  0.3 s ago
   3  127.0.0.1:7003  up (disk full)  -               12  0.3 s ago
   4  127.0.0.1:7010  catching up     rack-b          12  0.3 s ago
pending (approve with `velourfog node add ADDR`):
  127.0.0.1:7020  zone -, last seen 1.2 s ago
frontends: 127.0.0.1:8000
partitions: 15 healthy, 1 degraded
  partition 3: replicas 1 (up), 4 (catching up), 3 (up)
moves: 1 in progress, 1 queued
  move          phase    from -> to                 done     left       rate    ETA
  partition 3   copying  [1, 2, 3] -> [1, 4, 3]  1.2 MiB  3.4 MiB  8.0 MiB/s  0.4 s
  partition 11  queued   [1, 2, 3] -> [1, 4, 3]        -        -          -      -
";
        assert_eq!(format_status(&removing_node_2()), expected);
    }

    #[test]
    fn status_of_a_cluster_not_formed_or_settled() {
        let mut status = removing_node_2();
        status.epoch = None;
        status.partitions = None;
        status.storage.truncate(1);
        status.frontends.clear();
        status.pending.clear();
        status.partitions_degraded.clear();
        status.moves.clear();
        status.join = JoinPolicy::Auto;
        let expected = "\
cluster: not formed yet, 1 of 3 storage nodes registered, 3 replicas each, join auto
  id  addr            state  zone  partitions  last seen
   1  127.0.0.1:7001  up     -             12  0.3 s ago
frontends: none
moves: none, every partition is where it belongs
";
        assert_eq!(format_status(&status), expected);
    }

    #[test]
    fn many_degraded_partitions_are_counted_not_listed() {
        let degraded: Vec<PartitionHealth> = (0..13)
            .map(|partition| PartitionHealth { partition, replicas: vec![(1, NodeState::Down)] })
            .collect();
        let text = health(3, &degraded);
        assert_eq!(text.lines().count(), 1 + MAX_DEGRADED_LISTED + 1);
        assert!(text.starts_with("partitions: 3 healthy, 13 degraded\n  partition 0: replicas 1 (down)\n"));
        assert!(text.ends_with("  ... and 3 more\n"));
    }

    #[test]
    fn progress_counts_moves_and_waits_for_the_node_to_leave() {
        let mut status = removing_node_2();
        let p = progress(&status, Some(2));
        assert_eq!((p.moves_left, p.copying, p.retiring, p.queued), (2, 1, 0, 1));
        assert_eq!((p.bytes_done, p.bytes_left), (1_258_291, 3_565_158));
        assert_eq!(p.node_still_member, Some(2));
        assert!(!p.is_done());
        assert_eq!(
            format_progress(&p),
            "2 moves left (1 copying, 1 queued): 1.2 MiB done, 3.4 MiB left, 8.0 MiB/s, ETA 1.0 s"
        );

        status.moves.clear();
        let p = progress(&status, Some(2));
        assert!(!p.is_done());
        assert_eq!(format_progress(&p), "all moves done; waiting for node 2 to leave the map");

        status.storage.retain(|s| s.node_id != 2);
        let p = progress(&status, Some(2));
        assert!(p.is_done());
        assert_eq!(format_progress(&p), "all moves done");
        assert!(serde_json::to_string(&p).unwrap().contains(r#""rate_bytes_per_s":0.0,"#));

        // Without a node to wait for, only the moves count.
        let mut status = removing_node_2();
        status.moves.truncate(1);
        status.moves[0].phase = MovePhase::Retiring;
        status.moves[0].rate_bytes_per_s = 0.0;
        let p = progress(&status, None);
        assert_eq!(p.node_still_member, None);
        assert_eq!(format_progress(&p), "1 move left (1 retiring): 1.2 MiB done, 3.4 MiB left, -, ETA -");
    }
}
