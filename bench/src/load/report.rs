//! The result of a load run and its renderings: a human table, JSON for scripts, and an SVG
//! latency plot (see `plot.rs`).

use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::{ErrorCounts, ErrorKind, LoadConfig};

/// Requests made by one executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorReport {
    /// The CPU it was pinned to (`None`: unpinned).
    pub cpu: Option<usize>,
    /// Connections it drove.
    pub connections: usize,
    /// Requests it recorded.
    pub requests: u64,
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    /// Fastest recorded.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// 50th percentile.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Slowest recorded.
    pub max: u64,
}

/// What a load run measured (warm-up excluded).
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Complete responses, whatever their status.
    pub requests: u64,
    /// Measured time: from the end of the warm-up to the last executor's end (at most the
    /// configured duration).
    pub duration: Duration,
    /// Bytes received (heads and bodies).
    pub bytes: u64,
    /// Errors by kind. `status` errors are also counted in `requests`.
    pub errors: ErrorCounts,
    /// Latency of every complete response in microseconds: from the send (closed loop) or the
    /// intended send time (open loop) to the end of the response.
    pub latency: Histogram<u64>,
    /// Requests per executor.
    pub executors: Vec<ExecutorReport>,
    /// The URLs loaded.
    pub urls: Vec<String>,
    /// Configured connections.
    pub connections: usize,
    /// Configured open-loop rate (`None`: closed loop).
    pub rate: Option<f64>,
    /// A new connection per request.
    pub close: bool,
}

impl LoadReport {
    pub(crate) fn empty(cfg: &LoadConfig, latency: Histogram<u64>) -> LoadReport {
        LoadReport {
            requests: 0,
            duration: Duration::ZERO,
            bytes: 0,
            errors: ErrorCounts::default(),
            latency,
            executors: Vec::new(),
            urls: cfg.urls.clone(),
            connections: cfg.connections,
            rate: cfg.rate,
            close: cfg.close,
        }
    }

    /// Requests per second over the measured duration (0 when nothing was measured).
    pub fn rps(&self) -> f64 {
        per_second(self.requests, self.duration)
    }

    /// Bytes received per second over the measured duration.
    pub fn bytes_per_sec(&self) -> f64 {
        per_second(self.bytes, self.duration)
    }

    /// Latency at `quantile` (0.0 to 1.0) in microseconds; 0 when nothing was recorded.
    pub fn latency_us(&self, quantile: f64) -> u64 {
        if self.latency.is_empty() {
            return 0;
        }
        self.latency.value_at_quantile(quantile)
    }

    /// The usual latency summary.
    pub fn percentiles(&self) -> Percentiles {
        if self.latency.is_empty() {
            return Percentiles::default();
        }
        let h = &self.latency;
        Percentiles {
            min: h.min(),
            mean: h.mean(),
            stdev: h.stdev(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }

    /// The report as one JSON object.
    ///
    /// Keys: `urls`, `connections`, `mode` (`"closed"` or `"open"`), `rate`, `close`,
    /// `duration_s`, `requests`, `rps`, `bytes`, `bytes_per_s`, `errors` (counts by kind plus
    /// `total`), `latency_us` (`min`, `mean`, `stdev`, `p50`, `p90`, `p99`, `p999`, `p9999`,
    /// `max`) and `executors` (`cpu`, `connections`, `requests` each).
    pub fn to_json(&self) -> String {
        let p = self.percentiles();
        let mut s = String::with_capacity(1024);
        s.push_str("{\"urls\":[");
        for (i, u) in self.urls.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            json_string(&mut s, u);
        }
        let _ =
            write!(
            s,
            "],\"connections\":{},\"mode\":\"{}\",\"rate\":{},\"close\":{},\"duration_s\":{:.3},\
             \"requests\":{},\"rps\":{:.2},\"bytes\":{},\"bytes_per_s\":{:.2},\"errors\":{{",
            self.connections,
            if self.rate.is_some() { "open" } else { "closed" },
            self.rate.filter(|r| r.is_finite()).map_or("null".to_string(), |r| format!("{r:.3}")),
            self.close,
            self.duration.as_secs_f64(),
            self.requests,
            self.rps(),
            self.bytes,
            self.bytes_per_sec(),
        );
        for kind in ErrorKind::ALL {
            let _ = write!(s, "\"{}\":{},", kind.name(), self.errors.get(kind));
        }
        let _ = write!(
            s,
            "\"total\":{}}},\"latency_us\":{{\"min\":{},\"mean\":{:.1},\"stdev\":{:.1},\"p50\":{},\
             \"p90\":{},\"p99\":{},\"p999\":{},\"p9999\":{},\"max\":{}}},\"executors\":[",
            self.errors.total(),
            p.min,
            finite(p.mean),
            finite(p.stdev),
            p.p50,
            p.p90,
            p.p99,
            p.p999,
            p.p9999,
            p.max
        );
        for (i, e) in self.executors.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let cpu = e.cpu.map_or("null".to_string(), |c| c.to_string());
            let _ = write!(
                s,
                "{{\"cpu\":{cpu},\"connections\":{},\"requests\":{}}}",
                e.connections, e.requests
            );
        }
        s.push_str("]}");
        s
    }

    /// The report as a short human-readable table.
    pub fn to_text(&self) -> String {
        let p = self.percentiles();
        let mut s = String::with_capacity(1024);
        let mode = match self.rate {
            Some(r) => format!("open loop at {r:.0} req/s"),
            None => "closed loop".to_string(),
        };
        let placement = self
            .executors
            .iter()
            .map(|e| e.cpu.map_or("unpinned".to_string(), |c| format!("cpu {c}")))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(s, "{}", self.urls.join(" "));
        let _ = writeln!(
            s,
            "  {} connections{}, {} executor{} ({placement}), {mode}",
            self.connections,
            if self.close { " (one per request)" } else { "" },
            self.executors.len(),
            if self.executors.len() == 1 { "" } else { "s" },
        );
        let _ = writeln!(
            s,
            "  requests   {:>12} in {:.2} s    {:>12.1} req/s",
            self.requests,
            self.duration.as_secs_f64(),
            self.rps()
        );
        let _ = writeln!(
            s,
            "  transfer   {:>12}          {:>12}/s",
            human_bytes(self.bytes as f64),
            human_bytes(self.bytes_per_sec())
        );
        let _ = writeln!(
            s,
            "  latency    {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "min", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"
        );
        let _ = writeln!(
            s,
            "             {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            human_us(p.min as f64),
            human_us(p.p50 as f64),
            human_us(p.p90 as f64),
            human_us(p.p99 as f64),
            human_us(p.p999 as f64),
            human_us(p.p9999 as f64),
            human_us(p.max as f64),
            human_us(finite(p.mean)),
        );
        let errors = if self.errors.total() == 0 {
            "none".to_string()
        } else {
            ErrorKind::ALL
                .iter()
                .filter(|&&k| self.errors.get(k) > 0)
                .map(|&k| format!("{} {}", k.name(), self.errors.get(k)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "  errors     {errors}");
        let per = self
            .executors
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e.cpu.map_or("unpinned".to_string(), |c| format!("cpu{c}")),
                    e.requests
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(s, "  executors  {per}");
        s
    }

    /// The latency percentile distribution as an SVG document (see [`LoadReport::write_svg_plot`]).
    pub fn svg_plot(&self) -> String {
        super::plot::render(self)
    }

    /// Writes the latency percentile distribution to `path` as SVG: latency against percentile
    /// on a logarithmic "nines" axis (90%, 99%, 99.9%, ...), like HdrHistogram's plots.
    ///
    /// # Errors
    /// As [`std::fs::write`].
    pub fn write_svg_plot(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, self.svg_plot())
    }
}

fn per_second(n: u64, d: Duration) -> f64 {
    let secs = d.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// Microseconds, scaled to a readable unit.
pub(crate) fn human_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LoadReport {
        let cfg = LoadConfig {
            urls: vec!["http://h/\"q\"".into()],
            ..LoadConfig::default()
        };
        let mut latency = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            latency.record(v * 10).unwrap();
        }
        let mut r = LoadReport::empty(&cfg, latency);
        r.requests = 1000;
        r.duration = Duration::from_secs(2);
        r.bytes = 2048;
        r.errors.add(ErrorKind::Status, 3);
        r.executors.push(ExecutorReport {
            cpu: Some(0),
            connections: 50,
            requests: 1000,
        });
        r
    }

    #[test]
    fn json_has_the_documented_keys() {
        let j = sample().to_json();
        for key in [
            "\"requests\":1000",
            "\"rps\":500.00",
            "\"errors\":{\"connect\":0,\"read\":0,\"write\":0,\"timeout\":0,\"status\":3,\"parse\":0,\"total\":3}",
            "\"latency_us\":{",
            "\"p50\":",
            "\"p90\":",
            "\"p99\":",
            "\"p999\":",
            "\"p9999\":",
            "\"max\":10007",
            "\"urls\":[\"http://h/\\\"q\\\"\"]",
            "\"executors\":[{\"cpu\":0,\"connections\":50,\"requests\":1000}]",
        ] {
            assert!(j.contains(key), "{key} missing in {j}");
        }
        assert!(j.starts_with('{') && j.ends_with('}'));
    }

    #[test]
    fn text_and_empty_reports() {
        let t = sample().to_text();
        assert!(t.contains("500.0 req/s"), "{t}");
        assert!(t.contains("status 3"), "{t}");
        let cfg = LoadConfig::default();
        let empty = LoadReport::empty(&cfg, Histogram::new_with_bounds(1, 1000, 3).unwrap());
        assert_eq!(empty.rps(), 0.0);
        assert_eq!(empty.latency_us(0.99), 0);
        assert!(empty.to_json().contains("\"p99\":0"));
        assert!(empty.svg_plot().starts_with("<svg"));
    }

    #[test]
    fn units() {
        assert_eq!(human_us(999.0), "999µs");
        assert_eq!(human_us(1500.0), "1.50ms");
        assert_eq!(human_us(2_500_000.0), "2.50s");
        assert_eq!(human_bytes(100.0), "100 B");
        assert_eq!(human_bytes(1536.0), "1.50 KiB");
    }
}
