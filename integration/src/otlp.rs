//! An OTLP/gRPC trace receiver on loopback, standing in for an OpenTelemetry collector:
//! it keeps every span it is sent (trace and span ids as lower-case hex, the parent, kind,
//! name, the resource's `service.name`, attributes as strings), for tests to wait on.
//!
//! [`traced_control`] runs a control plane with `--trace-collector` for a [`LocalMesh`]:
//! the same manifests, CA and security, so the mesh's proxies can use either.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use weft_control::server::{ControlConfig, IdentityConfig, RunningControl, SourceConfig};
use weft_control::translate::{MeshOptions, TraceOptions};

use crate::LocalMesh;

/// A span as the receiver got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits; empty for a root span.
    pub parent_span_id: String,
    /// `SERVER`, `CLIENT`, `INTERNAL`, ...
    pub kind: String,
    /// The span's name.
    pub name: String,
    /// The resource's `service.name`.
    pub service: String,
    /// The span's attributes, values printed as strings.
    pub attributes: BTreeMap<String, String>,
    /// The span's status says error.
    pub error: bool,
}

impl ReceivedSpan {
    /// An attribute's value.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: watch::Receiver<Vec<ReceivedSpan>>,
    server: JoinHandle<()>,
}

#[derive(Debug)]
struct Collector {
    spans: watch::Sender<Vec<ReceivedSpan>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(value_string)
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                let kind = SpanKind::try_from(span.kind).map_or("UNKNOWN", |k| k.as_str_name());
                received.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: kind.trim_start_matches("SPAN_KIND_").to_owned(),
                    name: span.name,
                    service: service.clone(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), kv.value.as_ref().map(value_string).unwrap_or_default()))
                        .collect(),
                    error: span.status.is_some_and(|s| s.code == StatusCode::Error as i32),
                });
            }
        }
        self.spans.send_modify(|all| all.extend(received));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn value_string(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl OtlpReceiver {
    /// Serves OTLP/gRPC (plaintext HTTP/2) on `ip`, on a free port.
    pub async fn start(ip: IpAddr) -> anyhow::Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, spans) = watch::channel(Vec::new());
        let service = TraceServiceServer::new(Collector { spans: tx });
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "OTLP receiver stopped");
            }
        });
        Ok(OtlpReceiver { addr, spans, server })
    }

    /// Where it listens: the `--trace-collector`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.borrow().clone()
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans.borrow().iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    }

    /// Waits until `find` picks something out of the spans received, and returns it.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        find: impl Fn(&[ReceivedSpan]) -> Option<T>,
    ) -> anyhow::Result<T> {
        crate::eventually(what, || async {
            let spans = self.spans.borrow();
            match find(&spans) {
                Some(found) => Ok(Some(found)),
                None => Err(anyhow::anyhow!("{} spans so far: {:#?}", spans.len(), last(&spans, 8))),
            }
        })
        .await
    }
}

fn last(spans: &[ReceivedSpan], n: usize) -> &[ReceivedSpan] {
    &spans[spans.len().saturating_sub(n)..]
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// How often the traced control plane re-reads the mesh's manifest directory.
const RELOAD_INTERVAL: Duration = Duration::from_millis(100);

/// A second control plane for `mesh` with tracing on: the same manifest directory, CA
/// directory and security, in-process on `.251` of the mesh's subnet (ports picked by the
/// system). Proxies pointed at its `xds_addr` get the tracing config; it exports its own
/// push spans to the same collector.
pub async fn traced_control(mesh: &LocalMesh, tracing: TraceOptions) -> anyhow::Result<RunningControl> {
    let security = mesh.security();
    let options = MeshOptions {
        mtls: security.mtls,
        authz: security.authz,
        trust_domain: security.trust_domain.clone(),
        tracing: Some(tracing),
    };
    let config = ControlConfig {
        source: SourceConfig::Manifests(mesh.dir.path().to_path_buf()),
        xds_addr: mesh.subnet.addr(251, 0),
        admin_addr: mesh.subnet.addr(251, 0),
        reload_interval: RELOAD_INTERVAL,
        mesh: options,
        identity: security
            .mtls
            .then(|| IdentityConfig { ca_dir: mesh.ca_dir(), cert_lifetime: security.cert_lifetime }),
    };
    Ok(weft_control::server::start(config).await?)
}
