//! The request key that `ketama` and `maglev` place requests by (`hash_key = "..."` in config),
//! and the pure helpers that turn a request's parts into key bytes for
//! [`Selector::pick`](crate::Selector::pick).
//!
//! Extracting the key from a request head is the engine's job; this module only names the choices
//! and provides the byte forms that must agree across cores and processes.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::InvalidHashKey;

/// Which part of a request the hash algorithms use as its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashKey {
    /// `client_ip`: the client's IP address as [`IpKey`] octets (the port is left out, so every
    /// connection from a client lands on the same backend).
    ClientIp,
    /// `path`: the request target's path and query, as sent.
    Path,
    /// `header:NAME`: the value of header `NAME` (stored lower-cased; matched case-insensitively).
    /// A request without it has no key and is balanced round robin.
    Header(String),
    /// `cookie:NAME`: the value of cookie `NAME` ([`cookie_value`]). A request without it has no
    /// key and is balanced round robin.
    Cookie(String),
}

impl FromStr for HashKey {
    type Err = InvalidHashKey;

    /// Accepts `"client_ip"`, `"path"`, `"header:NAME"` and `"cookie:NAME"`, where `NAME` is a
    /// non-empty HTTP token (RFC 9110 section 5.6.2).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringway_balancer::HashKey;
    /// assert_eq!("header:X-User".parse(), Ok(HashKey::Header("x-user".into())));
    /// assert!("header:".parse::<HashKey>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidHashKey {
            value: s.to_owned(),
        };
        match s {
            "client_ip" => return Ok(Self::ClientIp),
            "path" => return Ok(Self::Path),
            _ => {}
        }
        let (kind, name) = s.split_once(':').ok_or_else(invalid)?;
        if !is_token(name) {
            return Err(invalid());
        }
        match kind {
            "header" => Ok(Self::Header(name.to_ascii_lowercase())),
            "cookie" => Ok(Self::Cookie(name.to_owned())),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientIp => f.write_str("client_ip"),
            Self::Path => f.write_str("path"),
            Self::Header(name) => write!(f, "header:{name}"),
            Self::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

/// RFC 9110 section 5.6.2: `token = 1*tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// A client IP address as key bytes: 4 octets for IPv4 (including IPv4-mapped IPv6 addresses,
/// as a dual-stack listener reports IPv4 clients), 16 for IPv6. No allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpKey {
    octets: [u8; 16],
    len: u8,
}

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let mut octets = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => {
                octets[..4].copy_from_slice(&v4.octets());
                Self { octets, len: 4 }
            }
            IpAddr::V6(v6) => Self {
                octets: v6.octets(),
                len: 16,
            },
        }
    }
}

impl AsRef<[u8]> for IpKey {
    fn as_ref(&self) -> &[u8] {
        &self.octets[..usize::from(self.len)]
    }
}

/// The value of cookie `name` in a `Cookie` header value (RFC 6265 section 4.2.1:
/// `name=value` pairs separated by `;` and optional spaces; a quoted value keeps its quotes).
/// The first match wins. Returns `None` when the cookie is absent.
///
/// # Examples
///
/// ```
/// use ringway_balancer::cookie_value;
/// assert_eq!(cookie_value(b"a=1; session=abc; b=2", b"session"), Some(&b"abc"[..]));
/// assert_eq!(cookie_value(b"sessions=x", b"session"), None);
/// ```
pub fn cookie_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = trim_ows(pair);
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (n, v) = (&pair[..eq], &pair[eq + 1..]);
        (trim_ows(n) == name).then(|| trim_ows(v))
    })
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hash_keys() {
        let ok: &[(&str, HashKey)] = &[
            ("client_ip", HashKey::ClientIp),
            ("path", HashKey::Path),
            ("header:X-Tenant", HashKey::Header("x-tenant".into())),
            ("cookie:SESSION_id", HashKey::Cookie("SESSION_id".into())),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<HashKey>().as_ref(), Ok(want), "{s}");
        }
        for bad in [
            "",
            "ip",
            "Path",
            "header:",
            "cookie:",
            "header:a b",
            "query:x",
            "header",
        ] {
            assert!(bad.parse::<HashKey>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(HashKey::Header("x-a".into()).to_string(), "header:x-a");
    }

    #[test]
    fn ip_keys_normalize_mapped_addresses() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(IpKey::from(v4).as_ref(), &[192, 0, 2, 7]);
        assert_eq!(IpKey::from(mapped), IpKey::from(v4));
        assert_eq!(IpKey::from(v6).as_ref().len(), 16);
    }

    /// Header value, cookie name, expected value.
    type CookieCase = (&'static [u8], &'static [u8], Option<&'static [u8]>);

    #[test]
    fn finds_cookies() {
        let cases: &[CookieCase] = &[
            (b"session=abc", b"session", Some(b"abc")),
            (b"a=1;session=abc", b"session", Some(b"abc")),
            (b"a=1;  session = abc ;b=2", b"session", Some(b"abc")),
            (b"session=\"q\"", b"session", Some(b"\"q\"")),
            (b"session=", b"session", Some(b"")),
            (b"session=1; session=2", b"session", Some(b"1")),
            (b"xsession=1", b"session", None),
            (b"session", b"session", None),
            (b"", b"session", None),
        ];
        for (header, name, want) in cases {
            assert_eq!(
                cookie_value(header, name),
                *want,
                "{:?}",
                String::from_utf8_lossy(header)
            );
        }
    }
}
