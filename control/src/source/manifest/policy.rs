//! `weft.io/*` annotations on a Service that shape its clients' requests:
//! timeout and retries.

use std::time::Duration;

use super::fields::{FieldResult, Node};
use crate::model::{
    HttpPolicy, PER_TRY_TIMEOUT_ANNOTATION, RETRIES_ANNOTATION, RETRY_ON_ANNOTATION, RetryPolicy,
    TIMEOUT_ANNOTATION,
};

/// The `retry_on` conditions weft's proxies and Envoy both implement.
const RETRY_ON: &[&str] = &["5xx", "gateway-error", "connect-failure", "reset"];

/// The most retries a service may ask for.
const MAX_RETRIES: u64 = 10;

/// A duration such as `250ms`, `2s`, `1m` or `0s`.
pub(super) fn duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("\"{s}\" is not a duration like 500ms, 2s or 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("\"{s}\" is not a duration like 500ms, 2s or 1m (units: ms, s, m)")),
    }
}

/// Reads the policy annotations; absent ones leave Envoy's defaults.
pub(super) fn http_policy(metadata: &Node<'_>) -> FieldResult<HttpPolicy> {
    let Some(annotations) = metadata.get("annotations")? else {
        return Ok(HttpPolicy::default());
    };
    let entries = annotations.entries()?;
    let get = |name: &str| entries.iter().find(|(k, _)| *k == name).map(|(_, v)| v);
    let dur = |name: &str| -> FieldResult<Option<Duration>> {
        match get(name) {
            None => Ok(None),
            Some(node) => duration(node.str()?).map(Some).map_err(|e| node.error(e)),
        }
    };
    let timeout = dur(TIMEOUT_ANNOTATION)?;
    let per_try_timeout = dur(PER_TRY_TIMEOUT_ANNOTATION)?;
    let num_retries = match get(RETRIES_ANNOTATION) {
        None => None,
        Some(node) => {
            let n: u64 = node.str()?.parse().map_err(|_| node.error("must be a whole number of retries"))?;
            if n > MAX_RETRIES {
                return Err(node.error(format!("at most {MAX_RETRIES} retries")));
            }
            Some(n as u32)
        }
    };
    let retry = match get(RETRY_ON_ANNOTATION) {
        None => {
            if let Some(node) = get(RETRIES_ANNOTATION).or(get(PER_TRY_TIMEOUT_ANNOTATION)) {
                return Err(node.error(format!("needs {RETRY_ON_ANNOTATION} to say when to retry")));
            }
            None
        }
        Some(node) => {
            let mut retry_on = Vec::new();
            for token in node.str()?.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if !RETRY_ON.contains(&token) {
                    return Err(node.error(format!("\"{token}\" is not one of {}", RETRY_ON.join(", "))));
                }
                retry_on.push(token.to_string());
            }
            if retry_on.is_empty() {
                return Err(node.error(format!("must list one or more of {}", RETRY_ON.join(", "))));
            }
            Some(RetryPolicy { retry_on, num_retries: num_retries.unwrap_or(1), per_try_timeout })
        }
    };
    Ok(HttpPolicy { timeout, retry })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::{assert_refused, parse_one};
    use super::*;
    use crate::source::Object;

    fn service(annotations: &str) -> crate::model::Service {
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations: {{{annotations}}}\nspec:\n  ports: [{{port: 80}}]\n"
        );
        match parse_one(&yaml).unwrap() {
            Object::Service(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn annotations_become_timeout_and_retries() {
        let s = service(
            "weft.io/timeout: 500ms, weft.io/retry-on: '5xx,connect-failure', weft.io/retries: '2', weft.io/per-try-timeout: 200ms",
        );
        assert_eq!(s.policy.timeout, Some(Duration::from_millis(500)));
        let r = s.policy.retry.unwrap();
        assert_eq!(r.retry_on, vec!["5xx".to_string(), "connect-failure".to_string()]);
        assert_eq!(r.num_retries, 2);
        assert_eq!(r.per_try_timeout, Some(Duration::from_millis(200)));
        assert_eq!(service("other: x").policy, HttpPolicy::default());
    }

    #[test]
    fn bad_annotations_are_refused_naming_the_annotation() {
        let with = |a: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations: {{{a}}}\nspec:\n  ports: [{{port: 80}}]\n"
            )
        };
        assert_refused(
            "timeout",
            &with("weft.io/timeout: fast"),
            "metadata.annotations[\"weft.io/timeout\"]",
            "not a duration",
        );
        assert_refused(
            "retry-on",
            &with("weft.io/retry-on: sometimes"),
            "metadata.annotations[\"weft.io/retry-on\"]",
            "\"sometimes\" is not one of",
        );
        assert_refused(
            "retries alone",
            &with("weft.io/retries: '2'"),
            "metadata.annotations[\"weft.io/retries\"]",
            "needs weft.io/retry-on",
        );
        assert_refused(
            "too many",
            &with("weft.io/retry-on: 5xx, weft.io/retries: '99'"),
            "metadata.annotations[\"weft.io/retries\"]",
            "at most 10",
        );
    }
}
