//! The client library and the `velourfog` data commands against real clusters: byte-exact
//! round trips of binary keys and a 24 MiB value through the CLI, and a client that keeps
//! working with one of its frontends dead from the start and another killed (SIGKILL) under
//! load.

use bytes::Bytes;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::{Cluster, ClusterConfig};

/// Runs `velourfog --frontends <frontends> <args>` with `stdin`.
async fn velourfog(frontends: &str, args: &[&OsStr], stdin: Stdio) -> Output {
    tokio::process::Command::new(testkit::binary("velourfog"))
        .arg("--frontends")
        .arg(frontends)
        .args(args)
        .stdin(stdin)
        .output()
        .await
        .expect("run velourfog")
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Exit code, standard output, standard error.
fn outcome(output: Output) -> (Option<i32>, Vec<u8>, String) {
    (output.status.code(), output.stdout, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn the_cli_round_trips_binary_keys_and_a_24_mib_value_byte_exact() {
    let cluster = Cluster::start(ClusterConfig::default()).await;
    let frontends = format!("{},{}", cluster.frontend(0), cluster.frontend(1));
    let fe = frontends.as_str();

    // Keys as raw command-line bytes (not UTF-8, with URL-special characters), and in hex with
    // a NUL; values as arguments, exactly as given.
    let raw_key = OsStr::from_bytes(b"\xff\xfe k&e=y?+%");
    let hex_key = [os("--hex-key"), os("00ff0a20")];
    let cases: [(&[&OsStr], &[u8]); 2] = [(&[raw_key], b"binary \xc3\xa9 value"), (&hex_key, b"nul key")];
    for (key, value) in cases {
        let set = [&[os("set")], key, &[OsStr::from_bytes(value)]].concat();
        assert_eq!(
            outcome(velourfog(fe, &set, Stdio::null()).await),
            (Some(0), b"ok\n".to_vec(), String::new())
        );
        let get = [&[os("get")], key].concat();
        assert_eq!(
            outcome(velourfog(fe, &get, Stdio::null()).await),
            (Some(0), value.to_vec(), String::new())
        );
        let delete = [&[os("delete"), os("-w"), os("all")], key].concat();
        assert_eq!(outcome(velourfog(fe, &delete, Stdio::null()).await).0, Some(0));
        let get = [&[os("get"), os("-r"), os("all")], key].concat();
        assert_eq!(
            outcome(velourfog(fe, &get, Stdio::null()).await),
            (Some(1), Vec::new(), "key not found\n".to_owned())
        );
    }
    // The frontends saw the exact bytes: the HTTP API reads them back.
    let set = [os("set"), raw_key, os("again")];
    assert_eq!(velourfog(fe, &set, Stdio::null()).await.status.code(), Some(0));
    let (status, body) = cluster.get(1, b"\xff\xfe k&e=y?+%").await;
    assert_eq!((status.as_u16(), body), (200, Bytes::from_static(b"again")));

    // 24 MiB of every byte value through standard input, then out of standard output.
    let path = cluster.dir.path().join("big");
    let big: Vec<u8> = (0..24usize << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    std::fs::write(&path, &big).unwrap();
    let stdin = Stdio::from(std::fs::File::open(&path).unwrap());
    let set = velourfog(fe, &[os("set"), os("photo"), os("-")], stdin).await;
    assert_eq!(outcome(set), (Some(0), b"ok\n".to_vec(), String::new()));
    for frontend in [cluster.frontend(0), cluster.frontend(1)] {
        let (code, stdout, stderr) =
            outcome(velourfog(frontend, &[os("get"), os("photo")], Stdio::null()).await);
        assert_eq!((code, stderr.as_str()), (Some(0), ""));
        assert!(stdout == big, "through {frontend}: {} bytes came back, not the 24 MiB sent", stdout.len());
    }
}

/// What a write-then-read load through the client library saw.
#[derive(Default)]
struct Report {
    writes: usize,
    /// Failed calls and reads that did not return the value just acknowledged.
    errors: Vec<String>,
    acknowledged: Vec<(String, Bytes)>,
}

/// `writers` loops of set-then-get through `client` until `stop`.
async fn write_then_read(client: client::Client, writers: usize, stop: Arc<AtomicBool>) -> Report {
    let report = Arc::new(Mutex::new(Report::default()));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (client, stop, report) = (client.clone(), stop.clone(), report.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (key, value) = (format!("load-{w}-{i}"), Bytes::from(format!("value {w} {i}")));
                    let outcome = match client.set(&key, value.clone()).await {
                        Err(e) => Err(format!("set {key}: {e}")),
                        Ok(()) => match client.get(&key).await {
                            Ok(Some(got)) if got == value => Ok(()),
                            other => Err(format!("get {key} right after its set: {other:?}")),
                        },
                    };
                    let mut report = report.lock().unwrap();
                    report.writes += 1;
                    match outcome {
                        Ok(()) => report.acknowledged.push((key, value)),
                        Err(e) => report.errors.push(e),
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("load task");
    }
    Arc::try_unwrap(report).ok().expect("load tasks ended").into_inner().unwrap()
}

#[tokio::test]
async fn a_client_rides_out_a_dead_frontend_and_one_killed_mid_load() {
    let mut cluster = Cluster::start(ClusterConfig::default()).await;
    let dead = format!("127.0.0.1:{}", testkit::free_port()); // nothing ever listens here
    let client = client::Client::new([dead.as_str(), cluster.frontend(0), cluster.frontend(1)]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_then_read(client.clone(), 4, stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = client.stats();
    cluster.frontends[1].sigkill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    cluster.frontends[1].kill(); // reap it

    let mut lost = Vec::new();
    for (key, value) in &report.acknowledged {
        match client.get(key).await {
            Ok(Some(got)) if got == *value => {}
            other => lost.push(format!("{key}: {other:?}")),
        }
    }
    let stats = client.stats();
    eprintln!(
        "{} writes with one of three frontends dead and one SIGKILLed after 2 s: {} errors, {} retries \
         ({} before the kill), {} of {} acknowledged read back wrong",
        report.writes,
        report.errors.len(),
        stats.retries,
        before.retries,
        lost.len(),
        report.acknowledged.len()
    );
    assert!(
        report.errors.is_empty(),
        "the client saw errors: {:?}",
        &report.errors[..report.errors.len().min(5)]
    );
    assert!(lost.is_empty(), "acknowledged writes read back wrong: {lost:?}");
    assert!(report.writes > 100, "the load hardly ran: {} writes", report.writes);
    // The dead frontend was met (and then tried last for a while).
    assert!(before.retries > 0, "{before:?}");
    assert_eq!(stats.failures, 0);
}
