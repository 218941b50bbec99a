//! Sending spans to an OTLP/gRPC collector: a bounded queue per collector cluster, drained
//! by a task that batches (up to [`MAX_BATCH`] spans or [`BATCH_DELAY`]) and calls
//! `TraceService/Export`. A full queue drops spans (counted and logged) rather than slow a
//! request down; a failed export is logged and dropped, as Envoy's tracer does.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::sync::{mpsc, watch};
use tonic::transport::{Channel, Endpoint};

use crate::config::{ChainKind, Config, Discovery};

/// Spans waiting for export, per collector, before new ones are dropped.
const QUEUE: usize = 4096;
/// The most spans in one export.
pub const MAX_BATCH: usize = 512;
/// How long a span may wait for others to join its batch.
pub const BATCH_DELAY: Duration = Duration::from_millis(200);
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// A finished span and the service that made it.
pub type Queued = (Arc<str>, Span);

/// The queue to one collector cluster.
#[derive(Debug)]
pub struct Exporter {
    tx: mpsc::Sender<Queued>,
    target: watch::Sender<Option<SocketAddr>>,
    dropped: AtomicU64,
}

impl Exporter {
    /// An exporter whose task sends to the address `target` holds (spans are dropped while
    /// it holds none). Must be called within a tokio runtime.
    pub fn spawn(cluster: &str) -> Arc<Exporter> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (target, target_rx) = watch::channel(None);
        let cluster = cluster.to_owned();
        tokio::spawn(async move { run(rx, target_rx, &cluster).await });
        Arc::new(Exporter { tx, target, dropped: AtomicU64::new(0) })
    }

    /// An exporter with no task: the caller reads the queue (tests).
    pub fn detached() -> (Arc<Exporter>, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let target = watch::channel(None).0;
        (Arc::new(Exporter { tx, target, dropped: AtomicU64::new(0) }), rx)
    }

    /// Queues a span; drops it if the queue is full.
    pub fn send(&self, service: Arc<str>, span: Span) {
        if self.tx.try_send((service, span)).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "trace export queue full: dropping spans");
            }
        }
    }

    /// Spans dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn retarget(&self, addr: Option<SocketAddr>) {
        self.target.send_if_modified(|current| {
            let changed = *current != addr;
            *current = addr;
            changed
        });
    }
}

/// One exporter per collector cluster that some connection manager names, kept across
/// config updates (so kept chains keep theirs), each pointed at its cluster's current address.
#[derive(Debug, Default)]
pub struct Exporters {
    by_cluster: HashMap<String, Arc<Exporter>>,
}

impl Exporters {
    /// Makes sure every collector cluster `config`'s connection managers name has an
    /// exporter, pointed at that cluster's first endpoint (none while the cluster is unknown).
    pub fn update(&mut self, config: &Config) {
        let listeners = config.listeners.values();
        let chains = listeners.flat_map(|l| l.chains.iter().chain(l.default_chain.as_ref()));
        for chain in chains {
            let ChainKind::Http(manager) = &chain.kind else { continue };
            let Some(tracing) = &manager.tracing else { continue };
            let name = &tracing.collector_cluster;
            let exporter = self.by_cluster.entry(name.clone()).or_insert_with(|| Exporter::spawn(name));
            exporter.retarget(collector_addr(config, name));
        }
    }

    /// The exporter of a collector cluster (after [`Exporters::update`]).
    pub fn get(&self, cluster: &str) -> Option<&Arc<Exporter>> {
        self.by_cluster.get(cluster)
    }
}

/// The first endpoint of a cluster, static or from EDS.
fn collector_addr(config: &Config, cluster: &str) -> Option<SocketAddr> {
    let spec = config.clusters.get(cluster)?;
    let endpoints = match &spec.discovery {
        Discovery::Static(endpoints) => Some(endpoints),
        Discovery::Eds => config.endpoints.get(cluster),
    };
    endpoints.and_then(|e| e.endpoints.first()).map(|e| e.addr)
}

/// Batches and exports until every sender is gone, then flushes what is left.
async fn run(mut rx: mpsc::Receiver<Queued>, target: watch::Receiver<Option<SocketAddr>>, cluster: &str) {
    let mut client: Option<(SocketAddr, TraceServiceClient<Channel>)> = None;
    let mut failing = false;
    let mut open = true;
    while open {
        let Some(first) = rx.recv().await else { break };
        let mut batch = vec![first];
        let deadline = tokio::time::sleep(BATCH_DELAY);
        tokio::pin!(deadline);
        while batch.len() < MAX_BATCH {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(span) => batch.push(span),
                    None => { open = false; break; }
                },
                () = &mut deadline => break,
            }
        }
        let Some(addr) = *target.borrow() else {
            tracing::debug!(
                cluster,
                spans = batch.len(),
                "trace collector cluster has no endpoint: dropping spans"
            );
            continue;
        };
        let client = match &mut client {
            Some((current, c)) if *current == addr => c,
            slot => {
                let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else { continue };
                let channel = endpoint.connect_timeout(Duration::from_secs(1)).connect_lazy();
                &mut slot.insert((addr, TraceServiceClient::new(channel))).1
            }
        };
        let spans = batch.len();
        let request = tonic::Request::new(request(batch, "weft-proxy"));
        let error = match tokio::time::timeout(EXPORT_TIMEOUT, client.export(request)).await {
            Ok(Ok(_)) => None,
            Ok(Err(status)) => Some(status.to_string()),
            Err(_) => Some(format!("no answer within {EXPORT_TIMEOUT:?}")),
        };
        // Warn when exports start failing, not for every batch while the collector is away.
        let failed = error.is_some();
        match (error, failing) {
            (None, false) => tracing::trace!(cluster, spans, "spans exported"),
            (None, true) => tracing::info!(cluster, %addr, "trace export works again"),
            (Some(error), false) => {
                tracing::warn!(cluster, %addr, spans, %error, "trace export failed; dropping spans")
            }
            (Some(error), true) => tracing::debug!(cluster, %addr, spans, %error, "trace export failed"),
        }
        failing = failed;
    }
}

/// An OTLP export request: one resource per service, every span under scope `scope`.
pub fn request(batch: Vec<Queued>, scope: &str) -> ExportTraceServiceRequest {
    let mut by_service: BTreeMap<Arc<str>, Vec<Span>> = BTreeMap::new();
    for (service, span) in batch {
        by_service.entry(service).or_default().push(span);
    }
    let resource_spans = by_service
        .into_iter()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![super::string("service.name", &service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: scope.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}
