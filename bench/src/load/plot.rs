//! The latency percentile distribution as a hand-written SVG: latency (linear, milliseconds)
//! against percentile on a logarithmic "nines" axis, where x = log10(1 / (1 - q)) puts 90% at 1,
//! 99% at 2, 99.9% at 3 and so on, as HdrHistogram's plotter draws it.

use std::fmt::Write as _;

use super::report::{human_us, LoadReport};

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// Points sampled along the x axis.
const SAMPLES: usize = 400;

/// Most nines drawn (99.9999%).
const MAX_NINES: f64 = 6.0;

/// The percentile label of `nines` (0 -> "0%", 1 -> "90%", 3 -> "99.9%").
fn nines_label(nines: usize) -> String {
    match nines {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        2 => "99%".to_string(),
        n => format!("99.{}%", "9".repeat(n - 2)),
    }
}

/// A round step near `range / 5`: 1, 2 or 5 times a power of ten.
fn nice_step(range: f64) -> f64 {
    let raw = (range / 5.0).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let f = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * mag
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the plot of `report`.
pub(crate) fn render(report: &LoadReport) -> String {
    let h = &report.latency;
    let count = h.len();
    // Enough nines to resolve the slowest requests: log10(count), at least 2, at most 6.
    let xmax = if count > 0 {
        (count as f64).log10().ceil().clamp(2.0, MAX_NINES)
    } else {
        2.0
    };
    let max_us = if count > 0 { h.max() as f64 } else { 1000.0 };
    let ymax_ms = (max_us / 1000.0 * 1.05).max(0.01);
    let ystep = nice_step(ymax_ms);
    let ytop = (ymax_ms / ystep).ceil() * ystep;
    let pw = WIDTH - LEFT - RIGHT;
    let ph = HEIGHT - TOP - BOTTOM;
    let sx = |nines: f64| LEFT + nines / xmax * pw;
    let sy = |ms: f64| TOP + ph - ms / ytop * ph;

    let mut s = String::with_capacity(32 * 1024);
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let p = report.percentiles();
    let title = format!(
        "Latency by percentile: {} requests, {:.0} req/s, p50 {}, p99 {}, p99.9 {}, max {}",
        report.requests,
        report.rps(),
        human_us(p.p50 as f64),
        human_us(p.p99 as f64),
        human_us(p.p999 as f64),
        human_us(p.max as f64)
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">{}</text>",
        WIDTH / 2.0,
        escape(&title)
    );
    let subtitle = format!(
        "{} — {} connections, {}",
        report.urls.join(" "),
        report.connections,
        match report.rate {
            Some(r) => format!("open loop at {r:.0} req/s (corrected for coordinated omission)"),
            None => "closed loop".to_string(),
        }
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"40\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
        WIDTH / 2.0,
        escape(&subtitle)
    );

    // Grid and axes.
    let mut nines = 0usize;
    while nines as f64 <= xmax {
        let x = sx(nines as f64);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + ph,
            TOP + ph + 18.0,
            nines_label(nines)
        );
        nines += 1;
    }
    let mut y = 0.0;
    while y <= ytop + ystep * 1e-9 {
        let py = sy(y);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + pw,
            LEFT - 6.0,
            py + 4.0,
            trim_float(y)
        );
        y += ystep;
    }
    let _ = writeln!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>\n\
         <text x=\"18\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {:.1})\">latency (ms)</text>",
        LEFT + pw / 2.0,
        HEIGHT - 14.0,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );

    if count == 0 {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#a00\">no data</text>",
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    } else {
        s.push_str("<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"");
        for i in 0..=SAMPLES {
            let x = xmax * i as f64 / SAMPLES as f64;
            let v = if i == SAMPLES {
                h.max()
            } else {
                h.value_at_quantile(1.0 - 10f64.powf(-x))
            };
            let _ = write!(s, "{:.1},{:.1} ", sx(x), sy(v as f64 / 1000.0));
        }
        s.push_str("\"/>\n");
    }
    s.push_str("</svg>\n");
    s
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_steps() {
        assert_eq!(nines_label(0), "0%");
        assert_eq!(nines_label(1), "90%");
        assert_eq!(nines_label(2), "99%");
        assert_eq!(nines_label(4), "99.99%");
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(0.3), 0.1);
        assert_eq!(nice_step(40.0), 10.0);
        assert_eq!(trim_float(0.5), "0.5");
        assert_eq!(trim_float(20.0), "20");
    }
}
