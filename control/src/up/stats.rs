//! Request statistics over a sliding window of whole seconds: how many requests,
//! how many succeeded, and their latency distribution.
//!
//! Latencies go into a log-linear histogram (HDR-style: 32 linear sub-buckets per
//! power of two, so a reported percentile is at most about 3 % above the true value),
//! kept sparse, so memory stays small whatever the request rate.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

/// A sparse log-linear histogram (of nanoseconds, in a [`Window`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Histogram {
    buckets: BTreeMap<u32, u64>,
    count: u64,
}

/// The bucket of a value: exact below [`SUB`], then [`SUB`] buckets per power of two.
fn bucket_of(v: u64) -> u32 {
    if v < SUB {
        return v as u32;
    }
    let exp = 63 - v.leading_zeros() - SUB_BITS;
    let mantissa = v >> exp; // in SUB..2*SUB
    (exp << SUB_BITS) + mantissa as u32
}

/// The largest value that falls into bucket `b`.
fn bucket_max(b: u32) -> u64 {
    let b = u64::from(b);
    if b < SUB {
        return b;
    }
    let exp = b / SUB - 1;
    let mantissa = b % SUB + SUB;
    ((mantissa + 1) << exp) - 1
}

impl Histogram {
    /// Adds one value.
    pub(crate) fn record(&mut self, value: u64) {
        *self.buckets.entry(bucket_of(value)).or_default() += 1;
        self.count += 1;
    }

    /// Adds every value of `other`.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (b, n) in &other.buckets {
            *self.buckets.entry(*b).or_default() += n;
        }
        self.count += other.count;
    }

    /// The value at quantile `q` (0..=1), rounded up to its bucket's upper bound;
    /// `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        // The rank of the q-quantile, 1-based: ceil(q * n), at least 1.
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(bucket_max(*b));
            }
        }
        self.buckets.keys().next_back().map(|b| bucket_max(*b))
    }
}

/// One second of observations.
#[derive(Debug, Clone, Default)]
struct Slot {
    second: u64,
    requests: u64,
    ok: u64,
    latency: Histogram,
}

/// Observations bucketed by the second (since a common origin) they started in.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    span: u64,
    slots: VecDeque<Slot>,
}

/// What a window saw over its span.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Summary {
    /// Requests started in the span.
    pub(crate) requests: u64,
    /// Of which succeeded.
    pub(crate) ok: u64,
    /// Seconds the span covers (less than the window's span early on).
    pub(crate) seconds: u64,
    /// The 99th percentile latency.
    pub(crate) p99: Option<Duration>,
}

impl Summary {
    /// Requests per second.
    pub(crate) fn rps(&self) -> f64 {
        if self.seconds == 0 { 0.0 } else { self.requests as f64 / self.seconds as f64 }
    }

    /// The share of successful requests, in percent; `None` without requests.
    pub(crate) fn success_percent(&self) -> Option<f64> {
        (self.requests > 0).then(|| 100.0 * self.ok as f64 / self.requests as f64)
    }
}

impl Window {
    /// A window over the last `span` seconds.
    pub(crate) fn new(span: u64) -> Window {
        Window { span, slots: VecDeque::new() }
    }

    /// Records a request that started in `second` (requests finish out of order, so
    /// late records for older seconds are expected).
    pub(crate) fn record(&mut self, second: u64, ok: bool, latency: Duration) {
        let pos = self.slots.iter().rposition(|s| s.second <= second);
        let idx = match pos {
            Some(i) if self.slots[i].second == second => i,
            Some(i) => {
                self.slots.insert(i + 1, Slot { second, ..Slot::default() });
                i + 1
            }
            None => {
                self.slots.push_front(Slot { second, ..Slot::default() });
                0
            }
        };
        let slot = &mut self.slots[idx];
        slot.requests += 1;
        slot.ok += u64::from(ok);
        slot.latency.record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        // Keep one span of slack behind the newest second for late records.
        let newest = self.slots.back().map_or(0, |s| s.second);
        while self.slots.front().is_some_and(|s| s.second + 2 * self.span < newest) {
            self.slots.pop_front();
        }
    }

    /// The seconds `[end - span, end)` (seconds counted from the origin, so the span
    /// is shorter while `end` < span).
    pub(crate) fn summary(&self, end: u64) -> Summary {
        self.summary_last(end, self.span)
    }

    /// The seconds `[end - secs, end)`, `secs` at most the window's span.
    pub(crate) fn summary_last(&self, end: u64, secs: u64) -> Summary {
        let start = end.saturating_sub(secs.min(self.span));
        let mut out = Summary { seconds: end - start, ..Summary::default() };
        let mut latency = Histogram::default();
        for s in self.slots.iter().filter(|s| s.second >= start && s.second < end) {
            out.requests += s.requests;
            out.ok += s.ok;
            latency.merge(&s.latency);
        }
        out.p99 = latency.quantile(0.99).map(Duration::from_nanos);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_when_small_and_within_three_percent_above() {
        for v in 0..SUB {
            assert_eq!(bucket_max(bucket_of(v)), v);
        }
        for v in [32, 33, 63, 64, 65, 100, 999, 1_000, 4_321, 1_000_000, 123_456_789] {
            let max = bucket_max(bucket_of(v));
            assert!(max >= v, "{v} -> {max}");
            assert!((max - v) as f64 <= v as f64 * 0.032, "{v} -> {max}");
        }
        // Buckets are ordered like their values.
        assert!(bucket_of(63) < bucket_of(64) && bucket_of(64) < bucket_of(66));
    }

    #[test]
    fn p99_of_a_hundred_values_is_the_ninety_ninth() {
        let mut h = Histogram::default();
        for v in 1..=100 {
            h.record(v * 10);
        }
        let p99 = h.quantile(0.99).unwrap_or_default();
        assert!((990..=1_020).contains(&p99), "{p99}");
        assert_eq!(h.quantile(0.0), Some(10));
        assert_eq!(Histogram::default().quantile(0.99), None);
    }

    #[test]
    fn window_counts_only_its_span_and_divides_by_the_seconds_covered() {
        let mut w = Window::new(10);
        for second in 0..20 {
            for i in 0..10 {
                w.record(second, i != 0 || second < 15, Duration::from_millis(2));
            }
        }
        let s = w.summary(20);
        assert_eq!((s.requests, s.ok, s.seconds), (100, 95, 10));
        assert_eq!(s.rps(), 10.0);
        assert_eq!(s.success_percent(), Some(95.0));
        // Early on the span is the time since the origin.
        assert_eq!(w.summary_last(20, 1).requests, 10);
        assert_eq!(w.summary_last(20, 99).requests, 100, "never more than the span");
        let early = w.summary(3);
        assert_eq!((early.requests, early.seconds), (30, 3));
        assert_eq!(early.rps(), 10.0);
        assert!(s.p99.is_some_and(|p| p >= Duration::from_millis(2)));
    }

    #[test]
    fn late_records_land_in_the_second_they_started() {
        let mut w = Window::new(10);
        w.record(5, true, Duration::ZERO);
        w.record(3, false, Duration::ZERO);
        w.record(4, true, Duration::ZERO);
        w.record(3, true, Duration::ZERO);
        assert_eq!(w.summary(4).requests, 2);
        assert_eq!(w.summary(5).requests, 3);
        assert_eq!(w.summary(6).ok, 3);
        assert_eq!(Window::new(10).summary(0).success_percent(), None);
    }
}
