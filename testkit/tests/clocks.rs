//! Clocks that disagree, on real processes: frontends whose wall clocks are shifted with
//! libfaketime (Debian's `faketime` package; the tests say SKIPPED without it).
//!
//! The promise under test: a set or delete that starts after another write to the same key was
//! acknowledged, through any frontend, is never lost to it, whatever the clocks say; a frontend
//! whose clock is past the bound refuses writes with a message, and fences nobody.

use bytes::Bytes;
use http::StatusCode;
use testkit::{Cluster, ClusterConfig};

/// libfaketime, which shifts one process's wall clock.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Starts a frontend whose clock is shifted by `offset` (libfaketime syntax: `+4`, `-1h`).
fn skewed_frontend(cluster: &mut Cluster, offset: &str) -> usize {
    let env = [("LD_PRELOAD", FAKETIME), ("FAKETIME", offset), ("FAKETIME_DONT_FAKE_MONOTONIC", "1")];
    cluster.add_frontend(&env)
}

fn faketime_missing() -> bool {
    let missing = !std::path::Path::new(FAKETIME).exists();
    if missing {
        eprintln!("SKIPPED: {FAKETIME} missing (apt-get install faketime)");
    }
    missing
}

#[tokio::test]
async fn writes_in_sequence_through_frontends_with_skewed_clocks_are_never_lost() {
    if faketime_missing() {
        return;
    }
    let mut cluster = Cluster::start(ClusterConfig { frontends: 1, ..ClusterConfig::default() }).await;
    // Both within the 5 s the cluster allows, so both may write.
    let ahead = skewed_frontend(&mut cluster, "+4");
    let behind = skewed_frontend(&mut cluster, "-4");
    cluster.wait_until_serving(testkit::START_DEADLINE).await;
    let before = common::version::now_micros();
    assert_eq!(cluster.set(ahead, b"probe", "x").await.0, StatusCode::OK);
    let (_, stamped, _) = cluster.storage_record(0, b"probe").await;
    assert!(stamped.unwrap() > before + 3_000_000, "the shifted clock is really ahead");
    let orders = [[ahead, 0, behind], [ahead, behind, 0], [0, behind, ahead], [behind, ahead, 0]];
    for round in 0..40 {
        let key = format!("key-{round}");
        for (step, &frontend) in orders[round % orders.len()].iter().enumerate() {
            // Every third round ends with a delete: deletes must not be lost either.
            let expected = if round % 3 == 2 && step == 2 {
                assert_eq!(cluster.delete(frontend, key.as_bytes()).await.0, StatusCode::OK);
                None
            } else {
                let value = format!("round {round} step {step} via {frontend}");
                assert_eq!(cluster.set(frontend, key.as_bytes(), value.clone()).await.0, StatusCode::OK);
                Some(value)
            };
            for reader in [0, ahead, behind] {
                let (status, got) = cluster.get(reader, key.as_bytes()).await;
                match &expected {
                    Some(value) => assert_eq!(
                        (status, got),
                        (StatusCode::OK, Bytes::from(value.clone())),
                        "round {round} step {step}: the last acknowledged write was lost"
                    ),
                    None => assert_eq!(status, StatusCode::NOT_FOUND, "round {round}: the delete was lost"),
                }
            }
        }
    }
    let status = cluster.status().await;
    assert!(status["storage"].as_array().unwrap().iter().all(|m| m["state"] == "up"), "{status}");
}

#[tokio::test]
async fn a_frontend_whose_clock_is_past_the_bound_refuses_writes_and_fences_nobody() {
    if faketime_missing() {
        return;
    }
    let mut cluster = Cluster::start(ClusterConfig::default()).await;
    assert_eq!(cluster.set(0, b"clock", "before").await.0, StatusCode::OK);
    let ahead = skewed_frontend(&mut cluster, "+1h");
    let behind = skewed_frontend(&mut cluster, "-1h");
    cluster.wait_until_serving(testkit::START_DEADLINE).await;
    for (frontend, direction) in [(ahead, "ahead of"), (behind, "behind")] {
        for (status, body) in [
            cluster.set(frontend, b"clock", "from a broken clock").await,
            cluster.delete(frontend, b"clock").await,
        ] {
            let body = String::from_utf8_lossy(&body);
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert!(body.contains(&format!("3600.0 s {direction} the controller's")), "{body}");
        }
        // Reads still work.
        assert_eq!(cluster.get(frontend, b"clock").await, (StatusCode::OK, Bytes::from_static(b"before")));
        let log = cluster.frontends[frontend].log();
        assert!(log.contains("fix its time (NTP)"), "{log}");
    }
    // Nothing was stored and no replica was fenced for it.
    let status = cluster.status().await;
    assert!(status["storage"].as_array().unwrap().iter().all(|m| m["state"] == "up"), "{status}");
    assert_eq!(cluster.get(1, b"clock").await.1, Bytes::from_static(b"before"));
    assert_eq!(cluster.set(0, b"clock", "now").await.0, StatusCode::OK);
    assert_eq!(cluster.delete(1, b"clock").await.0, StatusCode::OK);
    assert_eq!(cluster.get(0, b"clock").await.0, StatusCode::NOT_FOUND);
}
