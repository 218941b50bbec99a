//! Trace context headers: W3C `traceparent`, and B3 (the single `b3` header or the
//! `x-b3-*` set). Parsing is strict; a malformed header is ignored (the request starts a
//! new trace), as the W3C recommendation says.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// The W3C header.
pub const TRACEPARENT: &str = "traceparent";
/// B3's single header.
pub const B3: &str = "b3";
/// B3's multiple headers.
pub const B3_TRACE_ID: &str = "x-b3-traceid";
/// B3's span id header.
pub const B3_SPAN_ID: &str = "x-b3-spanid";
/// B3's parent span id header.
pub const B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
/// B3's sampling header.
pub const B3_SAMPLED: &str = "x-b3-sampled";
/// B3's debug flag (implies sampled).
pub const B3_FLAGS: &str = "x-b3-flags";

/// Which B3 form a request carried, so the forwarded request carries the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum B3Form {
    /// `b3: {trace}-{span}[-{sampled}[-{parent}]]`.
    Single,
    /// `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`, ...
    Multi,
}

/// The parent a request names: trace id, the caller's span id, and its sampling decision
/// (`None`: B3 left the decision to this hop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, never all zero.
    pub span_id: [u8; 8],
    /// The caller's decision, if it made one.
    pub sampled: Option<bool>,
    /// The request carried B3 in this form (and no valid `traceparent`).
    pub b3: Option<B3Form>,
}

/// The parent of a request: a valid `traceparent` first, else valid B3. Records which B3
/// form was present even when `traceparent` wins, so both get rewritten.
pub fn extract(headers: &HeaderMap) -> (Option<Parent>, Option<B3Form>) {
    let b3_form = if headers.contains_key(B3) {
        Some(B3Form::Single)
    } else if headers.contains_key(B3_TRACE_ID) {
        Some(B3Form::Multi)
    } else {
        None
    };
    let w3c = headers.get(TRACEPARENT).and_then(|v| parse_traceparent(v.as_bytes()));
    let parent = w3c.or_else(|| match b3_form {
        Some(B3Form::Single) => headers.get(B3).and_then(|v| parse_b3_single(v.as_bytes())),
        Some(B3Form::Multi) => parse_b3_multi(headers),
        None => None,
    });
    (parent.map(|p| Parent { b3: b3_form, ..p }), b3_form)
}

/// `00-{32 hex trace id}-{16 hex parent id}-{2 hex flags}`; later versions may append
/// fields after a dash. Upper-case hex, all-zero ids and version `ff` are invalid.
pub fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() < 55 {
        return None;
    }
    let version = hex_array::<1>(&v[0..2])?[0];
    if version == 0xff || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    // Version 00 is exactly 55 bytes; a later version may add `-...`.
    if (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace_id = hex_array::<16>(&v[3..35])?;
    let span_id = hex_array::<8>(&v[36..52])?;
    let flags = hex_array::<1>(&v[53..55])?[0];
    valid_ids(trace_id, span_id).then_some(Parent {
        trace_id,
        span_id,
        sampled: Some(flags & 1 == 1),
        b3: None,
    })
}

/// `b3: {trace}-{span}[-{sampled}[-{parent}]]`; a trace id of 16 hex digits is widened
/// to 128 bits with zeros on the left, as B3 says. A lone `0`/`d` (a decision only) names no parent.
pub fn parse_b3_single(v: &[u8]) -> Option<Parent> {
    let s = std::str::from_utf8(v).ok()?;
    let mut parts = s.split('-');
    let trace_id = b3_trace_id(parts.next()?.as_bytes())?;
    let span_id = hex_array::<8>(parts.next()?.as_bytes())?;
    let sampled = match parts.next() {
        None => None,
        Some("1" | "d") => Some(true),
        Some("0") => Some(false),
        Some(_) => return None,
    };
    if let Some(parent) = parts.next() {
        hex_array::<8>(parent.as_bytes())?;
    }
    if parts.next().is_some() {
        return None;
    }
    valid_ids(trace_id, span_id).then_some(Parent { trace_id, span_id, sampled, b3: None })
}

/// `x-b3-traceid` and `x-b3-spanid` (both needed), `x-b3-sampled` (`1`/`0`, or
/// `true`/`false` from old clients), `x-b3-flags: 1` (debug, so sampled).
pub fn parse_b3_multi(headers: &HeaderMap) -> Option<Parent> {
    let trace_id = b3_trace_id(headers.get(B3_TRACE_ID)?.as_bytes())?;
    let span_id = hex_array::<8>(headers.get(B3_SPAN_ID)?.as_bytes())?;
    let debug = headers.get(B3_FLAGS).is_some_and(|v| v.as_bytes() == b"1");
    let sampled = match headers.get(B3_SAMPLED).map(HeaderValue::as_bytes) {
        _ if debug => Some(true),
        None => None,
        Some(b"1" | b"true") => Some(true),
        Some(b"0" | b"false") => Some(false),
        Some(_) => return None,
    };
    valid_ids(trace_id, span_id).then_some(Parent { trace_id, span_id, sampled, b3: None })
}

/// Sets the headers the next hop continues from: `traceparent` always, and B3 in the form
/// the request carried it (`b3` alone, or the `x-b3-*` set, whose parent is `parent`).
pub fn inject(
    headers: &mut HeaderMap,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
    parent: Option<[u8; 8]>,
    b3: Option<B3Form>,
) {
    let flag = if sampled { "01" } else { "00" };
    let traceparent = format!("00-{}-{}-{flag}", hex(&trace_id), hex(&span_id));
    set(headers, TRACEPARENT, traceparent);
    match b3 {
        None => {}
        Some(B3Form::Single) => {
            let mut v = format!("{}-{}-{}", hex(&trace_id), hex(&span_id), u8::from(sampled));
            if let Some(parent) = parent {
                v.push('-');
                v.push_str(&hex(&parent));
            }
            set(headers, B3, v);
        }
        Some(B3Form::Multi) => {
            set(headers, B3_TRACE_ID, hex(&trace_id));
            set(headers, B3_SPAN_ID, hex(&span_id));
            set(headers, B3_SAMPLED, u8::from(sampled).to_string());
            headers.remove(B3_FLAGS);
            match parent {
                Some(parent) => set(headers, B3_PARENT_SPAN_ID, hex(&parent)),
                None => {
                    headers.remove(B3_PARENT_SPAN_ID);
                }
            }
        }
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: String) {
    // Hex digits and dashes: always a valid header value.
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn valid_ids(trace_id: [u8; 16], span_id: [u8; 8]) -> bool {
    trace_id != [0; 16] && span_id != [0; 8]
}

fn b3_trace_id(v: &[u8]) -> Option<[u8; 16]> {
    match v.len() {
        32 => hex_array::<16>(v),
        16 => {
            let low = hex_array::<8>(v)?;
            let mut id = [0; 16];
            id[8..].copy_from_slice(&low);
            Some(id)
        }
        _ => None,
    }
}

/// Exactly `2 * N` lower-case hex digits.
fn hex_array<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    if v.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in v.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_valid_traceparent_names_the_parent_and_its_sampled_flag() {
        let p = parse_traceparent(format!("00-{TRACE}-{SPAN}-01").as_bytes()).unwrap();
        assert_eq!(hex(&p.trace_id), TRACE);
        assert_eq!(hex(&p.span_id), SPAN);
        assert_eq!(p.sampled, Some(true));
        let p = parse_traceparent(format!("00-{TRACE}-{SPAN}-00").as_bytes()).unwrap();
        assert_eq!(p.sampled, Some(false));
        // A later version may carry more fields.
        assert!(parse_traceparent(format!("01-{TRACE}-{SPAN}-01-extra").as_bytes()).is_some());
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            String::new(),
            "garbage".to_owned(),
            format!("00-{TRACE}-{SPAN}-1"),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            format!("00-{}-{SPAN}-01", "0".repeat(32)),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}-01-extra"),
            format!("00_{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}-0g"),
            format!("00-{TRACE}x-{SPAN}-01"),
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad:?}");
        }
        // With nothing else valid, the request starts a new root.
        let (parent, b3) = extract(&headers(&[(TRACEPARENT, "00-nonsense")]));
        assert_eq!((parent, b3), (None, None));
    }

    #[test]
    fn b3_single_and_multi_headers_name_the_parent() {
        let p = parse_b3_single(format!("{TRACE}-{SPAN}-1").as_bytes()).unwrap();
        assert_eq!((hex(&p.trace_id), p.sampled), (TRACE.to_owned(), Some(true)));
        let p = parse_b3_single(format!("{TRACE}-{SPAN}").as_bytes()).unwrap();
        assert_eq!(p.sampled, None, "no decision: this hop decides");
        let p = parse_b3_single(format!("{TRACE}-{SPAN}-0-{SPAN}").as_bytes()).unwrap();
        assert_eq!(p.sampled, Some(false));
        // 64-bit trace ids are widened on the left.
        let p = parse_b3_single(format!("a3ce929d0e0e4736-{SPAN}-d").as_bytes()).unwrap();
        assert_eq!(hex(&p.trace_id), "0000000000000000a3ce929d0e0e4736");
        assert_eq!(p.sampled, Some(true));
        assert_eq!(parse_b3_single(b"0"), None);
        assert_eq!(parse_b3_single(format!("{TRACE}-{SPAN}-x").as_bytes()), None);

        let (p, form) = extract(&headers(&[(B3_TRACE_ID, TRACE), (B3_SPAN_ID, SPAN), (B3_SAMPLED, "1")]));
        let p = p.unwrap();
        assert_eq!((hex(&p.span_id), p.sampled, form), (SPAN.to_owned(), Some(true), Some(B3Form::Multi)));
        let (p, _) = extract(&headers(&[(B3_TRACE_ID, TRACE), (B3_SPAN_ID, SPAN), (B3_FLAGS, "1")]));
        assert_eq!(p.unwrap().sampled, Some(true), "debug implies sampled");
        let (p, form) = extract(&headers(&[(B3_TRACE_ID, TRACE)]));
        assert_eq!((p, form), (None, Some(B3Form::Multi)), "a span id is required");
    }

    #[test]
    fn traceparent_wins_over_b3_but_both_are_rewritten() {
        let other = "11111111111111111111111111111111";
        let (p, form) = extract(&headers(&[
            (TRACEPARENT, &format!("00-{TRACE}-{SPAN}-01")),
            (B3, &format!("{other}-{SPAN}-1")),
        ]));
        assert_eq!(hex(&p.unwrap().trace_id), TRACE);
        assert_eq!(form, Some(B3Form::Single));
    }

    #[test]
    fn injected_headers_make_the_next_hop_a_child() {
        let trace = hex_array::<16>(TRACE.as_bytes()).unwrap();
        let span = [1, 2, 3, 4, 5, 6, 7, 8];
        let parent = hex_array::<8>(SPAN.as_bytes()).unwrap();
        let mut h = headers(&[(B3_TRACE_ID, "x"), (B3_FLAGS, "1")]);
        inject(&mut h, trace, span, true, Some(parent), Some(B3Form::Multi));
        assert_eq!(h[TRACEPARENT], format!("00-{TRACE}-0102030405060708-01").as_str());
        assert_eq!(h[B3_TRACE_ID], TRACE);
        assert_eq!(h[B3_SPAN_ID], "0102030405060708");
        assert_eq!(h[B3_PARENT_SPAN_ID], SPAN);
        assert_eq!(h[B3_SAMPLED], "1");
        assert!(!h.contains_key(B3_FLAGS));
        let next = parse_traceparent(h[TRACEPARENT].as_bytes()).unwrap();
        assert_eq!((next.trace_id, next.span_id), (trace, span));

        let mut h = HeaderMap::new();
        inject(&mut h, trace, span, false, None, Some(B3Form::Single));
        assert_eq!(h[B3], format!("{TRACE}-0102030405060708-0").as_str());
        assert!(h[TRACEPARENT].to_str().unwrap().ends_with("-00"));
    }
}
