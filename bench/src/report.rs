//! Reports of a run: a text table, JSON, an SVG latency plot, and the progress line.

use crate::{Config, Op, OpStats, Outcome};
use std::fmt::Write;
use std::time::Duration;

const QUANTILES: [(&str, f64); 4] = [("p50", 0.50), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0)];

fn ops(outcome: &Outcome) -> [(Op, &OpStats); 2] {
    [(Op::Get, &outcome.get), (Op::Set, &outcome.set)]
}

/// Operations per second of `stats` over the run.
pub fn throughput(stats: &OpStats, elapsed: Duration) -> f64 {
    stats.latency_us.count() as f64 / elapsed.as_secs_f64()
}

/// The human-readable report.
pub fn text(config: &Config, outcome: &Outcome) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {:.1} s, concurrency {}, {} keys ({:?}), {}-byte values, read ratio {}",
        config.label,
        outcome.elapsed.as_secs_f64(),
        config.concurrency,
        config.keys,
        config.distribution,
        config.value_size,
        config.read_ratio
    );
    let _ = writeln!(
        out,
        "{:<4} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "op", "ops", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "misses"
    );
    for (op, stats) in ops(outcome) {
        if stats.latency_us.count() == 0 {
            continue;
        }
        let ms = |q| stats.latency_us.quantile(q) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "{:<4} {:>10} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>8}",
            op.name(),
            stats.latency_us.count(),
            throughput(stats, outcome.elapsed),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            ms(1.0),
            stats.errors,
            stats.misses
        );
        if let Some(error) = &stats.first_error {
            let _ = writeln!(out, "     first {} error: {error}", op.name());
        }
    }
    out
}

/// The client library's throughput and p99 against the raw driver's, per operation measured.
pub fn comparison(raw: &Outcome, library: &Outcome) -> String {
    let mut out = String::from("client library against the raw driver:");
    for ((op, raw_stats), (_, library_stats)) in ops(raw).into_iter().zip(ops(library)) {
        if raw_stats.latency_us.count() == 0 || library_stats.latency_us.count() == 0 {
            continue;
        }
        let ratio = throughput(library_stats, library.elapsed) / throughput(raw_stats, raw.elapsed);
        let p99 = |s: &OpStats| s.latency_us.quantile(0.99) as f64 / 1000.0;
        let _ = write!(
            out,
            " {} {ratio:.2}x ops/s (p99 {:.2} ms against {:.2} ms);",
            op.name(),
            p99(library_stats),
            p99(raw_stats)
        );
    }
    out.trim_end_matches(';').to_owned()
}

/// The machine-readable report.
pub fn json(config: &Config, outcome: &Outcome) -> serde_json::Value {
    let per_op = |stats: &OpStats| {
        let mut latency = serde_json::Map::new();
        for (name, q) in QUANTILES {
            latency.insert(format!("{name}_ms"), (stats.latency_us.quantile(q) as f64 / 1000.0).into());
        }
        latency.insert("mean_ms".into(), (stats.latency_us.mean() / 1000.0).into());
        serde_json::json!({
            "ops": stats.latency_us.count(),
            "ops_per_sec": throughput(stats, outcome.elapsed),
            "errors": stats.errors,
            "misses": stats.misses,
            "latency": latency,
        })
    };
    serde_json::json!({
        "label": config.label,
        "seconds": outcome.elapsed.as_secs_f64(),
        "concurrency": config.concurrency,
        "keys": config.keys,
        "distribution": format!("{:?}", config.distribution),
        "value_size": config.value_size,
        "read_ratio": config.read_ratio,
        "get": per_op(&outcome.get),
        "set": per_op(&outcome.set),
    })
}

/// A latency-by-percentile plot: x from p0 to p99.99 on a log scale of 1/(1-q), y in ms.
pub fn svg(config: &Config, outcome: &Outcome) -> String {
    let (width, height, left, bottom, top, right) = (800.0, 480.0, 70.0, 60.0, 40.0, 20.0);
    let quantiles: Vec<f64> = (0..=400).map(|i| 1.0 - 10f64.powf(-4.0 * i as f64 / 400.0)).collect();
    let series: Vec<(Op, Vec<f64>)> = ops(outcome)
        .into_iter()
        .filter(|(_, s)| s.latency_us.count() > 0)
        .map(|(op, s)| (op, quantiles.iter().map(|&q| s.latency_us.quantile(q) as f64 / 1000.0).collect()))
        .collect();
    let y_max = series.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.1f64, f64::max) * 1.1;
    let x = |q: f64| left + (-(1.0 - q).max(1e-4).log10() / 4.0) * (width - left - right);
    let y = |ms: f64| height - bottom - ms / y_max * (height - bottom - top);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"24\" font-size=\"15\">{} latency by percentile (concurrency {}, {}-byte values)</text>\n",
        config.label, config.concurrency, config.value_size
    );
    for (label, q) in [("p0", 0.0), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999), ("p99.99", 0.9999)] {
        let _ = writeln!(
            out,
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{2}\" text-anchor=\"middle\">{label}</text>",
            x(q),
            height - bottom,
            height - bottom + 18.0
        );
    }
    for i in 0..=5 {
        let ms = y_max * i as f64 / 5.0;
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#eee\"/><text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{ms:.2} ms</text>",
            y(ms),
            width - right,
            left - 6.0,
            y(ms) + 4.0
        );
    }
    for (i, (op, values)) in series.iter().enumerate() {
        let colour = ["#1f77b4", "#d62728"][i % 2];
        let points: Vec<String> =
            quantiles.iter().zip(values).map(|(&q, &ms)| format!("{:.1},{:.1}", x(q), y(ms))).collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>",
            points.join(" "),
            left + 10.0,
            top + 16.0 + 16.0 * i as f64,
            op.name()
        );
    }
    out.push_str("</svg>\n");
    out
}

/// `[=====>      ] 12/30 s  34512 ops/s`
pub fn progress_line(elapsed: Duration, total: Duration, ops_last_second: u64) -> String {
    const WIDTH: usize = 30;
    let fraction = (elapsed.as_secs_f64() / total.as_secs_f64()).min(1.0);
    let filled = (fraction * WIDTH as f64) as usize;
    let bar: String = (0..WIDTH)
        .map(|i| {
            if i < filled {
                '='
            } else if i == filled {
                '>'
            } else {
                ' '
            }
        })
        .collect();
    format!("[{bar}] {:>3}/{} s  {ops_last_second:>8} ops/s", elapsed.as_secs(), total.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn sample() -> (Config, Outcome) {
        let config = Config::try_parse_from(["bench", "--frontends", "http://a:1"]).unwrap();
        let mut outcome =
            Outcome { elapsed: Duration::from_secs(2), get: OpStats::default(), set: OpStats::default() };
        for us in 1..=1000 {
            outcome.get.latency_us.record(us);
        }
        outcome.set.latency_us.record(5000);
        outcome.set.errors = 1;
        outcome.set.first_error = Some("503: no".into());
        (config, outcome)
    }

    #[test]
    fn reports_throughput_and_percentiles() {
        let (config, outcome) = sample();
        let report = json(&config, &outcome);
        assert_eq!(report["get"]["ops"], 1000);
        assert_eq!(report["get"]["ops_per_sec"], 500.0);
        assert_eq!(report["get"]["latency"]["max_ms"], 1.0);
        let p99 = report["get"]["latency"]["p99_ms"].as_f64().unwrap();
        assert!((0.99..=1.0).contains(&p99), "{p99}");
        assert_eq!(report["set"]["errors"], 1);
        let table = text(&config, &outcome);
        assert!(table.contains("get") && table.contains("500") && table.contains("first set error: 503: no"));
    }

    #[test]
    fn compares_the_drivers_per_operation() {
        let (_, raw) = sample();
        let mut library = raw.clone();
        library.elapsed = Duration::from_secs(4); // the same operations in twice the time
        assert_eq!(
            comparison(&raw, &library),
            "client library against the raw driver: get 0.50x ops/s (p99 0.99 ms against 0.99 ms); \
             set 0.50x ops/s (p99 5.00 ms against 5.00 ms)"
        );
    }

    #[test]
    fn draws_a_plot_and_a_progress_bar() {
        let (config, outcome) = sample();
        let plot = svg(&config, &outcome);
        assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
        assert_eq!(plot.matches("<polyline").count(), 2);
        let line = progress_line(Duration::from_secs(15), Duration::from_secs(30), 1234);
        assert!(line.starts_with("[===============>"), "{line}");
        assert!(line.ends_with("15/30 s      1234 ops/s"), "{line}");
    }
}
