//! The controller's dashboard, rendered by a real browser: headless Chromium (Debian's
//! `chromium`; the test says SKIPPED without it) loads the page from a running cluster, and
//! the test reads the DOM its scripts built.

use http::StatusCode;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::{Cluster, ClusterConfig};

fn chromium_missing() -> bool {
    let missing = Command::new("chromium").arg("--version").output().is_err();
    if missing {
        eprintln!("SKIPPED: chromium missing (apt-get install chromium)");
    }
    missing
}

/// Chromium, headless, on `url` with `extra` arguments; its standard output.
fn chromium(profile: &Path, url: &str, extra: &[&str]) -> String {
    let output = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=4000", "--window-size=1400,1000"])
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `<tr>` of storage node `addr` in `dom`.
fn member_row<'a>(dom: &'a str, addr: &str) -> Option<&'a str> {
    let at = dom.find(&format!("data-addr=\"{addr}\""))?;
    let start = dom[..at].rfind("<tr")?;
    let end = at + dom[at..].find("</tr>")?;
    Some(&dom[start..end])
}

#[tokio::test]
async fn the_dashboard_lists_every_member_and_shows_a_killed_node_down_within_seconds() {
    if chromium_missing() {
        return;
    }
    let cluster = Cluster::start(ClusterConfig::default()).await;
    for i in 0..50u32 {
        assert_eq!(cluster.set(i as usize % 2, format!("k{i}").as_bytes(), "v").await.0, StatusCode::OK);
    }
    let profile = cluster.dir.path().join("chromium");
    let url = format!("http://{}/dashboard", cluster.controller.addr);
    let dom = chromium(&profile, &url, &["--dump-dom"]);
    assert!(dom.contains("data-loaded=\"1\""), "the page's script ran and fetched the data: {dom}");
    for storage in &cluster.storage {
        let row =
            member_row(&dom, &storage.addr).unwrap_or_else(|| panic!("{} not listed: {dom}", storage.addr));
        assert!(row.contains("data-state=\"up\""), "{row}");
    }
    let partitions = cluster.status().await["partitions"].as_u64().unwrap() as usize;
    assert_eq!(dom.matches("data-partition=").count(), partitions, "one cell per partition");
    for frontend in &cluster.frontends {
        assert!(dom.contains(&frontend.addr), "frontend {} listed", frontend.addr);
    }
    if let Ok(path) = std::env::var("VF_DASHBOARD_SCREENSHOT") {
        // Let the collector gather a few points of a load first.
        let load = Instant::now();
        for i in 0u32.. {
            if load.elapsed() > Duration::from_secs(12) {
                break;
            }
            let key = format!("k{}", i % 50);
            let _ = match i % 4 {
                0 => cluster.set(i as usize % 2, key.as_bytes(), "v").await,
                _ => cluster.get(i as usize % 2, key.as_bytes()).await,
            };
        }
        chromium(&profile, &url, &[&format!("--screenshot={path}")]);
    }

    cluster.storage[2].sigkill();
    let killed = &cluster.storage[2].addr;
    let started = Instant::now();
    loop {
        let dom = chromium(&profile, &url, &["--dump-dom"]);
        if member_row(&dom, killed).is_some_and(|row| row.contains("data-state=\"down\"")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{killed} never shown down: {dom}");
    }
    eprintln!("killed node shown down after {:.1?}", started.elapsed());
}
