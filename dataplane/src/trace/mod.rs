//! Distributed tracing of HTTP hops, as Envoy's OpenTelemetry tracer does it from the same
//! xDS (`HttpConnectionManager.tracing`):
//!
//! - the parent comes from `traceparent` (W3C) or B3 (`b3`, or `x-b3-*`); a malformed header
//!   is ignored and the request starts a new trace;
//! - a parent's sampling decision is followed; without one, `random_sampling` decides;
//! - each request through a traced connection manager is one span: SERVER on the inbound
//!   listener, CLIENT on the others, ended when the response headers are ready (error
//!   status on 5xx);
//! - the forwarded request carries a `traceparent` naming that span (and B3 when the request
//!   had B3), so the next hop's span is its child; unsampled requests carry the decision on;
//! - sampled spans are batched and exported over OTLP/gRPC to the collector cluster
//!   ([`export`]).
//!
//! A chain without tracing costs one branch per request and allocates nothing.
//!
//! Why not opentelemetry_sdk: spans here have a fixed shape, start and end in one function,
//! and need none of the SDK's context propagation machinery; building the OTLP protos
//! directly keeps the hot path to a few header writes and one channel send, and reuses the
//! tonic client already in the proxy.

pub mod context;
pub mod export;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::Request;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::SpanKind, status::StatusCode};

use crate::config::HttpTracing;
use crate::metrics::Direction;
pub use export::{Exporter, Exporters};

/// What a traced connection manager needs per request: its config, its span kind, and where
/// its spans go.
#[derive(Debug)]
pub struct HttpTracer {
    config: Arc<HttpTracing>,
    service: Arc<str>,
    kind: SpanKind,
    exporter: Arc<Exporter>,
}

/// What the proxy knows of the downstream end, for the span's attributes.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// The connection is TLS.
    pub tls: bool,
    /// The client's SPIFFE ID (mTLS).
    pub identity: Option<&'a str>,
}

/// A sampled request's span, until its response headers are ready.
#[derive(Debug)]
pub struct ActiveSpan {
    span: Span,
    started: Instant,
    start_time: SystemTime,
    service: Arc<str>,
    exporter: Arc<Exporter>,
}

impl HttpTracer {
    /// A tracer for a connection manager of a listener in `direction`, exporting through `exporter`.
    pub fn new(config: Arc<HttpTracing>, direction: Direction, exporter: Arc<Exporter>) -> HttpTracer {
        let kind = match direction {
            Direction::Inbound => SpanKind::Server,
            Direction::Outbound => SpanKind::Client,
        };
        let service = Arc::from(config.service_name.as_str());
        HttpTracer { config, service, kind, exporter }
    }

    /// The tracing config.
    pub fn config(&self) -> &HttpTracing {
        &self.config
    }

    /// Decides whether `req` is sampled, rewrites its trace headers so the next hop is this
    /// hop's child, and starts its span when sampled.
    pub fn start<B>(&self, req: &mut Request<B>, peer: Peer<'_>) -> Option<ActiveSpan> {
        let (parent, b3) = context::extract(req.headers());
        let sampled = match parent.and_then(|p| p.sampled) {
            Some(decided) => decided,
            None => sample(self.config.sampling_percent),
        };
        let trace_id = parent.map_or_else(new_trace_id, |p| p.trace_id);
        let span_id = new_span_id();
        let parent_span = parent.map(|p| p.span_id);
        context::inject(req.headers_mut(), trace_id, span_id, sampled, parent_span, b3);
        if !sampled {
            return None;
        }
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut attributes = vec![
            string("http.method", req.method().as_str()),
            string("http.target", target),
            string("http.url", &format!("{}://{authority}{target}", if peer.tls { "https" } else { "http" })),
            string("http.authority", authority),
            string("http.protocol", &format!("{:?}", req.version())),
            bool_attr("weft.tls", peer.tls),
            string("weft.proxy", &self.config.service_name),
        ];
        if let Some(identity) = peer.identity {
            attributes.push(string("weft.peer.identity", identity));
        }
        let span = Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent_span.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 1,
            name: format!(
                "{} {}",
                if self.kind == SpanKind::Server { "ingress" } else { "egress" },
                authority
            ),
            kind: self.kind as i32,
            attributes,
            ..Default::default()
        };
        Some(ActiveSpan {
            span,
            started: Instant::now(),
            start_time: SystemTime::now(),
            service: Arc::clone(&self.service),
            exporter: Arc::clone(&self.exporter),
        })
    }
}

impl ActiveSpan {
    /// Ends the span with the response's status (an error on 5xx) and the cluster that
    /// answered, and hands it to the exporter.
    pub fn end(mut self, status: u16, upstream_cluster: Option<&str>) {
        let start = unix_nanos(self.start_time);
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.span.start_time_unix_nano = start;
        self.span.end_time_unix_nano = start.saturating_add(elapsed);
        self.span.attributes.push(int("http.status_code", i64::from(status)));
        if let Some(cluster) = upstream_cluster {
            self.span.attributes.push(string("upstream_cluster", cluster));
        }
        if status >= 500 {
            self.span.status =
                Some(Status { code: StatusCode::Error as i32, message: format!("HTTP {status}") });
        }
        self.exporter.send(self.service, self.span);
    }
}

/// Whether a request without a parent decision starts a sampled trace.
fn sample(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && rand::random::<f64>() * 100.0 < percent)
}

fn new_trace_id() -> [u8; 16] {
    loop {
        let id: [u8; 16] = rand::random();
        if id != [0; 16] {
            return id;
        }
    }
}

fn new_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A string attribute.
pub fn string(key: &str, value: &str) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.to_owned()))
}

fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value))
}

fn bool_attr(key: &str, value: bool) -> KeyValue {
    attribute(key, any_value::Value::BoolValue(value))
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::HttpTracing;

    fn tracer(
        percent: f64,
        direction: Direction,
    ) -> (HttpTracer, tokio::sync::mpsc::Receiver<export::Queued>) {
        let (exporter, rx) = Exporter::detached();
        let config = Arc::new(HttpTracing {
            collector_cluster: "c".into(),
            service_name: "web".into(),
            sampling_percent: percent,
        });
        (HttpTracer::new(config, direction, exporter), rx)
    }

    #[test]
    fn a_sampled_parent_is_followed_and_the_forwarded_request_names_this_span() {
        let (tracer, mut rx) = tracer(0.0, Direction::Inbound);
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let req = Request::builder().uri("/x?y=1").header("host", "api:80").header("traceparent", parent);
        let mut req = req.body(()).unwrap();
        let span =
            tracer.start(&mut req, Peer { tls: true, identity: Some("spiffe://t/ns/a/sa/b") }).unwrap();
        span.end(503, Some("inbound|80||"));
        let (service, span) = rx.try_recv().unwrap();
        assert_eq!(&*service, "web");
        assert_eq!(context::hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context::hex(&span.parent_span_id), "00f067aa0ba902b7");
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(span.status.unwrap().code, StatusCode::Error as i32);
        let sent = context::parse_traceparent(req.headers()["traceparent"].as_bytes()).unwrap();
        assert_eq!(sent.span_id.to_vec(), span.span_id);
        assert_eq!(sent.sampled, Some(true));
    }

    #[test]
    fn an_unsampled_request_still_carries_the_trace_on_but_exports_nothing() {
        let (tracer, mut rx) = tracer(100.0, Direction::Outbound);
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let mut req = Request::builder().uri("/").header("traceparent", parent).body(()).unwrap();
        assert!(tracer.start(&mut req, Peer { tls: false, identity: None }).is_none());
        assert!(rx.try_recv().is_err());
        let sent = context::parse_traceparent(req.headers()["traceparent"].as_bytes()).unwrap();
        assert_eq!(context::hex(&sent.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sent.sampled, Some(false));
    }

    #[test]
    fn without_a_parent_the_rate_decides_and_a_root_span_has_no_parent() {
        let (never, _rx) = tracer(0.0, Direction::Outbound);
        let mut req = Request::builder().uri("/").body(()).unwrap();
        assert!(never.start(&mut req, Peer { tls: false, identity: None }).is_none());
        let (always, mut rx) = tracer(100.0, Direction::Outbound);
        let mut req = Request::builder().uri("http://api:80/").body(()).unwrap();
        always.start(&mut req, Peer { tls: false, identity: None }).unwrap().end(200, None);
        let (_, span) = rx.try_recv().unwrap();
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert!(span.status.is_none());
    }
}
