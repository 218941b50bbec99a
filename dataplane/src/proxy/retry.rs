//! Retry decisions, pure: which outcomes of a try a [`RetryPolicy`] retries,
//! and the jittered backoff between tries (Envoy's: 25 ms base, doubling,
//! capped at 250 ms, full jitter).

use std::time::Duration;

use http::StatusCode;

use crate::config::RetryPolicy;

/// The largest request body buffered so the request can be retried; larger
/// (or unsized) bodies stream and are not retried.
pub(crate) const MAX_BUFFERED_BODY: u64 = 64 * 1024;

const BASE_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// How a try ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Response headers with this status.
    Status(StatusCode),
    /// The TCP connection (or handshake) failed.
    ConnectFailure,
    /// The connection failed after the request was sent, before headers.
    Reset,
    /// The per-try timeout fired.
    PerTryTimeout,
    /// A circuit breaker refused the try; never retried.
    Overloaded,
}

/// Whether `policy` retries a try that ended with `outcome`.
pub(crate) fn should_retry(policy: &RetryPolicy, outcome: Outcome) -> bool {
    match outcome {
        Outcome::Status(status) => {
            let code = status.as_u16();
            (policy.on_5xx && status.is_server_error())
                || (policy.on_gateway_error && matches!(code, 502..=504))
                || policy.retriable_status_codes.contains(&code)
        }
        // Envoy counts a reset as a 5xx (it becomes one), and a timed-out try
        // as a reset.
        Outcome::ConnectFailure => policy.on_5xx || policy.on_gateway_error || policy.on_connect_failure,
        Outcome::Reset | Outcome::PerTryTimeout => {
            policy.on_5xx || policy.on_gateway_error || policy.on_reset
        }
        Outcome::Overloaded => false,
    }
}

/// The pause before retry number `retry` (1 for the first retry).
pub(crate) fn backoff(retry: u32) -> Duration {
    let ceiling = BASE_BACKOFF.saturating_mul(1 << retry.saturating_sub(1).min(8)).min(MAX_BACKOFF);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::random_range(0..millis))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn policy(f: impl FnOnce(&mut RetryPolicy)) -> RetryPolicy {
        let mut p = RetryPolicy {
            on_5xx: false,
            on_gateway_error: false,
            on_connect_failure: false,
            on_reset: false,
            retriable_status_codes: vec![],
            num_retries: 1,
            per_try_timeout: None,
        };
        f(&mut p);
        p
    }

    #[test]
    fn retry_classification_follows_retry_on() {
        use Outcome::*;
        let s = |c: u16| Status(StatusCode::from_u16(c).unwrap());
        let on_5xx = policy(|p| p.on_5xx = true);
        let gateway = policy(|p| p.on_gateway_error = true);
        let connect = policy(|p| p.on_connect_failure = true);
        let reset = policy(|p| p.on_reset = true);
        let codes = policy(|p| p.retriable_status_codes = vec![409, 503]);
        let none = policy(|_| {});
        let cases = [
            (&on_5xx, s(500), true),
            (&on_5xx, s(503), true),
            (&on_5xx, s(404), false),
            (&on_5xx, s(200), false),
            (&on_5xx, ConnectFailure, true),
            (&on_5xx, Reset, true),
            (&on_5xx, PerTryTimeout, true),
            (&gateway, s(500), false),
            (&gateway, s(502), true),
            (&gateway, s(503), true),
            (&gateway, s(504), true),
            (&gateway, ConnectFailure, true),
            (&connect, ConnectFailure, true),
            (&connect, Reset, false),
            (&connect, s(503), false),
            (&reset, Reset, true),
            (&reset, PerTryTimeout, true),
            (&reset, ConnectFailure, false),
            (&reset, s(500), false),
            (&codes, s(409), true),
            (&codes, s(503), true),
            (&codes, s(500), false),
            (&none, s(503), false),
            (&none, ConnectFailure, false),
            (&on_5xx, Overloaded, false),
        ];
        for (policy, outcome, want) in cases {
            assert_eq!(should_retry(policy, outcome), want, "{outcome:?} with {policy:?}");
        }
    }

    #[test]
    fn backoff_is_jittered_under_a_doubling_cap() {
        for _ in 0..100 {
            assert!(backoff(1) < Duration::from_millis(25));
            assert!(backoff(2) < Duration::from_millis(50));
            assert!(backoff(30) < MAX_BACKOFF);
        }
    }
}
