//! Tap: live request events for whoever observes the proxy (the control
//! plane, on behalf of `weft tap`).
//!
//! The data path asks [`Tap::is_active`] per request: one relaxed atomic load
//! when no one taps. While sessions are open, each request is matched against
//! every session's filter (authority, path prefix, method, destination); a
//! session that matches and is under its rate (requests per second) gets a
//! `REQUEST` event when the request's head is seen and a `RESPONSE` event when
//! its response's head is sent. Events go through a bounded channel with
//! `try_send`: a slow observer loses events (counted), it never slows a
//! request. A session ends at its `max_duration` or when its observer goes.
//!
//! [`server`] serves the `weft.tap.v1.Tap` gRPC service over mTLS, to the
//! control plane's identity only.

pub mod server;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use futures::Stream;
use tokio::sync::mpsc;
use weft_xds_protos::google::protobuf::{Duration as PbDuration, Timestamp};
use weft_xds_protos::tap::{Direction as WireDirection, EventKind, Filter, ObserveRequest, Peer, TapEvent};

use crate::metrics::Direction;

/// Requests per second a session gets when it does not say.
pub const DEFAULT_MAX_RPS: u32 = 100;
/// The most requests per second a session may ask for.
pub const MAX_RPS: u32 = 1_000;
/// How long a session lasts when it does not say.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(60);
/// The longest a session may last.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Events buffered per session before new ones are dropped.
const QUEUE: usize = 1_024;

/// The proxy's tap sessions.
#[derive(Debug, Default)]
pub struct Tap {
    /// Open sessions; the hot path reads only this while it is 0.
    active: AtomicUsize,
    /// The open sessions, read lock-free per tapped request.
    sessions: ArcSwap<Vec<Arc<Session>>>,
    /// Request ids.
    next_id: AtomicU64,
    /// Session ids.
    next_session: AtomicU64,
}

/// One observer's session.
#[derive(Debug)]
struct Session {
    id: u64,
    filter: Filter,
    tx: mpsc::Sender<TapEvent>,
    limiter: RateLimiter,
    dropped: AtomicU64,
}

/// Fixed one-second windows (counted from its creation) of at most `max` requests each;
/// lock-free.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    max: u32,
    base: Instant,
    window: AtomicU64,
    count: AtomicU32,
}

impl RateLimiter {
    pub(crate) fn new(max: u32) -> RateLimiter {
        RateLimiter::starting(max, Instant::now())
    }

    fn starting(max: u32, base: Instant) -> RateLimiter {
        RateLimiter { max, base, window: AtomicU64::new(0), count: AtomicU32::new(0) }
    }

    /// Whether one more request fits in the window that `now` is in.
    pub(crate) fn admit(&self, now: Instant) -> bool {
        let window = now.saturating_duration_since(self.base).as_secs();
        let current = self.window.load(Ordering::Acquire);
        if window > current
            && self.window.compare_exchange(current, window, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            self.count.store(0, Ordering::Release);
        }
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .is_ok()
    }
}

/// What the filters see of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestHead<'a> {
    pub(crate) authority: &'a str,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    /// The destination's SPIFFE ID when already known (inbound: this proxy's).
    pub(crate) destination_identity: &'a str,
}

/// Whether `head` matches every filter that `filter` sets.
pub(crate) fn matches(filter: &Filter, head: &RequestHead<'_>) -> bool {
    (filter.authority.is_empty() || filter.authority.eq_ignore_ascii_case(head.authority))
        && (filter.path_prefix.is_empty() || head.path.starts_with(filter.path_prefix.as_str()))
        && (filter.method.is_empty() || filter.method.eq_ignore_ascii_case(head.method))
        && (filter.to.is_empty() || to_matches(&filter.to, head))
}

/// `to` (`workload/NAME`, `deploy/NAME` or `NAME`) names the destination: the
/// service account of its identity, or the first DNS label of the authority.
fn to_matches(to: &str, head: &RequestHead<'_>) -> bool {
    let name = to.rsplit_once('/').map_or(to, |(_, name)| name);
    let sa = head.destination_identity.rsplit_once("/sa/").map(|(_, sa)| sa);
    let host = head.authority.split([':', '.']).next().unwrap_or("");
    sa == Some(name) || host.eq_ignore_ascii_case(name)
}

/// What the data path learned while serving a tapped request.
#[derive(Debug, Default)]
pub(crate) struct Served {
    pub(crate) route: String,
    pub(crate) cluster: String,
    /// The upstream endpoint (outbound).
    pub(crate) upstream: Option<SocketAddr>,
    /// The identity the upstream endpoint must present (outbound mTLS).
    pub(crate) upstream_identity: String,
    /// The upstream connection is mTLS.
    pub(crate) upstream_tls: bool,
}

/// A request some sessions observe.
#[derive(Debug)]
pub(crate) struct Tapped {
    sessions: Vec<Arc<Session>>,
    event: TapEvent,
    direction: Direction,
    started: Instant,
    /// Filled in by routing and forwarding.
    pub(crate) served: Served,
}

/// Both ends of a request as the proxy sees them before routing.
#[derive(Debug, Clone)]
pub(crate) struct Ends {
    pub(crate) direction: Direction,
    pub(crate) source: Peer,
    pub(crate) destination: Peer,
    pub(crate) tls: bool,
}

impl Tap {
    /// No sessions.
    pub fn new() -> Arc<Tap> {
        Arc::new(Tap::default())
    }

    /// Whether anyone taps: the data path's only cost otherwise.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed) != 0
    }

    /// The number of open sessions.
    pub fn sessions(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Opens a session for `request`; its events come out of the stream,
    /// which ends at the session's duration. Dropping it closes the session.
    pub fn open(self: &Arc<Self>, request: &ObserveRequest) -> SessionStream {
        let rps = match request.max_events_per_second {
            0 => DEFAULT_MAX_RPS,
            n => n.min(MAX_RPS),
        };
        let duration = request
            .max_duration
            .and_then(from_pb_duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_DURATION)
            .min(MAX_DURATION);
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        let session = Arc::new(Session {
            id,
            filter: request.filter.clone().unwrap_or_default(),
            tx,
            limiter: RateLimiter::new(rps),
            dropped: AtomicU64::new(0),
        });
        self.sessions.rcu(|current| {
            let mut next = Vec::clone(current);
            next.push(Arc::clone(&session));
            next
        });
        self.active.fetch_add(1, Ordering::Relaxed);
        tracing::info!(session = id, rps, ?duration, "tap session opened");
        SessionStream {
            rx,
            deadline: Box::pin(tokio::time::sleep(duration)),
            guard: SessionGuard { tap: Arc::clone(self), id },
        }
    }

    fn close(&self, id: u64) {
        let previous = self
            .sessions
            .rcu(|current| current.iter().filter(|s| s.id != id).cloned().collect::<Vec<Arc<Session>>>());
        if let Some(session) = previous.iter().find(|s| s.id == id) {
            self.active.fetch_sub(1, Ordering::Relaxed);
            let dropped = session.dropped.load(Ordering::Relaxed);
            tracing::info!(session = id, dropped, "tap session closed");
        }
    }

    /// Starts tapping a request, if a session wants it: sends the `REQUEST`
    /// event and returns what [`Tapped::finish`] completes.
    pub(crate) fn begin(&self, ends: Ends, head: &RequestHead<'_>, request_bytes: u64) -> Option<Tapped> {
        let now = Instant::now();
        let sessions: Vec<Arc<Session>> = self
            .sessions
            .load()
            .iter()
            .filter(|s| !s.tx.is_closed() && matches(&s.filter, head) && s.limiter.admit(now))
            .cloned()
            .collect();
        if sessions.is_empty() {
            return None;
        }
        let event = TapEvent {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            direction: match ends.direction {
                Direction::Inbound => WireDirection::Inbound,
                Direction::Outbound => WireDirection::Outbound,
            } as i32,
            source: Some(ends.source),
            destination: Some(ends.destination),
            tls: ends.tls,
            authority: head.authority.to_owned(),
            method: head.method.to_owned(),
            path: head.path.to_owned(),
            request_bytes,
            start: Some(timestamp(SystemTime::now())),
            kind: EventKind::Request as i32,
            ..TapEvent::default()
        };
        let tapped =
            Tapped { sessions, event, direction: ends.direction, started: now, served: Served::default() };
        tapped.send(&tapped.event);
        Some(tapped)
    }
}

impl Tapped {
    fn send(&self, event: &TapEvent) {
        for session in &self.sessions {
            if session.tx.try_send(event.clone()).is_err() {
                session.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends the `RESPONSE` event: status, latency, bytes, route and cluster.
    pub(crate) fn finish(mut self, status: u16, response_bytes: u64) {
        let latency = self.started.elapsed();
        let served = std::mem::take(&mut self.served);
        let mut event = std::mem::take(&mut self.event);
        event.kind = EventKind::Response as i32;
        event.status = u32::from(status);
        event.latency = Some(pb_duration(latency));
        event.response_bytes = response_bytes;
        event.route = served.route;
        event.cluster = served.cluster;
        if self.direction == Direction::Outbound {
            if let Some(addr) = served.upstream {
                let destination = event.destination.get_or_insert_with(Peer::default);
                destination.address = addr.to_string();
                destination.identity = served.upstream_identity;
            }
            event.tls = served.upstream_tls;
        }
        self.send(&event);
    }
}

/// A protobuf `Duration` of `d` (saturating).
pub fn pb_duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// `d` as a std `Duration`; `None` when negative or malformed.
pub fn from_pb_duration(d: PbDuration) -> Option<Duration> {
    let seconds = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    Some(Duration::new(seconds, nanos))
}

fn timestamp(t: SystemTime) -> Timestamp {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// Removes its session when dropped.
#[derive(Debug)]
struct SessionGuard {
    tap: Arc<Tap>,
    id: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.tap.close(self.id);
    }
}

/// A session's events, until its duration is over.
#[derive(Debug)]
pub struct SessionStream {
    rx: mpsc::Receiver<TapEvent>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    guard: SessionGuard,
}

impl SessionStream {
    /// The session's id.
    pub fn id(&self) -> u64 {
        self.guard.id
    }
}

impl Stream for SessionStream {
    type Item = TapEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TapEvent>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use futures::StreamExt;

    fn head<'a>(authority: &'a str, method: &'a str, path: &'a str) -> RequestHead<'a> {
        RequestHead { authority, method, path, destination_identity: "spiffe://td/ns/payments/sa/payment-v1" }
    }

    fn filter(authority: &str, path_prefix: &str, method: &str, to: &str) -> Filter {
        Filter {
            authority: authority.into(),
            path_prefix: path_prefix.into(),
            method: method.into(),
            to: to.into(),
        }
    }

    fn ends() -> Ends {
        Ends {
            direction: Direction::Inbound,
            source: Peer { address: "127.0.10.2:5000".into(), identity: "spiffe://td/ns/a/sa/b".into() },
            destination: Peer { address: "127.0.10.3:4143".into(), identity: String::new() },
            tls: true,
        }
    }

    #[test]
    fn filters_match_every_field_they_set() {
        let h = head("payment:8080", "GET", "/pay/42");
        assert!(matches(&Filter::default(), &h));
        assert!(matches(&filter("PAYMENT:8080", "", "", ""), &h));
        assert!(!matches(&filter("payment", "", "", ""), &h));
        assert!(matches(&filter("", "/pay", "", ""), &h));
        assert!(!matches(&filter("", "/refund", "", ""), &h));
        assert!(matches(&filter("", "", "get", ""), &h));
        assert!(!matches(&filter("", "", "POST", ""), &h));
        assert!(matches(&filter("", "/pay", "GET", "workload/payment-v1"), &h));
        assert!(matches(&filter("", "", "", "payment"), &h), "authority's first label");
        assert!(!matches(&filter("", "", "", "deploy/checkout"), &h));
        assert!(!matches(&filter("", "/pay", "POST", ""), &h), "all filters must hold");
    }

    #[test]
    fn rate_limit_admits_at_most_max_per_second() {
        let t0 = Instant::now();
        let limiter = RateLimiter::starting(3, t0);
        let admitted = (0..10).filter(|_| limiter.admit(t0)).count();
        assert_eq!(admitted, 3);
        assert!(!limiter.admit(t0 + Duration::from_millis(999)));
        assert!(limiter.admit(t0 + Duration::from_secs(1)));
        let zero = RateLimiter::new(0);
        assert!(!zero.admit(t0));
    }

    #[tokio::test]
    async fn a_session_gets_request_and_response_events_then_ends() {
        let tap = Tap::new();
        assert!(!tap.is_active());
        let req = ObserveRequest {
            filter: Some(filter("", "/pay", "", "")),
            max_duration: Some(PbDuration { seconds: 0, nanos: 300_000_000 }),
            ..Default::default()
        };
        let mut stream = tap.open(&req);
        assert!(tap.is_active());
        assert!(tap.begin(ends(), &head("payment", "GET", "/other"), 0).is_none());
        let mut tapped = tap.begin(ends(), &head("payment", "GET", "/pay"), 7).unwrap();
        tapped.served.route = "r".into();
        tapped.served.cluster = "c".into();
        tapped.finish(200, 11);
        let req_event = stream.next().await.unwrap();
        assert_eq!(req_event.kind, EventKind::Request as i32);
        assert_eq!(req_event.path, "/pay");
        assert_eq!(req_event.request_bytes, 7);
        assert!(req_event.tls);
        let rsp = stream.next().await.unwrap();
        assert_eq!(rsp.kind, EventKind::Response as i32);
        assert_eq!((rsp.id, rsp.status, rsp.response_bytes), (req_event.id, 200, 11));
        assert_eq!((rsp.route.as_str(), rsp.cluster.as_str()), ("r", "c"));
        assert_eq!(rsp.source.unwrap().identity, "spiffe://td/ns/a/sa/b");
        // The session ends at its duration, and then no one taps.
        let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap();
        assert!(end.is_none());
        drop(stream);
        assert!(!tap.is_active());
    }

    #[tokio::test]
    async fn sessions_are_rate_limited_and_never_block() {
        let tap = Tap::new();
        let req = ObserveRequest { max_events_per_second: 2, ..Default::default() };
        let mut stream = tap.open(&req);
        let tapped = (0..5).filter_map(|_| tap.begin(ends(), &head("a", "GET", "/"), 0)).count();
        assert_eq!(tapped, 2);
        // A full queue drops events rather than waiting.
        let flood = ObserveRequest { max_events_per_second: MAX_RPS, ..Default::default() };
        let _flooded = tap.open(&flood);
        for _ in 0..(QUEUE + 10) {
            if let Some(t) = tap.begin(ends(), &head("a", "GET", "/"), 0) {
                t.finish(200, 0);
            }
        }
        assert!(stream.next().await.is_some());
        drop(stream);
        assert_eq!(tap.sessions(), 1);
    }
}
