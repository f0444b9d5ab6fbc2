//! Names the dotted key at a byte offset of a TOML document (`upstreams[1].health.interval`), so
//! that errors the TOML parser reports with only a span (an unknown key, a value of the wrong
//! type) still say which key is wrong, like the validator's own errors.
//!
//! Best effort by design: it follows table headers (numbering array tables by occurrence) and
//! inline tables on the offending line; anything it cannot place yields the table's path.

use std::collections::HashMap;

/// The dotted key at byte `offset` of `text`: the table header in effect, then the key on the
/// offset's line (the key under the offset, or the key whose value the offset is in).
pub(crate) fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let mut arrays: HashMap<String, usize> = HashMap::new();
    let mut table = String::new();
    let mut line_start = 0;
    let mut last_key_line: Option<&str> = None;
    for line in text.split_inclusive('\n') {
        let line_end = line_start + line.len();
        let on_line = offset < line_end || line_end == text.len();
        let trimmed = line.trim_start();
        if let Some(header) = trimmed.strip_prefix("[[") {
            let name = normalize(header.split("]]").next().unwrap_or(""));
            *arrays.entry(name.clone()).or_insert(0) += 1;
            table = render(&name, &arrays);
            last_key_line = None;
            if on_line {
                return table;
            }
        } else if let Some(header) = trimmed.strip_prefix('[') {
            let name = normalize(header.split(']').next().unwrap_or(""));
            table = render(&name, &arrays);
            last_key_line = None;
            if on_line {
                return table;
            }
        } else if on_line {
            let col = offset - line_start;
            let key = key_in_line(line, col)
                .or_else(|| last_key_line.and_then(|l| key_in_line(l, l.len())));
            return join(&table, key.as_deref());
        } else if top_level_key(trimmed).is_some() {
            last_key_line = Some(line);
        }
        line_start = line_end;
    }
    table
}

fn join(table: &str, key: Option<&str>) -> String {
    match key {
        Some(k) if table.is_empty() => k.to_string(),
        Some(k) => format!("{table}.{k}"),
        None => table.to_string(),
    }
}

/// `a . "b"` -> `a.b`.
fn normalize(header: &str) -> String {
    header
        .split('.')
        .map(|s| s.trim().trim_matches('"').trim_matches('\''))
        .collect::<Vec<_>>()
        .join(".")
}

/// `upstreams.health` -> `upstreams[2].health` when `upstreams` is an array of tables seen three
/// times so far.
fn render(name: &str, arrays: &HashMap<String, usize>) -> String {
    let mut out = String::new();
    let mut prefix = String::new();
    for part in name.split('.') {
        if !prefix.is_empty() {
            prefix.push('.');
            out.push('.');
        }
        prefix.push_str(part);
        out.push_str(part);
        if let Some(n) = arrays.get(&prefix) {
            out.push_str(&format!("[{}]", n.saturating_sub(1)));
        }
    }
    out
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
}

/// The key a `key = value` line starts with.
fn top_level_key(trimmed: &str) -> Option<&str> {
    let end = trimmed.bytes().position(|b| !is_key_byte(b))?;
    let key = &trimmed[..end];
    (!key.is_empty() && trimmed[end..].trim_start().starts_with('=')).then_some(key)
}

/// The key at column `col` of `line`, following inline tables: the key under `col` when it is a
/// key, else the key whose value contains `col`.
fn key_in_line(line: &str, col: usize) -> Option<String> {
    let bytes = line.as_bytes();
    let col = col.min(bytes.len());
    let mut stack: Vec<String> = Vec::new();
    let mut last: Option<String> = None;
    let mut word_start: Option<usize> = None;
    let mut word: Option<(usize, usize)> = None;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < col {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' && q == b'"' {
                i += 1;
            } else if b == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' | b'\'' => quote = Some(b),
            b'#' => break,
            b'=' => {
                if let Some((s, e)) = word.take() {
                    last = Some(line[s..e].to_string());
                }
            }
            b'{' => {
                if let Some(k) = last.take() {
                    stack.push(k);
                }
            }
            b'}' => {
                stack.pop();
            }
            _ if is_key_byte(b) => {
                let s = *word_start.get_or_insert(i);
                word = Some((s, i + 1));
                i += 1;
                continue;
            }
            _ => {}
        }
        word_start = None;
        i += 1;
    }
    // Is the offset on a key (an unknown field is reported at the key itself)?
    let rest = &line[col..];
    let end = rest.bytes().position(|b| !is_key_byte(b)).unwrap_or(0);
    let here = (end > 0 && rest[end..].trim_start().starts_with('=')).then(|| &rest[..end]);
    let leaf = match here {
        Some(k) => Some(k.to_string()),
        None => last,
    }?;
    stack.push(leaf);
    Some(stack.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, needle: &str) -> String {
        key_at(text, text.find(needle).expect("needle"))
    }

    #[test]
    fn names_keys_under_tables_and_array_tables() {
        let t = "a = 1\n[server]\ncpus = [0]\n[[upstreams]]\nname = \"x\"\n[[upstreams]]\nname = \"y\"\n[upstreams.health]\nintervall = \"1s\"\nkind = 3\n";
        assert_eq!(at(t, "a = 1"), "a");
        assert_eq!(at(t, "[0]"), "server.cpus");
        assert_eq!(at(t, "\"y\""), "upstreams[1].name");
        assert_eq!(at(t, "intervall"), "upstreams[1].health.intervall");
        assert_eq!(at(t, "3\n"), "upstreams[1].health.kind");
        assert_eq!(at(t, "[upstreams.health]"), "upstreams[1].health");
    }

    #[test]
    fn follows_inline_tables_and_skips_strings() {
        let t = "[[upstreams]]\nhealth = { kind = \"a=b\", timeout = 3 }\n";
        assert_eq!(at(t, "3 }"), "upstreams[0].health.timeout");
        assert_eq!(at(t, "kind"), "upstreams[0].health.kind");
    }

    #[test]
    fn a_multi_line_value_is_named_by_its_key() {
        let t = "[[upstreams]]\npeers = [\n  \"a\",\n  3,\n]\n";
        assert_eq!(at(t, "3,"), "upstreams[0].peers");
    }
}
