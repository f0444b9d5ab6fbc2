//! Header fields of a request or response head: an ordered list that keeps the name's case as
//! received, looked up case-insensitively. Also the token and value byte classes the rest of
//! the codec validates with.

use std::cell::RefCell;
use std::fmt;

use super::error::HttpError;

/// Whether `b` is a `tchar` (RFC 9110 section 5.6.2).
#[inline]
pub(crate) const fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// Whether `b` may appear in a field value: HTAB, SP, VCHAR or obs-text (RFC 9110 section 5.5).
#[inline]
pub(crate) fn is_field_vchar_or_ws(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// Whether `name` is a valid field name: a non-empty token (RFC 9110 section 5.1).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_tchar)
}

/// Whether `value` is a valid field value: no NUL, CR, LF or other control byte but HTAB, and
/// no leading or trailing whitespace (RFC 9110 section 5.5).
pub fn is_valid_value(value: &[u8]) -> bool {
    let edge_ws =
        matches!(value.first(), Some(b' ' | b'\t')) || matches!(value.last(), Some(b' ' | b'\t'));
    !edge_ws && value.iter().all(|&b| is_field_vchar_or_ws(b))
}

/// Where one field's name and value sit in the arena.
#[derive(Clone, Copy, Debug)]
struct Field {
    name_start: usize,
    name_end: usize,
    value_start: usize,
    value_end: usize,
    /// The name's [`known_bit`], found once when the field is added.
    bit: u16,
}

/// The name of `field` in `bytes`.
fn name_in<'a>(bytes: &'a [u8], field: &Field) -> &'a str {
    let raw = &bytes[field.name_start..field.name_end];
    debug_assert!(std::str::from_utf8(raw).is_ok());
    // SAFETY: name ranges are only ever written by `Headers::append`, from a whole `&str`, and
    // nothing writes into the arena in place, so they hold valid UTF-8 (see `Headers::bytes`).
    unsafe { std::str::from_utf8_unchecked(raw) }
}

/// The header fields of one message, in the order received.
///
/// Names keep the case they arrived with (so a proxied message looks as the peer wrote it);
/// every lookup compares names ASCII-case-insensitively. Values are bytes: RFC 9110 allows
/// obs-text, which is not UTF-8. [`Headers::insert`] and [`Headers::append`] do not validate;
/// use [`Headers::try_insert`] or [`Headers::try_append`] for values from untrusted sources,
/// since the encoder writes what it is given.
///
/// Storage is two allocations whatever the number of fields (the fields in one buffer, and an
/// index), not two per field: this is built for every request and every response. The buffer
/// holds each field as it goes on the wire, `name: value\r\n`, so the encoder writes a run of
/// fields with one copy (see [`Headers::write_wire`]).
#[derive(Clone, Default)]
pub struct Headers {
    /// Every field appended, as `name: value\r\n`, back to back (one allocation per head, not
    /// two); a removed field's bytes stay until [`Headers::compact_if_sparse`]. Invariants:
    /// every name range holds the bytes of a `&str` appended whole, so it is valid UTF-8; a
    /// field's value is followed by `\r\n` (its wire form ends at `value_end + 2`).
    bytes: Vec<u8>,
    fields: Vec<Field>,
    /// A bit per [`KNOWN`] name that may be present: set when a field of that name is
    /// appended, recomputed when `retain` or `remove` take fields away (`insert` replaces
    /// fields of one name by one of the same, so its bit stays true). A set bit may be stale
    /// (a scan then finds nothing); a clear one never is. A clear bit answers a lookup of that name
    /// without a scan; most lookups on the request path (`Connection`, `Upgrade`,
    /// `Transfer-Encoding`, `Expect`...) are for fields a message does not carry.
    known: u16,
}

/// Where one field line sits in a block of field lines (see [`Headers::from_block`]): the
/// name at `name_at`, `": "`, the value, `"\r\n"`.
/// Sixteen bits each (a head past 64 KiB goes to the general parser), so the parser's array of
/// them is small to clear.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FieldSpan {
    /// Offset of the name in the block.
    pub(crate) name_at: u16,
    /// Bytes in the name.
    pub(crate) name_len: u16,
    /// Bytes in the value.
    pub(crate) value_len: u16,
}

/// Bytes a field takes on the wire besides its name and value: `: ` and `\r\n`.
const WIRE_OVERHEAD: usize = 4;

/// Names looked up on every message, by the codec (framing, persistence, hop-by-hop fields,
/// `Host`, `Expect`) or the gateway (`X-Forwarded-For`); lowercase. [`known_bit`] maps a name
/// to its bit.
const KNOWN: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "expect",
    "x-forwarded-for",
];

/// [`known_bit`] of `host`.
pub(crate) const HOST: u16 = known_bit_const("host");
/// [`known_bit`] of `content-length`.
pub(crate) const CONTENT_LENGTH: u16 = known_bit_const("content-length");
/// [`known_bit`] of `transfer-encoding`.
pub(crate) const TRANSFER_ENCODING: u16 = known_bit_const("transfer-encoding");
/// [`known_bit`] of `connection`.
pub(crate) const CONNECTION: u16 = known_bit_const("connection");
/// [`known_bit`] of `expect`.
pub(crate) const EXPECT: u16 = known_bit_const("expect");
/// The bits of the hop-by-hop and framing names a proxy strips (see
/// `framing::remove_hop_by_hop`): all of [`KNOWN`] but `host`, `expect` and
/// `x-forwarded-for`.
pub(crate) const HOP_BY_HOP_BITS: u16 = CONNECTION
    | known_bit_const("keep-alive")
    | known_bit_const("proxy-connection")
    | known_bit_const("te")
    | TRANSFER_ENCODING
    | known_bit_const("upgrade")
    | CONTENT_LENGTH;

/// A [`KNOWN`] name as up to three (possibly overlapping) windows of its bytes, each read as an
/// integer: a name of the same length is that name when each of its windows, OR'd with the
/// window's `fold`, equals `word`. `fold` has 0x20 at letters only, so the comparison is exact:
/// a letter matches either case, and every other byte only itself. About a tenth of the
/// instructions of `eq_ignore_ascii_case`, which goes a byte at a time.
#[derive(Clone, Copy)]
struct Pattern {
    /// Bytes per window: 2, 4 or 8.
    width: usize,
    at: [usize; 3],
    word: [u64; 3],
    fold: [u64; 3],
}

/// One window of `name` (lowercase) at `at`, and its fold.
const fn window(name: &[u8], at: usize, width: usize) -> (u64, u64) {
    let (mut word, mut fold, mut i) = (0u64, 0u64, 0);
    while i < width {
        let b = name[at + i];
        word |= (b as u64) << (8 * i);
        if b.is_ascii_lowercase() {
            fold |= 0x20 << (8 * i);
        }
        i += 1;
    }
    (word, fold)
}

const fn pattern(name: &str) -> Pattern {
    let name = name.as_bytes();
    let len = name.len();
    let width = if len >= 8 {
        8
    } else if len >= 4 {
        4
    } else {
        2
    };
    let middle = if len > 2 * width { width } else { len - width };
    let at = [0, middle, len - width];
    let mut p = Pattern {
        width,
        at,
        word: [0; 3],
        fold: [0; 3],
    };
    let mut i = 0;
    while i < 3 {
        let (word, fold) = window(name, at[i], width);
        p.word[i] = word;
        p.fold[i] = fold;
        i += 1;
    }
    p
}

/// [`KNOWN`] as [`Pattern`]s, in the same order.
const PATTERNS: [Pattern; KNOWN.len()] = {
    let mut out = [Pattern {
        width: 2,
        at: [0; 3],
        word: [0; 3],
        fold: [0; 3],
    }; KNOWN.len()];
    let mut i = 0;
    while i < KNOWN.len() {
        out[i] = pattern(KNOWN[i]);
        i += 1;
    }
    out
};

/// The window of `name` at `at`, `width` bytes, as an integer (little-endian, as [`window`]);
/// `at + width` is at most `name.len()` (the pattern is for a name of this length).
#[inline]
fn load(name: &[u8], at: usize, width: usize) -> u64 {
    match width {
        8 => name
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes),
        4 => name
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b| u64::from(u32::from_le_bytes(b))),
        _ => name
            .get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b| u64::from(u16::from_le_bytes(b))),
    }
}

/// [`KNOWN`]'s index for a name of this length and first byte, if any: a length dispatch, then
/// the first byte, which turns away most other names of a known length (`Accept`, `Cookie`,
/// `User-Agent`, `Accept-Encoding`...). Every known name starts with a letter, so `| 0x20`
/// is exact.
#[inline]
const fn candidate(len: usize, first: u8) -> Option<usize> {
    let index = match len {
        2 => 6,
        4 => 0,
        6 => 8,
        7 => 7,
        10 if first | 0x20 == b'c' => 3,
        10 => 4,
        14 => 1,
        15 => 9,
        16 => 5,
        17 => 2,
        _ => return None,
    };
    if first | 0x20 == PATTERNS[index].word[0] as u8 {
        Some(index)
    } else {
        None
    }
}

/// The bit of `name` among [`KNOWN`] (case-insensitively), or 0 for any other name: see
/// [`candidate`], then one comparison of up to three words.
#[inline]
pub(crate) fn known_bit(name: &str) -> u16 {
    let bytes = name.as_bytes();
    let Some(index) = bytes.first().and_then(|&b| candidate(bytes.len(), b)) else {
        return 0;
    };
    let p = &PATTERNS[index];
    if (0..3).all(|i| load(bytes, p.at[i], p.width) | p.fold[i] == p.word[i]) {
        1 << index
    } else {
        0
    }
}

/// [`known_bit`] at compile time, for the codec's own lookups (see [`CONTENT_LENGTH`]).
const fn known_bit_const(name: &str) -> u16 {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return 0;
    }
    let Some(index) = candidate(bytes.len(), bytes[0]) else {
        return 0;
    };
    let p = &PATTERNS[index];
    let mut i = 0;
    while i < 3 {
        let (word, _) = window(bytes, p.at[i], p.width);
        if word | p.fold[i] != p.word[i] {
            return 0;
        }
        i += 1;
    }
    1 << index
}

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Self::with_room(n, n * 48)
    }

    /// A copy with room for `fields` more fields and `bytes` more bytes of names and values, so
    /// that a filter adding a few fields to it (a proxy's `X-Forwarded-For`) does not reallocate.
    pub fn clone_with_room(&self, fields: usize, bytes: usize) -> Self {
        let mut copy = Self::with_room(
            self.fields.len() + fields,
            self.bytes.len() + bytes + fields * WIRE_OVERHEAD,
        );
        copy.bytes.extend_from_slice(&self.bytes);
        copy.fields.extend_from_slice(&self.fields);
        copy.known = self.known;
        copy
    }

    /// An empty list with the room a parsed head needs.
    pub(crate) fn with_exact_capacity(
        fields: usize,
        name_bytes: usize,
        value_bytes: usize,
    ) -> Self {
        Self::with_room(fields, name_bytes + value_bytes + fields * WIRE_OVERHEAD)
    }

    /// An empty list with room for `fields` fields and `bytes` bytes, in vectors a dropped head
    /// of this thread left (see [`SPARE`]) when there are some.
    fn with_room(fields: usize, bytes: usize) -> Self {
        let (b, f) = SPARE
            .try_with(|s| {
                let mut s = s.borrow_mut();
                (s.bytes.pop(), s.fields.pop())
            })
            .unwrap_or((None, None));
        let mut b = b.unwrap_or_default();
        let mut f = f.unwrap_or_default();
        b.reserve(bytes);
        f.reserve(fields);
        Self {
            bytes: b,
            fields: f,
            known: 0,
        }
    }

    /// Whether a field named `name` may be present: false only when it certainly is not
    /// (see [`Headers::known`]).
    #[inline]
    fn may_contain(&self, name: &str) -> bool {
        self.may_contain_bit(known_bit(name))
    }

    /// [`Headers::may_contain`] for a name whose [`known_bit`] is `bit` (0: not a known name,
    /// so it may be present).
    #[inline]
    fn may_contain_bit(&self, bit: u16) -> bool {
        bit == 0 || self.known & bit != 0
    }

    /// The [`KNOWN`] names that may be present, a bit each (see [`known_bit`]).
    #[inline]
    pub(crate) fn known_bits(&self) -> u16 {
        self.known
    }

    fn name_of(&self, field: &Field) -> &str {
        name_in(&self.bytes, field)
    }

    fn value_of(&self, field: &Field) -> &[u8] {
        &self.bytes[field.value_start..field.value_end]
    }

    /// The number of field lines.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there is no field line.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The value of the first field named `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        if !self.may_contain(name) {
            return None;
        }
        self.fields
            .iter()
            .find(|f| self.name_of(f).eq_ignore_ascii_case(name))
            .map(|f| self.value_of(f))
    }

    /// The value of the first field named `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The values of every field named `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all_known(known_bit(name), name)
    }

    /// [`Headers::get_all`] for a name whose [`known_bit`] is `bit` (a constant).
    pub(crate) fn get_all_known<'a>(
        &'a self,
        bit: u16,
        name: &'a str,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        debug_assert_eq!(bit, known_bit(name));
        // An absent known name iterates over no field at all.
        let fields = if self.may_contain_bit(bit) {
            &self.fields[..]
        } else {
            &[]
        };
        fields
            .iter()
            .map(|f| (self.name_of(f), self.value_of(f)))
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether a field named `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.may_contain(name)
            && self
                .fields
                .iter()
                .any(|f| self.name_of(f).eq_ignore_ascii_case(name))
    }

    /// Replaces every field named `name` with one field, placed where the first one was (or at
    /// the end). Does not validate: see [`Headers::try_insert`].
    pub fn insert(&mut self, name: impl AsRef<str>, value: impl AsRef<[u8]>) {
        let name = name.as_ref();
        let first = if self.may_contain(name) {
            self.fields
                .iter()
                .position(|f| self.name_of(f).eq_ignore_ascii_case(name))
        } else {
            None
        };
        let Some(first) = first else {
            self.append(name, value);
            return;
        };
        self.append(name, value);
        let Some(new) = self.fields.pop() else { return };
        self.fields[first] = new;
        let mut i = 0;
        let bytes = &self.bytes;
        self.fields.retain(|f| {
            let keep = i <= first || !name_in(bytes, f).eq_ignore_ascii_case(name);
            i += 1;
            keep
        });
        self.compact_if_sparse();
    }

    /// Adds a field at the end, keeping any others of the same name. Does not validate: see
    /// [`Headers::try_append`].
    pub fn append(&mut self, name: impl AsRef<str>, value: impl AsRef<[u8]>) {
        let (name, value) = (name.as_ref(), value.as_ref());
        self.bytes.reserve(name.len() + value.len() + WIRE_OVERHEAD);
        let name_start = self.bytes.len();
        self.bytes.extend_from_slice(name.as_bytes());
        let name_end = self.bytes.len();
        self.bytes.extend_from_slice(b": ");
        let value_start = self.bytes.len();
        self.bytes.extend_from_slice(value);
        let value_end = self.bytes.len();
        self.bytes.extend_from_slice(b"\r\n");
        let bit = known_bit(name);
        self.fields.push(Field {
            name_start,
            name_end,
            value_start,
            value_end,
            bit,
        });
        self.known |= bit;
    }

    /// [`Headers::insert`] after checking the name is a token and the value has no control
    /// byte.
    ///
    /// # Errors
    /// [`HttpError::InvalidHeaderName`] or [`HttpError::InvalidHeaderValue`]; the list is
    /// left unchanged.
    pub fn try_insert(
        &mut self,
        name: impl AsRef<str>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), HttpError> {
        validated(name.as_ref(), value.as_ref())?;
        self.insert(name, value);
        Ok(())
    }

    /// [`Headers::append`] after checking the name is a token and the value has no control
    /// byte.
    ///
    /// # Errors
    /// [`HttpError::InvalidHeaderName`] or [`HttpError::InvalidHeaderValue`]; the list is
    /// left unchanged.
    pub fn try_append(
        &mut self,
        name: impl AsRef<str>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), HttpError> {
        validated(name.as_ref(), value.as_ref())?;
        self.append(name, value);
        Ok(())
    }

    /// Removes every field named `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        if !self.may_contain(name) {
            return 0;
        }
        let before = self.fields.len();
        self.retain(|n, _| !n.eq_ignore_ascii_case(name));
        before - self.fields.len()
    }

    /// Keeps only the fields for which `keep(name, value)` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        self.retain_fields(|bytes, f| keep(name_in(bytes, f), &bytes[f.value_start..f.value_end]));
    }

    /// Keeps only the fields for which `keep(name, bit)` is true, `bit` being the name's
    /// [`known_bit`] (found when the field was added).
    pub(crate) fn retain_by_bit(&mut self, mut keep: impl FnMut(&str, u16) -> bool) {
        self.retain_fields(|bytes, f| keep(name_in(bytes, f), f.bit));
    }

    /// Keeps the fields for which `keep(arena, field)` is true; recomputes the known bits and
    /// compacts when any went.
    fn retain_fields(&mut self, mut keep: impl FnMut(&[u8], &Field) -> bool) {
        let before = self.fields.len();
        let bytes = &self.bytes;
        self.fields.retain(|f| keep(bytes, f));
        if self.fields.len() != before {
            self.known = self.fields.iter().fold(0, |known, f| known | f.bit);
            self.compact_if_sparse();
        }
    }

    /// Every field as `(name, value)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (self.name_of(f), self.value_of(f)))
    }

    /// An upper bound of what [`Headers::write_wire`] writes.
    pub(crate) fn wire_len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends every field as `name: value\r\n`, in order, but those whose name's
    /// [`known_bit`] is in `skip`. Fields appended one after another go out in one copy.
    pub(crate) fn write_wire(&self, skip: u16, out: &mut Vec<u8>) {
        let check = self.known & skip != 0;
        let (mut run_start, mut run_end) = (0, 0);
        for f in &self.fields {
            if check && f.bit & skip != 0 {
                continue;
            }
            if f.name_start != run_end {
                out.extend_from_slice(&self.bytes[run_start..run_end]);
                run_start = f.name_start;
            }
            run_end = f.value_end + WIRE_OVERHEAD - 2;
        }
        out.extend_from_slice(&self.bytes[run_start..run_end]);
    }

    /// The fields of a head parsed from `head` (every name and value a slice of it), without
    /// any check: the parser has validated them. Where the fields sit in `head` exactly as
    /// their wire form (`name: value\r\n`, one after another: what most peers send), they are
    /// copied in one piece; otherwise one by one.
    pub(crate) fn from_parsed(head: &[u8], fields: &[httparse::Header<'_>]) -> Self {
        let (names, values) = fields
            .iter()
            .fold((0, 0), |(n, v), f| (n + f.name.len(), v + f.value.len()));
        let mut headers = Self::with_exact_capacity(fields.len(), names, values);
        if !headers.copy_block(head, fields) {
            for field in fields {
                headers.append(field.name, field.value);
            }
        }
        headers
    }

    /// The fields of a head whose field lines sit in `block` exactly as their wire form, one
    /// after another (`name: value\r\n` with one space and no trailing whitespace), as the
    /// one-pass parser found them (see `fast`): each span is a field's name offset in `block`,
    /// its name length and its value length. Copied in one piece. The names are tokens and the
    /// values field bytes; the parser checked both.
    pub(crate) fn from_block(block: &[u8], spans: &[FieldSpan]) -> Self {
        let mut headers = Self::with_room(spans.len(), block.len());
        let mut known = 0;
        for s in spans {
            let (name_start, value_len) = (usize::from(s.name_at), usize::from(s.value_len));
            let name_end = name_start + usize::from(s.name_len);
            let raw = &block[name_start..name_end];
            debug_assert!(raw.iter().all(|&b| is_tchar(b)));
            // SAFETY: the parser let only token bytes (ASCII) into a name.
            let bit = known_bit(unsafe { std::str::from_utf8_unchecked(raw) });
            known |= bit;
            headers.fields.push(Field {
                name_start,
                name_end,
                value_start: name_end + 2,
                value_end: name_end + 2 + value_len,
                bit,
            });
        }
        headers.bytes.extend_from_slice(block);
        headers.known = known;
        headers
    }

    /// Copies `fields` (slices of `head`) as one block when they are laid out in it as their
    /// wire form; false, with nothing changed, when they are not.
    fn copy_block(&mut self, head: &[u8], fields: &[httparse::Header<'_>]) -> bool {
        let (Some(first), Some(last)) = (fields.first(), fields.last()) else {
            return true;
        };
        // Offsets into `head`, from the addresses of slices of it.
        let at = |s: &[u8]| (s.as_ptr() as usize).wrapping_sub(head.as_ptr() as usize);
        let start = at(first.name.as_bytes());
        let end = at(last.value) + last.value.len() + 2;
        let Some(block) = head.get(start..end) else {
            return false;
        };
        let (base, before) = (self.bytes.len(), self.fields.len());
        let mut next = start;
        let mut known = 0;
        for f in fields {
            let name_start = at(f.name.as_bytes());
            let name_end = name_start + f.name.len();
            let value_start = at(f.value);
            let value_end = value_start + f.value.len();
            if name_start != next
                || value_start != name_end + 2
                || head.get(name_end..value_start) != Some(b": ")
                || head.get(value_end..value_end + 2) != Some(b"\r\n")
            {
                self.fields.truncate(before);
                return false;
            }
            next = value_end + 2;
            let bit = known_bit(f.name);
            known |= bit;
            self.fields.push(Field {
                name_start: base + name_start - start,
                name_end: base + name_end - start,
                value_start: base + value_start - start,
                value_end: base + value_end - start,
                bit,
            });
        }
        self.bytes.extend_from_slice(block);
        self.known |= known;
        true
    }

    /// Removed fields leave their bytes in the arenas; rebuild once most of it is garbage, so
    /// a long series of edits stays bounded.
    fn compact_if_sparse(&mut self) {
        let live: usize = self
            .fields
            .iter()
            .map(|f| f.value_end + WIRE_OVERHEAD - f.name_start)
            .sum();
        if self.bytes.len() > 2 * live + 1024 {
            let mut compact = Self::with_room(self.fields.len(), live);
            for (name, value) in self.iter() {
                compact.append(name, value);
            }
            *self = compact;
        }
    }
}

/// The vectors of dropped heads, kept per thread for the next ones: a proxied request parses two
/// heads and copies one, two allocations each; taking them from here instead saved about 700
/// user-space instructions per request at 50 connections (callgrind, 18,428 -> 17,683). Only
/// small vectors are kept, a bounded number of them.
struct Spare {
    bytes: Vec<Vec<u8>>,
    fields: Vec<Vec<Field>>,
}

/// Vectors kept per thread, of each kind. Each request in flight holds up to three heads, and
/// the requests of many connections tend to reach the same phase together: with 64 kept, 50
/// connections still allocated about one vector per request (callgrind: 12,358 growths in
/// 12,000 requests, against 1,269 once the exchange's timing shifted; 256: 18,627 -> 18,191
/// instructions per request). At most 256 x (2 KiB + 64 fields) per thread.
const SPARE_KEEP: usize = 256;
/// The largest vector kept (bytes of names and values; fields).
const SPARE_MAX_BYTES: usize = 2048;
const SPARE_MAX_FIELDS: usize = 64;

thread_local! {
    static SPARE: RefCell<Spare> = const {
        RefCell::new(Spare {
            bytes: Vec::new(),
            fields: Vec::new(),
        })
    };
}

impl Drop for Headers {
    fn drop(&mut self) {
        let (mut b, mut f) = (
            std::mem::take(&mut self.bytes),
            std::mem::take(&mut self.fields),
        );
        let keep_b = b.capacity() != 0 && b.capacity() <= SPARE_MAX_BYTES;
        let keep_f = f.capacity() != 0 && f.capacity() <= SPARE_MAX_FIELDS;
        if !keep_b && !keep_f {
            return;
        }
        b.clear();
        f.clear();
        let _ = SPARE.try_with(|s| {
            let mut s = s.borrow_mut();
            if keep_b && s.bytes.len() < SPARE_KEEP {
                s.bytes.push(b);
            }
            if keep_f && s.fields.len() < SPARE_KEEP {
                s.fields.push(f);
            }
        });
    }
}

impl PartialEq for Headers {
    /// Same fields, same order, same name case.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

fn validated(name: &str, value: &[u8]) -> Result<(), HttpError> {
    if !is_valid_name(name) {
        return Err(HttpError::InvalidHeaderName);
    }
    if !is_valid_value(value) {
        return Err(HttpError::InvalidHeaderValue);
    }
    Ok(())
}

/// Iterates over the comma-separated elements of every `name` field (its [`known_bit`] is
/// `bit`), trimmed of OWS, skipping
/// none (an empty element comes out as `b""`) (RFC 9110 section 5.6.1).
pub(crate) fn list_elements<'a>(
    headers: &'a Headers,
    bit: u16,
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all_known(bit, name)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(trim_ows)
}

/// `bytes` without leading and trailing SP/HTAB.
pub(crate) fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

/// Whether any comma-separated element of the `name` fields (its [`known_bit`] is `bit`) equals `token`, case-insensitively.
pub(crate) fn has_token(headers: &Headers, bit: u16, name: &str, token: &str) -> bool {
    list_elements(headers, bit, name).any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_heads_vectors_serve_the_next_head_and_big_ones_are_not_kept() {
        // On a thread of its own: the spare vectors are per thread.
        std::thread::spawn(|| {
            let mut h = Headers::with_exact_capacity(4, 32, 32);
            h.append("Host", "a");
            let addr = h.bytes.as_ptr();
            drop(h);
            let again = Headers::with_exact_capacity(2, 10, 10);
            assert_eq!(
                again.bytes.as_ptr(),
                addr,
                "the dropped head's bytes are reused"
            );
            assert!(again.is_empty(), "and come back empty");
            drop(again);
            let mut big = Headers::with_capacity(1);
            big.append("X", vec![b'v'; 4 * SPARE_MAX_BYTES]);
            drop(big);
            let kept = SPARE.with(|s| s.borrow().bytes.iter().map(Vec::capacity).max());
            assert!(kept.unwrap_or(0) <= SPARE_MAX_BYTES, "{kept:?}");
            for _ in 0..SPARE_KEEP + 10 {
                drop(Headers::with_exact_capacity(1, 8, 8));
            }
            let held: Vec<Headers> = (0..SPARE_KEEP + 10)
                .map(|_| Headers::with_exact_capacity(1, 8, 8))
                .collect();
            drop(held);
            assert!(SPARE.with(|s| s.borrow().bytes.len()) <= SPARE_KEEP);
        })
        .join()
        .unwrap();
    }

    fn sample() -> Headers {
        let mut h = Headers::new();
        h.append("Host", "a");
        h.append("X-Foo", "1");
        h.append("x-foo", "2");
        h.append("Accept", "*/*");
        h
    }

    #[test]
    fn lookups_are_case_insensitive_and_ordered() {
        let h = sample();
        assert_eq!(h.get("HOST"), Some(&b"a"[..]));
        assert_eq!(h.get_str("x-FOO"), Some("1"));
        assert_eq!(
            h.get_all("X-FOO").collect::<Vec<_>>(),
            vec![&b"1"[..], &b"2"[..]]
        );
        assert!(h.contains("accept"));
        assert!(!h.contains("cookie"));
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn insert_replaces_all_in_place_of_the_first() {
        let mut h = sample();
        h.insert("X-FOO", "3");
        let names: Vec<_> = h.iter().map(|(n, v)| (n.to_owned(), v.to_vec())).collect();
        assert_eq!(
            names,
            vec![
                ("Host".to_owned(), b"a".to_vec()),
                ("X-FOO".to_owned(), b"3".to_vec()),
                ("Accept".to_owned(), b"*/*".to_vec()),
            ]
        );
        h.insert("New", "v");
        assert_eq!(h.get("new"), Some(&b"v"[..]));
    }

    #[test]
    fn many_edits_stay_bounded() {
        let mut h = sample();
        for i in 0..10_000 {
            h.insert("X-Counter", i.to_string());
        }
        assert_eq!(h.get_str("x-counter"), Some("9999"));
        assert_eq!(h.len(), 5);
        assert!(h.bytes.len() < 4096);
        let mut other = Headers::new();
        for (n, v) in h.iter() {
            other.append(n, v);
        }
        assert_eq!(h, other);
    }

    #[test]
    fn remove_counts() {
        let mut h = sample();
        assert_eq!(h.remove("X-Foo"), 2);
        assert_eq!(h.remove("X-Foo"), 0);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn try_insert_rejects_injection() {
        let mut h = Headers::new();
        assert_eq!(
            h.try_insert("X", "a\r\nEvil: 1"),
            Err(HttpError::InvalidHeaderValue)
        );
        assert_eq!(
            h.try_append("Bad Name", "a"),
            Err(HttpError::InvalidHeaderName)
        );
        assert_eq!(h.try_append("", "a"), Err(HttpError::InvalidHeaderName));
        assert_eq!(
            h.try_append("X", " lead"),
            Err(HttpError::InvalidHeaderValue)
        );
        assert!(h.is_empty());
        assert_eq!(h.try_append("X", "ok\tvalue"), Ok(()));
    }

    #[test]
    fn list_elements_trim_and_keep_empties() {
        let mut h = Headers::new();
        h.append("Connection", " close ,, keep-alive");
        h.append("connection", "Upgrade");
        let e: Vec<_> = list_elements(&h, CONNECTION, "connection").collect();
        assert_eq!(e, vec![&b"close"[..], b"", b"keep-alive", b"Upgrade"]);
        assert!(has_token(&h, CONNECTION, "connection", "UPGRADE"));
        assert_eq!(trim_ows(b"  "), b"");
    }

    #[test]
    fn every_known_name_has_its_own_bit_and_no_other_name_has_one() {
        for (i, name) in KNOWN.iter().enumerate() {
            assert_eq!(known_bit(name), 1 << i, "{name}");
            assert_eq!(known_bit(&name.to_ascii_uppercase()), 1 << i, "{name}");
            assert_eq!(known_bit_const(name), 1 << i, "{name}");
        }
        // Same lengths as known names, other bytes.
        for other in [
            "tf",
            "hose",
            "accept",
            "upgrad3",
            "connexion",
            "keep-alivf",
            "x",
        ] {
            assert_eq!(known_bit(other), 0, "{other}");
        }
        assert_eq!(known_bit(""), 0);
        // Every one-byte change of every known name answers as `eq_ignore_ascii_case` does:
        // the word comparison folds the case of letters only (`\r` is not `-`, `@` not `` ` ``).
        for (i, name) in KNOWN.iter().enumerate() {
            for at in 0..name.len() {
                for b in 0u8..128 {
                    let mut changed = name.as_bytes().to_vec();
                    changed[at] = b;
                    let Ok(changed) = std::str::from_utf8(&changed) else {
                        continue;
                    };
                    let expected = if changed.eq_ignore_ascii_case(name) {
                        1 << i
                    } else {
                        0
                    };
                    assert_eq!(known_bit(changed), expected, "{changed:?}");
                    assert_eq!(known_bit_const(changed), expected, "{changed:?}");
                }
            }
        }
    }

    /// The known-name bits only ever skip a scan for a field that is certainly absent: every
    /// lookup answers as a plain scan would, through appends, inserts, removals and retains.
    #[test]
    fn lookups_of_known_names_agree_with_a_scan_through_every_edit() {
        fn scan<'a>(h: &'a Headers, name: &str) -> Vec<&'a [u8]> {
            h.iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
                .collect()
        }
        fn check(h: &Headers, step: &str) {
            for name in KNOWN.iter().chain(&["x-other", "accept"]) {
                let all: Vec<_> = h.get_all(name).collect();
                assert_eq!(all, scan(h, name), "{step}: get_all({name})");
                assert_eq!(
                    h.get(name),
                    scan(h, name).first().copied(),
                    "{step}: {name}"
                );
                assert_eq!(
                    h.contains(name),
                    !scan(h, name).is_empty(),
                    "{step}: {name}"
                );
            }
        }
        let mut h = Headers::new();
        check(&h, "empty");
        h.append("Host", "a");
        h.append("CONTENT-LENGTH", "3");
        h.append("X-Other", "1");
        check(&h, "appended");
        let copy = h.clone_with_room(2, 16);
        check(&copy, "copied with room");
        h.insert("connection", "close");
        h.insert("Content-Length", "4");
        check(&h, "inserted");
        assert_eq!(h.remove("content-length"), 1);
        assert_eq!(h.remove("content-length"), 0);
        check(&h, "removed");
        h.retain(|n, _| !n.eq_ignore_ascii_case("host"));
        check(&h, "retained");
        h.append("Host", "b");
        check(&h, "appended again");
        for i in 0..200 {
            // Enough edits to compact the arena.
            h.insert("X-Forwarded-For", format!("10.0.0.{i}"));
        }
        check(&h, "compacted");
        assert_eq!(h.get("x-forwarded-for"), Some(&b"10.0.0.199"[..]));
    }

    /// What `write_wire` writes is every field as `name: value\r\n` in order, whatever edits
    /// left gaps or moved fields in the buffer, and without the skipped names.
    #[test]
    fn the_wire_form_is_each_field_in_order_through_every_edit() {
        fn expected(h: &Headers, skip: &[&str]) -> String {
            h.iter()
                .filter(|(n, _)| !skip.iter().any(|s| n.eq_ignore_ascii_case(s)))
                .map(|(n, v)| format!("{n}: {}\r\n", String::from_utf8_lossy(v)))
                .collect()
        }
        fn check(h: &Headers, step: &str) {
            for (bits, names) in [
                (0, &[][..]),
                (
                    CONTENT_LENGTH | TRANSFER_ENCODING,
                    &["content-length", "transfer-encoding"][..],
                ),
                (CONNECTION, &["connection"][..]),
            ] {
                let mut out = b"x".to_vec();
                h.write_wire(bits, &mut out);
                assert_eq!(
                    String::from_utf8_lossy(&out[1..]),
                    expected(h, names),
                    "{step}, skipping {names:?}"
                );
                assert!(out.len() - 1 <= h.wire_len(), "{step}");
            }
        }
        let mut h = Headers::new();
        check(&h, "empty");
        h.append("Host", "a");
        h.append("Content-Length", "3");
        h.append("X-A", "");
        h.append("Connection", "close");
        h.append("X-B", "2");
        check(&h, "appended");
        h.remove("x-a");
        check(&h, "a gap");
        h.insert("HOST", "b");
        check(&h, "the first field moved to the end of the buffer");
        h.retain(|n, _| n != "X-B");
        check(&h, "the last one gone");
        let copy = h.clone_with_room(1, 8);
        check(&copy, "copied");
        for i in 0..300 {
            h.insert("X-Counter", i.to_string());
        }
        check(&h, "compacted");
        h.retain(|_, _| false);
        check(&h, "none left");
    }
}
