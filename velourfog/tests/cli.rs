//! The CLI against a scripted fake controller: each test scripts the status answers and the
//! admin answer, runs a command (through the library, or the real binary for exit codes and
//! stderr), and checks what the operator sees and what the controller was asked.

use common::placement::{NodeId, NodeState};
use common::proto::{AdminOutcome, ClusterStatus, JoinPolicy, MovePhase, MoveStatus, StorageStatus};
use http::StatusCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use velourfog::{Cli, Command, Error, NodeCommand, ReplicationCommand, WaitArgs};

/// What the fake controller answers, and what it was asked.
#[derive(Default)]
struct Script {
    /// Answers to successive status requests; the last one repeats.
    statuses: Vec<ClusterStatus>,
    served: usize,
    /// The answer to any admin request: a status and a JSON or text body.
    admin: Option<(StatusCode, String)>,
    /// `METHOD path body` of every request.
    requests: Vec<String>,
}

/// Starts a fake controller on a free port; returns its `host:port` and its script.
async fn fake_controller(script: Script) -> (String, Arc<Mutex<Script>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let script = Arc::new(Mutex::new(script));
    let shared = script.clone();
    let (_trigger, shutdown) = common::shutdown::channel();
    std::mem::forget(_trigger); // serve until the test's runtime ends
    let handler = move |req: http::Request<_>| {
        let script = shared.clone();
        async move {
            let line = format!("{} {}", req.method(), req.uri().path());
            let body = common::http::read_body(req.into_body(), 1 << 20).await.unwrap();
            let mut script = script.lock().unwrap();
            script.requests.push(format!("{line} {}", String::from_utf8_lossy(&body)).trim_end().to_owned());
            if line.starts_with("GET /v1/status") {
                let next = script.served.min(script.statuses.len() - 1);
                script.served += 1;
                return common::http::json(StatusCode::OK, &script.statuses[next]);
            }
            match &script.admin {
                Some((StatusCode::OK, json)) => common::http::json(
                    StatusCode::OK,
                    &serde_json::from_str::<serde_json::Value>(json).unwrap(),
                ),
                Some((status, text)) => common::http::text(*status, text),
                None => common::http::text(StatusCode::NOT_FOUND, "not scripted"),
            }
        }
    };
    tokio::spawn(common::http::serve(listener, handler, shutdown));
    (addr, script)
}

fn member(node_id: NodeId) -> StorageStatus {
    StorageStatus {
        node_id,
        addr: format!("127.0.0.1:{}", 7000 + node_id),
        state: NodeState::Up,
        last_seen_ms: 100,
        partitions: 4,
        zone: None,
        leaving: false,
        map_epoch: Some(5),
        disk: None,
    }
}

/// A cluster of `members` with `moves` partitions still copying.
fn status(members: &[NodeId], moves: u32) -> ClusterStatus {
    ClusterStatus {
        expected_storage: 3,
        replication: 2,
        epoch: Some(5 + u64::from(moves)),
        partitions: Some(8),
        storage: members.iter().copied().map(member).collect(),
        frontends: Vec::new(),
        partitions_healthy: 8,
        partitions_degraded: Vec::new(),
        join: JoinPolicy::Auto,
        pending: Vec::new(),
        moves: (0..moves)
            .map(|partition| MoveStatus {
                partition,
                phase: MovePhase::Copying,
                from: vec![1, 2],
                to: vec![1, 3],
                bytes_done: 1024,
                bytes_left: 2048,
                rate_bytes_per_s: 1024.0,
                eta_s: Some(2.0),
            })
            .collect(),
    }
}

fn outcome(message: &str, node_id: Option<NodeId>, moves: usize) -> String {
    serde_json::to_string(&AdminOutcome { message: message.to_owned(), node_id, moves, epoch: Some(6) })
        .unwrap()
}

fn cli(controller: &str, json: bool, command: Command) -> Cli {
    Cli {
        controller: controller.to_owned(),
        cluster_secret_file: None,
        json,
        command,
        frontends: velourfog::Frontends("127.0.0.1:8000".to_owned()),
        timeout: Duration::from_secs(30),
    }
}

fn wait(timeout: Duration) -> WaitArgs {
    WaitArgs { wait: true, wait_timeout: timeout }
}

async fn execute(cli: &Cli) -> (Result<(), Error>, String) {
    let mut out = Vec::new();
    let result = velourfog::execute(cli, &mut out, Duration::from_millis(10)).await;
    (result, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn status_prints_the_table_or_the_controllers_json() {
    let expected = status(&[1, 2, 3], 1);
    let (addr, _) = fake_controller(Script { statuses: vec![expected.clone()], ..Script::default() }).await;

    let (result, out) = execute(&cli(&addr, false, Command::Status)).await;
    result.unwrap();
    assert!(
        out.starts_with("cluster: map epoch 6, 3 storage nodes, 8 partitions, 2 replicas each, join auto\n"),
        "{out}"
    );
    assert!(out.contains("partition 0  copying  [1, 2] -> [1, 3]"), "{out}");

    let (result, out) = execute(&cli(&addr, true, Command::Status)).await;
    result.unwrap();
    assert_eq!(out.lines().count(), 1);
    assert_eq!(serde_json::from_str::<ClusterStatus>(&out).unwrap(), expected);
}

#[tokio::test]
async fn node_remove_waits_for_the_moves_and_for_the_node_to_leave() {
    let statuses =
        vec![status(&[1, 2, 3], 2), status(&[1, 2, 3], 1), status(&[1, 2, 3], 0), status(&[1, 3], 0)];
    let admin = outcome("node 2 is leaving: 2 partition moves planned", Some(2), 2);
    let (addr, script) =
        fake_controller(Script { statuses, admin: Some((StatusCode::OK, admin)), ..Script::default() }).await;
    let remove = Command::Node(NodeCommand::Remove {
        node: "127.0.0.1:7002".to_owned(),
        wait: wait(Duration::from_secs(10)),
    });

    let (result, out) = execute(&cli(&addr, false, remove.clone())).await;
    result.unwrap();
    let expected = "\
node 2 is leaving: 2 partition moves planned
2 moves left (2 copying): 2.0 KiB done, 4.0 KiB left, 2.0 KiB/s, ETA 2.0 s
1 move left (1 copying): 1.0 KiB done, 2.0 KiB left, 1.0 KiB/s, ETA 2.0 s
all moves done; waiting for node 2 to leave the map
all moves done
node 2 has left the cluster
";
    assert_eq!(out, expected);
    let requests = script.lock().unwrap().requests.clone();
    assert_eq!(requests[0], r#"POST /v1/admin/node/remove {"node":"127.0.0.1:7002"}"#);
    assert_eq!(requests[1..], ["GET /v1/status"; 4]);

    // With --json: the outcome, one object per progress line, and the final status.
    script.lock().unwrap().served = 0;
    let (result, out) = execute(&cli(&addr, true, remove)).await;
    result.unwrap();
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[0]["node_id"], 2);
    assert_eq!(lines[1]["moves_left"], 2);
    assert_eq!(lines[3]["node_still_member"], 2);
    assert_eq!(lines[4]["node_still_member"], serde_json::Value::Null);
    assert_eq!(serde_json::from_value::<ClusterStatus>(lines[5].clone()).unwrap(), status(&[1, 3], 0));
}

#[tokio::test]
async fn replication_set_sends_k_and_waits_for_the_moves() {
    let statuses = vec![status(&[1, 2, 3], 1), status(&[1, 2, 3], 0)];
    let admin = outcome("replication is 3: 1 partition moves planned", None, 1);
    let (addr, script) =
        fake_controller(Script { statuses, admin: Some((StatusCode::OK, admin)), ..Script::default() }).await;
    let set = Command::Replication(ReplicationCommand::Set { k: 3, wait: wait(Duration::from_secs(10)) });

    let (result, out) = execute(&cli(&addr, false, set)).await;
    result.unwrap();
    assert_eq!(script.lock().unwrap().requests[0], r#"POST /v1/admin/replication {"replication":3}"#);
    assert!(out.ends_with("all moves done\nevery partition has 3 replicas\n"), "{out}");
}

#[tokio::test]
async fn node_add_prints_the_outcome() {
    let admin = outcome("127.0.0.1:7009 approved: it joins the cluster at its next heartbeat", None, 0);
    let (addr, script) = fake_controller(Script {
        statuses: vec![status(&[1], 0)],
        admin: Some((StatusCode::OK, admin)),
        ..Script::default()
    })
    .await;
    let add = Command::Node(NodeCommand::Add { addr: "127.0.0.1:7009".to_owned() });

    let (result, out) = execute(&cli(&addr, false, add)).await;
    result.unwrap();
    assert_eq!(out, "127.0.0.1:7009 approved: it joins the cluster at its next heartbeat\n");
    assert_eq!(script.lock().unwrap().requests, [r#"POST /v1/admin/node/add {"node":"127.0.0.1:7009"}"#]);
}

#[tokio::test]
async fn a_refusal_carries_the_controllers_message() {
    let message = "replication must be between 1 and the 3 storage nodes in the cluster, not 5";
    let script = Script {
        statuses: vec![status(&[1], 0)],
        admin: Some((StatusCode::CONFLICT, message.to_owned())),
        ..Script::default()
    };
    let (addr, _) = fake_controller(script).await;
    let set = Command::Replication(ReplicationCommand::Set { k: 5, wait: wait(Duration::from_secs(10)) });

    let (result, out) = execute(&cli(&addr, false, set)).await;
    let error = result.unwrap_err();
    assert!(matches!(error, Error::Refused { status: 409, .. }), "{error:?}");
    assert_eq!((error.to_string().as_str(), error.exit_code()), (message, 1));
    assert_eq!(out, "");
}

#[tokio::test]
async fn a_wait_gives_up_after_its_timeout_with_exit_code_2() {
    let admin = outcome("replication is 3: 1 partition moves planned", None, 1);
    let script = Script {
        statuses: vec![status(&[1, 2, 3], 1)],
        admin: Some((StatusCode::OK, admin)),
        ..Script::default()
    };
    let (addr, _) = fake_controller(script).await;
    let set = Command::Replication(ReplicationCommand::Set { k: 3, wait: wait(Duration::from_millis(100)) });

    let started = std::time::Instant::now();
    let (result, out) = execute(&cli(&addr, false, set)).await;
    let error = result.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(error.exit_code(), 2);
    let progress = "1 move left (1 copying): 1.0 KiB done, 2.0 KiB left, 1.0 KiB/s, ETA 2.0 s";
    assert_eq!(error.to_string(), format!("gave up waiting after 0.1 s: {progress}"));
    // The unchanged progress line is printed once, not once per poll.
    assert_eq!(out.lines().count(), 2, "{out}");
}

/// An address where nothing listens.
async fn dead_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn an_unreachable_controller_is_named() {
    let addr = dead_address().await;
    let (result, _) = execute(&cli(&addr, false, Command::Status)).await;
    let error = result.unwrap_err();
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    assert!(error.to_string().starts_with(&format!("cannot reach the controller at {addr}: ")), "{error}");
    assert_eq!(error.exit_code(), 1);
}

#[tokio::test]
async fn the_binary_reports_errors_in_one_line_with_exit_code_1() {
    let binary = env!("CARGO_BIN_EXE_velourfog");
    let addr = dead_address().await;
    let run = |args: Vec<&str>| {
        tokio::process::Command::new(binary).args(args).env_remove("VF_CONTROLLER").output()
    };

    let output = run(vec!["--controller", &addr, "status"]).await.unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("cannot reach the controller at {addr}: ")), "{stderr}");

    let script = Script {
        statuses: vec![status(&[1], 0)],
        admin: Some((StatusCode::NOT_FOUND, "no storage node 9 (give its id or its host:port)".to_owned())),
        ..Script::default()
    };
    let (fake, _) = fake_controller(script).await;
    let output = run(vec!["--controller", &fake, "node", "remove", "9"]).await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "no storage node 9 (give its id or its host:port)\n"
    );

    let output = run(vec!["replication", "set", "0"]).await.unwrap();
    assert_eq!(output.status.code(), Some(1), "usage errors exit 1; 2 means a wait gave up");

    let output = run(vec!["--help"]).await.unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8(output.stdout).unwrap().contains("Examples:"));
}
