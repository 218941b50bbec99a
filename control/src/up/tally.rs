//! What the demo apps and the traffic loop observed, gathered in one place.
//!
//! Observers send [`Event`]s over a channel; the live view's task owns the [`Tally`]
//! and records them, so nothing is shared behind a lock.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::stats::{Summary, Window};

/// Seconds the live view looks back.
pub(crate) const WINDOW_SECS: u64 = 10;

/// One observation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// A demo app answered a request.
    Handled {
        /// The workload's index in the plan.
        workload: usize,
        /// When the request arrived.
        at: Instant,
        /// Whether it answered 2xx.
        ok: bool,
        /// How long it took to answer.
        latency: Duration,
    },
    /// The traffic loop got an answer (or gave up).
    Sent {
        /// When the request was sent.
        at: Instant,
        /// Whether the answer was 2xx.
        ok: bool,
        /// How long it took.
        latency: Duration,
        /// The workloads the answer's chain names (`frontend > payment-v1 > ...`), by index.
        chain: Vec<usize>,
    },
}

/// What a demo app uses to report the requests it handles.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    pub(crate) events: mpsc::UnboundedSender<Event>,
    pub(crate) workload: usize,
}

impl Recorder {
    /// Reports one handled request; a closed channel (shutting down) is fine.
    pub(crate) fn handled(&self, at: Instant, ok: bool, latency: Duration) {
        let _ = self.events.send(Event::Handled { workload: self.workload, at, ok, latency });
    }
}

/// Windows per workload and for the traffic loop, counted from the moment traffic started.
#[derive(Debug)]
pub(crate) struct Tally {
    origin: Instant,
    /// Requests each workload's demo app handled.
    handled: Vec<Window>,
    /// Traffic-loop answers whose chain names each workload.
    in_chain: Vec<Window>,
    /// The traffic loop's own view.
    sent: Window,
    /// Every request the loop sent, and how many failed, since the origin.
    pub(crate) total_sent: u64,
    pub(crate) total_failed: u64,
}

impl Tally {
    /// An empty tally for `workloads` workloads; events from before `origin` (warm-up) are ignored.
    pub(crate) fn new(origin: Instant, workloads: usize) -> Tally {
        Tally {
            origin,
            handled: vec![Window::new(WINDOW_SECS); workloads],
            in_chain: vec![Window::new(WINDOW_SECS); workloads],
            sent: Window::new(WINDOW_SECS),
            total_sent: 0,
            total_failed: 0,
        }
    }

    /// The second since the origin that `at` falls in; `None` before the origin.
    fn second(&self, at: Instant) -> Option<u64> {
        at.checked_duration_since(self.origin).map(|d| d.as_secs())
    }

    /// Whole seconds since the origin, now.
    pub(crate) fn elapsed_secs(&self) -> u64 {
        self.origin.elapsed().as_secs()
    }

    /// Records one event.
    pub(crate) fn record(&mut self, event: Event) {
        match event {
            Event::Handled { workload, at, ok, latency } => {
                if let (Some(second), Some(w)) = (self.second(at), self.handled.get_mut(workload)) {
                    w.record(second, ok, latency);
                }
            }
            Event::Sent { at, ok, latency, chain } => {
                let Some(second) = self.second(at) else { return };
                self.total_sent += 1;
                self.total_failed += u64::from(!ok);
                self.sent.record(second, ok, latency);
                for w in chain {
                    if let Some(win) = self.in_chain.get_mut(w) {
                        win.record(second, ok, latency);
                    }
                }
            }
        }
    }

    /// A workload's demo app over the window ending at second `end`.
    pub(crate) fn handled(&self, workload: usize, end: u64) -> Summary {
        self.handled.get(workload).map(|w| w.summary(end)).unwrap_or_default()
    }

    /// How many loop answers named `workload` in the last `secs` seconds before `end`.
    pub(crate) fn in_chain(&self, workload: usize, end: u64, secs: u64) -> u64 {
        self.in_chain.get(workload).map_or(0, |w| w.summary_last(end, secs).requests)
    }

    /// The traffic loop's view over the window ending at `end`.
    pub(crate) fn sent(&self, end: u64) -> Summary {
        self.sent.summary(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_events_before_the_origin_are_ignored() {
        let before = Instant::now();
        let origin = before + Duration::from_millis(10);
        let mut t = Tally::new(origin, 2);
        t.record(Event::Handled { workload: 0, at: before, ok: true, latency: Duration::ZERO });
        t.record(Event::Sent { at: before, ok: false, latency: Duration::ZERO, chain: vec![0] });
        t.record(Event::Handled { workload: 1, at: origin, ok: true, latency: Duration::ZERO });
        t.record(Event::Sent { at: origin, ok: true, latency: Duration::ZERO, chain: vec![0, 1, 7] });
        assert_eq!(t.handled(0, 1).requests, 0);
        assert_eq!(t.handled(1, 1).requests, 1);
        assert_eq!((t.total_sent, t.total_failed), (1, 0));
        assert_eq!((t.in_chain(0, 1, WINDOW_SECS), t.in_chain(1, 1, 1)), (1, 1));
    }
}
