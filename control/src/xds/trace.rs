//! The control plane's own spans: one `xds.push` span per response sent to a proxy, from
//! the moment it is sent until the proxy ACKs it (status OK), NACKs it (status error, with
//! the proxy's `error_detail`), or a newer push of the same type replaces it, or the stream
//! ends. Attributes: node id, type (`cds`, `lds`, ...), type URL, version, nonce, resource
//! count, bytes. Exported over OTLP/gRPC (service `weft-control`) in batches, in the
//! background; a full queue drops spans rather than slow a push.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use tokio::sync::mpsc;

use super::registry::TypeReport;

/// The service name of the control plane's spans.
pub const SERVICE_NAME: &str = "weft-control";
/// Spans waiting for export before new ones are dropped.
const QUEUE: usize = 4096;
/// The most spans in one export.
const MAX_BATCH: usize = 512;
/// How long a span may wait for others to join its batch.
const BATCH_DELAY: Duration = Duration::from_millis(200);
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where push spans go: a queue drained by an exporter task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PushTracer {
    tx: mpsc::Sender<Span>,
}

impl PushTracer {
    /// Starts the exporter to the OTLP/gRPC collector at `collector` (plaintext). Must be
    /// called within a tokio runtime.
    pub fn spawn(collector: SocketAddr) -> PushTracer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(export(rx, collector));
        PushTracer { tx }
    }

    /// The push spans of one proxy's stream.
    pub(crate) fn stream(&self, node: &str) -> PushSpans {
        PushSpans { tracer: self.clone(), node: Arc::from(node), open: HashMap::new() }
    }

    fn send(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            tracing::debug!("push span queue full: dropping a span");
        }
    }
}

/// A push not yet ACKed or NACKed.
#[derive(Debug)]
struct OpenPush {
    span: Span,
    nonce: String,
}

/// The open pushes of one stream, by short type name.
#[derive(Debug)]
pub(crate) struct PushSpans {
    tracer: PushTracer,
    node: Arc<str>,
    open: HashMap<String, OpenPush>,
}

impl PushSpans {
    /// Compares a stream's per-type state before and after it handled a message (and sent
    /// `bytes` per type): ends the pushes just ACKed or NACKed, starts the ones just sent.
    pub(crate) fn observe(
        &mut self,
        before: &BTreeMap<&'static str, TypeReport>,
        after: &BTreeMap<&'static str, TypeReport>,
        bytes: &HashMap<&'static str, usize>,
    ) {
        let empty = TypeReport::default();
        for (short, now) in after {
            let was = before.get(short).unwrap_or(&empty);
            if now.nacks > was.nacks {
                let detail = now.last_nack.as_ref().map(|n| n.detail.clone()).unwrap_or_default();
                self.end(short, "nack", Some(detail));
            } else if now.acks > was.acks {
                self.end(short, "ack", None);
            }
            if now.sent_nonce != was.sent_nonce
                && let Some(nonce) = &now.sent_nonce
            {
                self.end(short, "superseded", None);
                let size = bytes.get(short).copied().unwrap_or(0);
                self.start(short, now, nonce, size);
            }
        }
    }

    fn start(&mut self, short: &str, report: &TypeReport, nonce: &str, bytes: usize) {
        let attributes = vec![
            string("xds.node", &self.node),
            string("xds.type", short),
            string("xds.type_url", type_url(short)),
            string("xds.version", report.sent_version.as_deref().unwrap_or("")),
            string("xds.nonce", nonce),
            int("xds.resources", report.resources),
            int("xds.bytes", bytes),
        ];
        let span = Span {
            trace_id: random_id::<16>(),
            span_id: random_id::<8>(),
            flags: 1,
            name: "xds.push".into(),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: unix_nanos(),
            attributes,
            ..Default::default()
        };
        self.open.insert(short.to_owned(), OpenPush { span, nonce: nonce.to_owned() });
    }

    /// Ends the open push of `short` with `outcome`; `Some(detail)` marks a NACK.
    fn end(&mut self, short: &str, outcome: &str, nack: Option<String>) {
        let Some(OpenPush { mut span, nonce }) = self.open.remove(short) else { return };
        span.end_time_unix_nano = unix_nanos().max(span.start_time_unix_nano);
        span.attributes.push(string("xds.outcome", outcome));
        if let Some(detail) = nack {
            span.status = Some(Status {
                code: StatusCode::Error as i32,
                message: format!("NACK of nonce {nonce}: {detail}"),
            });
        }
        self.tracer.send(span);
    }
}

impl Drop for PushSpans {
    /// The stream ended: pushes never answered end as `disconnected`.
    fn drop(&mut self) {
        let open: Vec<String> = self.open.keys().cloned().collect();
        for short in open {
            self.end(&short, "disconnected", None);
        }
    }
}

fn type_url(short: &str) -> &'static str {
    use weft_xds_protos::type_url::*;
    match short {
        "cds" => CLUSTER,
        "eds" => ENDPOINT,
        "lds" => LISTENER,
        "rds" => ROUTE,
        "sds" => SECRET,
        _ => "",
    }
}

fn random_id<const N: usize>() -> Vec<u8> {
    loop {
        let id: [u8; N] = rand::random();
        if id != [0; N] {
            return id.to_vec();
        }
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn string(key: &str, value: &str) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.to_owned()))
}

fn int(key: &str, value: usize) -> KeyValue {
    attribute(key, any_value::Value::IntValue(i64::try_from(value).unwrap_or(i64::MAX)))
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

/// Batches spans and exports them until every tracer is gone.
async fn export(mut rx: mpsc::Receiver<Span>, collector: SocketAddr) {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{collector}")) else {
        tracing::warn!(%collector, "trace collector is not a valid address; exporting nothing");
        return;
    };
    let mut client = TraceServiceClient::new(endpoint.connect_timeout(Duration::from_secs(1)).connect_lazy());
    let resource = Resource { attributes: vec![string("service.name", SERVICE_NAME)], ..Default::default() };
    let scope = InstrumentationScope {
        name: SERVICE_NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    let mut failing = false;
    let mut open = true;
    while open {
        let Some(first) = rx.recv().await else { break };
        let mut spans = vec![first];
        let deadline = tokio::time::sleep(BATCH_DELAY);
        tokio::pin!(deadline);
        while spans.len() < MAX_BATCH {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(span) => spans.push(span),
                    None => { open = false; break; }
                },
                () = &mut deadline => break,
            }
        }
        let count = spans.len();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans { scope: Some(scope.clone()), spans, ..Default::default() }],
                ..Default::default()
            }],
        };
        let error = match tokio::time::timeout(EXPORT_TIMEOUT, client.export(request)).await {
            Ok(Ok(_)) => None,
            Ok(Err(status)) => Some(status.to_string()),
            Err(_) => Some(format!("no answer within {EXPORT_TIMEOUT:?}")),
        };
        // Warn when exports start failing, not for every batch while the collector is away.
        let failed = error.is_some();
        match (error, failing) {
            (None, false) => tracing::trace!(spans = count, "push spans exported"),
            (None, true) => tracing::info!(%collector, "trace export works again"),
            (Some(error), false) => {
                tracing::warn!(%collector, spans = count, %error, "trace export failed; dropping spans")
            }
            (Some(error), true) => tracing::debug!(%collector, spans = count, %error, "trace export failed"),
        }
        failing = failed;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::xds::registry::NackReport;

    fn sent(version: &str, nonce: &str, acks: u64, nacks: u64) -> TypeReport {
        TypeReport {
            sent_version: Some(version.into()),
            sent_nonce: Some(nonce.into()),
            resources: 3,
            acks,
            nacks,
            last_nack: (nacks > 0).then(|| NackReport {
                version: version.into(),
                nonce: nonce.into(),
                detail: "bad cluster".into(),
                resources: vec![],
                at: 0,
            }),
            ..Default::default()
        }
    }

    fn types(t: TypeReport) -> BTreeMap<&'static str, TypeReport> {
        BTreeMap::from([("cds", t)])
    }

    #[tokio::test]
    async fn a_push_span_ends_on_ack_and_a_nacked_one_is_an_error() {
        let (tx, mut rx) = mpsc::channel(16);
        let tracer = PushTracer { tx };
        let mut spans = tracer.stream("web");
        let bytes = HashMap::from([("cds", 120)]);
        spans.observe(&BTreeMap::new(), &types(sent("1", "a", 0, 0)), &bytes);
        assert!(rx.try_recv().is_err(), "open until the proxy answers");
        spans.observe(&types(sent("1", "a", 0, 0)), &types(sent("1", "a", 1, 0)), &HashMap::new());
        let acked = rx.try_recv().unwrap();
        let attr = |s: &Span, k: &str| {
            s.attributes.iter().find(|kv| kv.key == k).and_then(|kv| kv.value.clone()).and_then(|v| v.value)
        };
        assert_eq!(attr(&acked, "xds.outcome"), Some(any_value::Value::StringValue("ack".into())));
        assert_eq!(attr(&acked, "xds.node"), Some(any_value::Value::StringValue("web".into())));
        assert_eq!(attr(&acked, "xds.bytes"), Some(any_value::Value::IntValue(120)));
        assert!(acked.status.is_none());

        spans.observe(&types(sent("1", "a", 1, 0)), &types(sent("2", "b", 1, 0)), &bytes);
        spans.observe(&types(sent("2", "b", 1, 0)), &types(sent("2", "b", 1, 1)), &HashMap::new());
        let nacked = rx.try_recv().unwrap();
        let status = nacked.status.unwrap();
        assert_eq!(status.code, StatusCode::Error as i32);
        assert!(status.message.contains("bad cluster") && status.message.contains('b'), "{status:?}");

        spans.observe(&types(sent("2", "b", 1, 1)), &types(sent("3", "c", 1, 1)), &bytes);
        drop(spans);
        let left = rx.try_recv().unwrap();
        assert_eq!(attr(&left, "xds.outcome"), Some(any_value::Value::StringValue("disconnected".into())));
    }
}
