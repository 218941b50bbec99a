//! Load balancing over a cluster's endpoints: weighted round robin, and least
//! request with the power of two random choices over requests in flight.
//!
//! The balancer of a config generation is plain data; the state that outlives
//! a generation (the round-robin cursor, in-flight counts) is atomics owned by
//! the cluster, so a pick takes no lock.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::LbPolicy;

/// Endpoint indices already tried by this request (retries pick another one
/// when they can). Indices past 63 are never marked.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tried(u64);

impl Tried {
    /// Marks `index` tried.
    pub(crate) fn mark(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }

    /// Whether `index` was tried.
    pub(crate) fn contains(&self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }
}

/// The balancer of one cluster in one config generation.
#[derive(Debug)]
pub(crate) struct Balancer {
    policy: LbPolicy,
    /// Running sums of the endpoint weights, when they differ; empty when
    /// every endpoint has the same weight (plain round robin).
    cumulative: Vec<u64>,
    len: usize,
}

impl Balancer {
    /// A balancer for endpoints with these weights (0 counts as 1).
    pub(crate) fn new(policy: LbPolicy, weights: &[u32]) -> Balancer {
        let uniform = weights.windows(2).all(|w| w[0].max(1) == w[1].max(1));
        let cumulative = if uniform {
            Vec::new()
        } else {
            weights
                .iter()
                .scan(0u64, |sum, w| {
                    *sum += u64::from((*w).max(1));
                    Some(*sum)
                })
                .collect()
        };
        Balancer { policy, cumulative, len: weights.len() }
    }

    /// Picks an endpoint index, avoiding `tried` ones while others remain.
    /// `load(i)` is endpoint i's requests in flight; `random(n)` draws in `0..n`.
    pub(crate) fn pick(
        &self,
        cursor: &AtomicUsize,
        tried: Tried,
        load: impl Fn(usize) -> u32,
        mut random: impl FnMut(usize) -> usize,
    ) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let first = match self.policy {
            LbPolicy::RoundRobin => self.round_robin(cursor.fetch_add(1, Ordering::Relaxed)),
            LbPolicy::LeastRequest if self.len == 1 => 0,
            LbPolicy::LeastRequest => {
                let a = random(self.len);
                let mut b = random(self.len - 1);
                if b >= a {
                    b += 1;
                }
                match (tried.contains(a), tried.contains(b)) {
                    (false, true) => a,
                    (true, false) => b,
                    _ if load(b) < load(a) => b,
                    _ => a,
                }
            }
        };
        if !tried.contains(first) {
            return Some(first);
        }
        // Every endpoint tried: go round again rather than fail.
        Some((1..self.len).map(|k| (first + k) % self.len).find(|i| !tried.contains(*i)).unwrap_or(first))
    }

    fn round_robin(&self, n: usize) -> usize {
        match self.cumulative.last() {
            None => n % self.len,
            Some(&total) => {
                let point = n as u64 % total;
                // The first endpoint whose running sum exceeds the point.
                self.cumulative.partition_point(|&sum| sum <= point)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn no_load(_: usize) -> u32 {
        0
    }

    #[test]
    fn round_robin_cycles_in_order() {
        let balancer = Balancer::new(LbPolicy::RoundRobin, &[1, 1, 1]);
        let cursor = AtomicUsize::new(0);
        let order: Vec<_> =
            (0..6).map(|_| balancer.pick(&cursor, Tried::default(), no_load, |_| 0).unwrap()).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn round_robin_follows_weights() {
        let balancer = Balancer::new(LbPolicy::RoundRobin, &[3, 1]);
        let cursor = AtomicUsize::new(0);
        let order: Vec<_> =
            (0..8).map(|_| balancer.pick(&cursor, Tried::default(), no_load, |_| 0).unwrap()).collect();
        assert_eq!(order, [0, 0, 0, 1, 0, 0, 0, 1]);
    }

    #[test]
    fn round_robin_skips_tried_endpoints() {
        let balancer = Balancer::new(LbPolicy::RoundRobin, &[1, 1, 1]);
        let cursor = AtomicUsize::new(0);
        let mut tried = Tried::default();
        tried.mark(0);
        tried.mark(1);
        assert_eq!(balancer.pick(&cursor, tried, no_load, |_| 0), Some(2));
        tried.mark(2);
        // All tried: still answers.
        assert!(balancer.pick(&cursor, tried, no_load, |_| 0).is_some());
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint_of_two() {
        let balancer = Balancer::new(LbPolicy::LeastRequest, &[1, 1, 1, 1]);
        let cursor = AtomicUsize::new(0);
        let loads = [5, 0, 7, 9];
        // Draws a=0, then b=0 -> shifted to 1: endpoints 0 and 1.
        let mut draws = [0, 0].into_iter();
        let pick = balancer.pick(&cursor, Tried::default(), |i| loads[i], |_| draws.next().unwrap());
        assert_eq!(pick, Some(1));
        // a=2, b=2 -> 3: endpoint 2 (7) beats 3 (9).
        let mut draws = [2, 2].into_iter();
        assert_eq!(
            balancer.pick(&cursor, Tried::default(), |i| loads[i], |_| draws.next().unwrap()),
            Some(2)
        );
    }

    #[test]
    fn least_request_with_random_draws_never_picks_the_busiest() {
        let balancer = Balancer::new(LbPolicy::LeastRequest, &[1, 1, 1]);
        let cursor = AtomicUsize::new(0);
        let loads = [0, 0, 100];
        for _ in 0..1_000 {
            let pick =
                balancer.pick(&cursor, Tried::default(), |i| loads[i], |n| rand::random_range(0..n)).unwrap();
            assert_ne!(pick, 2);
        }
    }

    #[test]
    fn least_request_avoids_a_tried_endpoint() {
        let balancer = Balancer::new(LbPolicy::LeastRequest, &[1, 1]);
        let cursor = AtomicUsize::new(0);
        let mut tried = Tried::default();
        tried.mark(1);
        // Endpoint 1 is idler but was tried.
        let loads = [3, 0];
        assert_eq!(balancer.pick(&cursor, tried, |i| loads[i], |_| 0), Some(0));
    }

    #[test]
    fn no_endpoints_no_pick() {
        let balancer = Balancer::new(LbPolicy::RoundRobin, &[]);
        assert_eq!(balancer.pick(&AtomicUsize::new(0), Tried::default(), no_load, |_| 0), None);
    }
}
