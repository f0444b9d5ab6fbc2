//! Durations in configuration files: an integer and a unit, `"500ms"`, `"10s"`, `"5m"`, `"1h"`.

use std::time::Duration;

/// Parses `"<integer><unit>"` with unit `ms`, `s`, `m` or `h`.
///
/// # Errors
/// A message naming what is wrong.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "\"{s}\" is not a duration: expected a number and a unit, like \"10s\" or \"500ms\""
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("\"{s}\": number too large"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "" => return Err(format!("\"{s}\" has no unit: write \"{n}s\" or \"{n}ms\"")),
        other => {
            return Err(format!(
                "\"{s}\": unknown unit \"{other}\" (use ms, s, m or h)"
            ))
        }
    };
    Ok(d)
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok: &[(&str, u64)] = &[
            ("500ms", 500),
            ("10s", 10_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("0s", 0),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(*ms)), "{s}");
            assert_eq!(
                parse_duration(&format_duration(Duration::from_millis(*ms))),
                Ok(Duration::from_millis(*ms))
            );
        }
        for bad in [
            "",
            "s",
            "10",
            "10 s",
            "-1s",
            "1.5s",
            "10d",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
