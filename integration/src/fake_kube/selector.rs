//! Label and field selectors, as far as equality goes: `a=b`, `a==b`, `a!=b`, `a`, `!a`.

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// A parsed selector; the empty one matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Selector(Vec<Requirement>);

impl Selector {
    /// Parses `text`; set-based requirements (`in`, `notin`) are refused.
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else if part.contains(' ') || part.contains('(') {
                return Err(format!("unsupported selector requirement {part:?}"));
            } else {
                Requirement::Exists(part.into())
            };
            out.push(req);
        }
        Ok(Self(out))
    }

    /// Whether an object whose values `get` returns matches.
    pub(super) fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k).as_deref() == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k).as_deref() != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn equality_selectors_match_like_the_api_server() {
        let labels = |k: &str| match k {
            "app" => Some("web".to_string()),
            "tier" => Some("fe".to_string()),
            _ => None,
        };
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web,tier", true),
            ("app!=web", false),
            ("app=db", false),
            ("!canary", true),
            ("!app", false),
            ("missing", false),
        ];
        for (text, want) in cases {
            assert_eq!(Selector::parse(text).unwrap().matches(labels), want, "{text}");
        }
        assert!(Selector::parse("app in (a,b)").is_err());
    }
}
