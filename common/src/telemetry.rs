//! Metrics for monitoring: every process records counters, gauges and histograms through the
//! `metrics` facade, and its server answers `GET /metrics` with them in the Prometheus text
//! format (rendered by `metrics-exporter-prometheus`, whose own HTTP listener is left out: the
//! node's server already listens). `/metrics` is open like `/health`: it holds counts, never
//! keys or values.
//!
//! Names follow Prometheus conventions: `velourfog_<process>_<what>_<unit>`, `_total` on
//! counters, seconds and bytes as units, labels with a small fixed set of values (no per-key
//! labels). Histograms are exposed with buckets ([`DURATION_BUCKETS`], [`COUNT_BUCKETS`] for
//! names ending in `_operations` or `_writes`), so any quantile can be computed in PromQL.

use crate::http::Body;
use http::{Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Bucket bounds of latency histograms, in seconds: 100 µs to 10 s.
pub const DURATION_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Bucket bounds of size histograms (operations in a batch, writes covered by an fsync).
pub const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// How often recorded histogram samples are folded into their buckets: samples wait in a
/// buffer until then (at 130k requests/s, 1 s of them is about 1 MiB per histogram).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls do nothing) and starts its upkeep.
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(DURATION_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_operations".into()), COUNT_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_writes".into()), COUNT_BUCKETS));
        let handle = match builder.map(PrometheusBuilder::install_recorder) {
            Ok(Ok(handle)) => handle,
            Ok(Err(e)) | Err(e) => {
                log::error!("metrics disabled: {e}");
                return None;
            }
        };
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        });
        if let Err(e) = spawned {
            log::warn!("metrics upkeep thread not started: {e}");
        }
        Some(handle)
    });
}

/// The answer to `GET /metrics`: every metric recorded so far, in the Prometheus text format.
pub fn render() -> Response<Body> {
    let text = match HANDLE.get() {
        Some(Some(handle)) => handle.render(),
        _ => String::new(),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
        .body(crate::http::full(text))
        .expect("static response parts are valid")
}

/// Seconds in `duration`, as histograms record them.
pub fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}
