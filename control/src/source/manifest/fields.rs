//! Typed access to a parsed YAML document that remembers the field path, so
//! every error names the field it is about (`spec.backends[1].weight`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

/// A problem with one field of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldError {
    /// The field path, e.g. `spec.ports[0].port`; empty for the whole document.
    pub(super) field: String,
    /// What is wrong with it.
    pub(super) reason: String,
}

pub(super) type FieldResult<T> = Result<T, FieldError>;

/// A value in a document together with its path from the document root.
#[derive(Debug, Clone)]
pub(super) struct Node<'a> {
    pub(super) value: &'a Value,
    pub(super) path: String,
}

impl<'a> Node<'a> {
    /// The document root.
    pub(super) fn root(value: &'a Value) -> Self {
        Self { value, path: String::new() }
    }

    /// An error about this field.
    pub(super) fn error(&self, reason: impl Into<String>) -> FieldError {
        FieldError { field: self.path.clone(), reason: reason.into() }
    }

    /// The path of a child field, for errors about a field that is absent.
    pub(super) fn child_path(&self, name: &str) -> String {
        if self.path.is_empty() { name.to_string() } else { format!("{}.{name}", self.path) }
    }

    fn child(&self, name: &str, value: &'a Value) -> Self {
        Self { value, path: self.child_path(name) }
    }

    /// A field of this mapping; `None` when absent or `null`.
    pub(super) fn get(&self, name: &str) -> FieldResult<Option<Node<'a>>> {
        match self.value {
            Value::Object(map) => Ok(map.get(name).filter(|v| !v.is_null()).map(|v| self.child(name, v))),
            Value::Null => Ok(None),
            other => Err(self.error(format!("must be a mapping, not {}", type_name(other)))),
        }
    }

    /// A field of this mapping that must be present.
    pub(super) fn req(&self, name: &str) -> FieldResult<Node<'a>> {
        self.get(name)?
            .ok_or_else(|| FieldError { field: self.child_path(name), reason: "is required".into() })
    }

    /// This value as a string.
    pub(super) fn str(&self) -> FieldResult<&'a str> {
        match self.value {
            Value::String(s) => Ok(s),
            Value::Number(n) => Err(self.error(format!("must be a string (quote it: \"{n}\")"))),
            Value::Bool(b) => Err(self.error(format!("must be a string (quote it: \"{b}\")"))),
            other => Err(self.error(format!("must be a string, not {}", type_name(other)))),
        }
    }

    /// A string field that may be absent.
    pub(super) fn opt_str(&self, name: &str) -> FieldResult<Option<&'a str>> {
        self.get(name)?.map(|n| n.str()).transpose()
    }

    /// A string field that must be present and non-empty.
    pub(super) fn req_str(&self, name: &str) -> FieldResult<&'a str> {
        let node = self.req(name)?;
        let s = node.str()?;
        if s.is_empty() {
            return Err(node.error("must not be empty"));
        }
        Ok(s)
    }

    /// This value as a list; `null` is an empty list.
    pub(super) fn list(&self) -> FieldResult<Vec<Node<'a>>> {
        match self.value {
            Value::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| Node { value: v, path: format!("{}[{i}]", self.path) })
                .collect()),
            Value::Null => Ok(Vec::new()),
            other => Err(self.error(format!("must be a list, not {}", type_name(other)))),
        }
    }

    /// A list field that may be absent (an empty list then).
    pub(super) fn opt_list(&self, name: &str) -> FieldResult<Vec<Node<'a>>> {
        self.get(name)?.map(|n| n.list()).transpose().map(Option::unwrap_or_default)
    }

    /// The entries of this mapping, in key order, with `name["key"]` paths.
    pub(super) fn entries(&self) -> FieldResult<Vec<(&'a str, Node<'a>)>> {
        match self.value {
            Value::Object(map) => Ok(map
                .iter()
                .map(|(k, v)| (k.as_str(), Node { value: v, path: format!("{}[{k:?}]", self.path) }))
                .collect()),
            Value::Null => Ok(Vec::new()),
            other => Err(self.error(format!("must be a mapping, not {}", type_name(other)))),
        }
    }

    /// A mapping of strings to strings (labels, selectors); absent means empty.
    pub(super) fn string_map(&self, name: &str) -> FieldResult<BTreeMap<String, String>> {
        let Some(node) = self.get(name)? else {
            return Ok(BTreeMap::new());
        };
        node.entries()?.into_iter().map(|(k, v)| Ok((k.to_string(), v.str()?.to_string()))).collect()
    }

    /// This value as a non-negative integer.
    pub(super) fn u64(&self) -> FieldResult<u64> {
        match self.value {
            Value::Number(n) => n.as_u64().ok_or_else(|| {
                if n.as_i64().is_some_and(|i| i < 0) {
                    self.error(format!("must not be negative (got {n})"))
                } else {
                    self.error(format!("must be a whole number (got {n})"))
                }
            }),
            Value::String(s) => Err(self.error(format!("must be a number, not a string (got \"{s}\")"))),
            other => Err(self.error(format!("must be a number, not {}", type_name(other)))),
        }
    }

    /// This value as a TCP port number, 1..=65535.
    pub(super) fn port(&self) -> FieldResult<u16> {
        let n = self.u64()?;
        match u16::try_from(n) {
            Ok(p) if p != 0 => Ok(p),
            _ => Err(self.error(format!("must be a port number between 1 and 65535 (got {n})"))),
        }
    }

    /// This value as a boolean.
    pub(super) fn bool(&self) -> FieldResult<bool> {
        match self.value {
            Value::Bool(b) => Ok(*b),
            other => Err(self.error(format!("must be true or false, not {}", type_name(other)))),
        }
    }

    /// This value as an IP address.
    pub(super) fn ip(&self) -> FieldResult<IpAddr> {
        let s = self.str()?;
        s.parse().map_err(|_| self.error(format!("must be an IP address (got \"{s}\")")))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn rfc1123_label_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(is_label_char)
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum)
}

/// Checks a lowercase RFC 1123 label (Namespace names, port names).
pub(super) fn dns_label(s: &str) -> Result<(), String> {
    if rfc1123_label_ok(s) {
        Ok(())
    } else {
        Err(format!(
            "must be a DNS label: at most 63 lowercase letters, digits or '-', \
             starting and ending with a letter or digit (got \"{s}\")"
        ))
    }
}

/// Checks an RFC 1035 label, which Kubernetes requires of Service names.
pub(super) fn dns_1035_label(s: &str) -> Result<(), String> {
    if rfc1123_label_ok(s) && s.starts_with(|c: char| c.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(format!(
            "must be a DNS-1035 label: at most 63 lowercase letters, digits or '-', \
             starting with a letter and ending with a letter or digit (got \"{s}\")"
        ))
    }
}

/// Checks an RFC 1123 subdomain (most object names).
pub(super) fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() <= 253 && s.split('.').all(rfc1123_label_ok) {
        Ok(())
    } else {
        Err(format!(
            "must be a DNS subdomain: at most 253 characters, dot-separated labels of \
             lowercase letters, digits or '-', each starting and ending with a letter or \
             digit (got \"{s}\")"
        ))
    }
}

/// Converts a Kubernetes quantity (`1`, `500m`, `0.5`, `1k`, `2Ki`, `1e3`) to thousandths.
///
/// All of Kubernetes' suffixes are accepted, since a quantity with a suffix is still an
/// exact number; what cannot be expressed in whole thousandths (`1u`) is refused rather
/// than rounded, so a weight never silently changes.
pub(super) fn quantity_milli(s: &str) -> Result<u64, String> {
    const HINT: &str = "must be a Kubernetes quantity such as 1, 500m or 0.5";
    let bad = || format!("{HINT} (got \"{s}\")");
    let (negative, rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let split = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(split);
    let (int_digits, frac_digits) = number.split_once('.').unwrap_or((number, ""));
    if int_digits.is_empty() && frac_digits.is_empty() || frac_digits.contains('.') {
        return Err(bad());
    }
    let (exp10, pow2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        exp => {
            let digits = exp.strip_prefix(['e', 'E']).ok_or_else(bad)?;
            (digits.parse::<i32>().map_err(|_| bad())?, 0)
        }
    };
    let digits = format!("{int_digits}{frac_digits}");
    let digits = digits.trim_start_matches('0');
    let too_large = || format!("is too large (got \"{s}\")");
    if digits.len() > 30 {
        return Err(too_large());
    }
    let mantissa: u128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| bad())? };
    if mantissa == 0 {
        return Ok(0);
    }
    if negative {
        return Err(format!("must not be negative (got \"{s}\")"));
    }
    let frac_len = i32::try_from(frac_digits.len()).map_err(|_| bad())?;
    // value * 1000 = mantissa * 2^pow2 * 10^(exp10 - frac_len + 3)
    let exp = exp10.saturating_sub(frac_len).saturating_add(3);
    let scaled = mantissa.checked_shl(pow2).filter(|v| v >> pow2 == mantissa).ok_or_else(too_large)?;
    let milli = if exp >= 0 {
        let factor = 10u128.checked_pow(exp.unsigned_abs()).ok_or_else(too_large)?;
        scaled.checked_mul(factor).ok_or_else(too_large)?
    } else {
        let divisor = 10u128.checked_pow(exp.unsigned_abs());
        match divisor {
            Some(d) if scaled % d == 0 => scaled / d,
            _ => {
                return Err(format!("must be a whole number of thousandths (got \"{s}\")"));
            }
        }
    };
    u64::try_from(milli).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn quantities_convert_to_exact_thousandths() {
        let cases: &[(&str, Result<u64, &str>)] = &[
            ("1", Ok(1000)),
            ("0", Ok(0)),
            ("500m", Ok(500)),
            ("950m", Ok(950)),
            ("0.5", Ok(500)),
            (".25", Ok(250)),
            ("1.", Ok(1000)),
            ("+2", Ok(2000)),
            ("1k", Ok(1_000_000)),
            ("2Ki", Ok(2_048_000)),
            ("1e3", Ok(1_000_000)),
            ("1000u", Ok(1)),
            ("1500u", Err("must be a whole number of thousandths")),
            ("5000000n", Ok(5)),
            ("-0", Ok(0)),
            ("1u", Err("must be a whole number of thousandths")),
            ("0.0005", Err("must be a whole number of thousandths")),
            ("-1", Err("must not be negative")),
            ("-500m", Err("must not be negative")),
            ("abc", Err("must be a Kubernetes quantity")),
            ("", Err("must be a Kubernetes quantity")),
            ("1.2.3", Err("must be a Kubernetes quantity")),
            ("10x", Err("must be a Kubernetes quantity")),
            ("1 m", Err("must be a Kubernetes quantity")),
            ("99999999999999999999E", Err("is too large")),
        ];
        for (input, want) in cases {
            let got = quantity_milli(input);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{input}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{input}: {g}"),
                _ => panic!("{input}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn dns_names_are_checked_like_kubernetes() {
        assert!(dns_label("web-1").is_ok());
        assert!(dns_label("1web").is_ok());
        assert!(dns_label("Web").is_err());
        assert!(dns_label("web-").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns_1035_label("1web").is_err());
        assert!(dns_1035_label("web1").is_ok());
        assert!(dns_subdomain("web.v1").is_ok());
        assert!(dns_subdomain("web..v1").is_err());
        assert!(dns_subdomain("web_v1").is_err());
    }

    #[test]
    fn node_errors_name_the_field_path() {
        let v: Value = serde_json::json!({"spec": {"ports": [{"port": 80}, {"port": "x"}]}});
        let root = Node::root(&v);
        let ports = root.req("spec").unwrap().req("ports").unwrap().list().unwrap();
        assert_eq!(ports[0].req("port").unwrap().port(), Ok(80));
        let err = ports[1].req("port").unwrap().port().unwrap_err();
        assert_eq!(err.field, "spec.ports[1].port");
        assert!(err.reason.contains("not a string"), "{}", err.reason);
        let err = ports[0].req("name").unwrap_err();
        assert_eq!(err, FieldError { field: "spec.ports[0].name".into(), reason: "is required".into() });
        let labels: Value = serde_json::json!({"metadata": {"labels": {"app.kubernetes.io/v": 2}}});
        let err = Node::root(&labels).req("metadata").unwrap().string_map("labels").unwrap_err();
        assert_eq!(err.field, "metadata.labels[\"app.kubernetes.io/v\"]");
        assert_eq!(err.reason, "must be a string (quote it: \"2\")");
    }
}
