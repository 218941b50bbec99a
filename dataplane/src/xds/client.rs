//! The ADS stream: connect, subscribe, apply each response and ACK or NACK
//! it, follow LDS and CDS with RDS and EDS subscriptions, and reconnect with
//! jittered exponential backoff when the control plane goes away, serving the
//! last good config meanwhile.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tracing::{Instrument, debug, info, info_span, warn};
use weft_xds_protos::envoy::config::core::v3::Node;
use weft_xds_protos::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;

use super::delta::Delta;
use super::sotw::Sotw;
use super::state::{State, Status, Update};
use super::{NodeInfo, ResourceType};
use crate::config::Config;
use crate::metrics::{Metrics, TypeLabel};
use crate::tls::{ControlPlaneTls, control_endpoint};

/// Which ADS flavour to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Incremental xDS (the default).
    #[default]
    Delta,
    /// State of the World.
    Sotw,
}

/// Reconnect delays: `initial`, doubling up to `max`, each ±50 % at random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(5) }
    }
}

/// How the client runs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The control plane's xDS address: `host:port`, or a URI (`http://host:port`).
    pub server: String,
    /// Who the proxy is.
    pub node: NodeInfo,
    /// Delta or SotW.
    pub mode: Mode,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// How long a listener or cluster waits for its route table or endpoints
    /// before it serves without them (Envoy's `initial_fetch_timeout`, 15 s).
    pub initial_fetch_timeout: Duration,
    /// TLS to the control plane (server SPIFFE ID checked, workload
    /// certificate presented); `None`: plaintext (`--insecure-plaintext`).
    pub control_tls: Option<ControlPlaneTls>,
}

impl ClientConfig {
    /// Delta ADS to `server` with Envoy's defaults.
    pub fn new(server: impl Into<String>, node: NodeInfo) -> Self {
        ClientConfig {
            server: server.into(),
            node,
            mode: Mode::Delta,
            backoff: Backoff::default(),
            initial_fetch_timeout: Duration::from_secs(15),
            control_tls: None,
        }
    }
}

/// What the rest of the proxy reads from the client.
#[derive(Debug, Clone)]
pub struct XdsHandle {
    /// The config to serve, swapped whole on every applied response.
    pub config: watch::Receiver<Arc<Config>>,
    /// What the client holds and whether the proxy is ready.
    pub status: watch::Receiver<Arc<Status>>,
}

/// The xDS client task. Build it with [`XdsClient::new`], then `run` it.
#[derive(Debug)]
pub struct XdsClient {
    config: ClientConfig,
    state: State,
    config_tx: watch::Sender<Arc<Config>>,
    status_tx: watch::Sender<Arc<Status>>,
    metrics: Arc<Metrics>,
    connected: bool,
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    /// No connection to the control plane.
    #[error("connecting to {server}: {source}")]
    Connect {
        server: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The RPC failed.
    #[error("ADS stream failed: {0}")]
    Rpc(tonic::Status),
    /// The server ended the stream.
    #[error("the control plane closed the ADS stream")]
    Closed,
}

/// The requests of one stream.
pub(crate) type RequestStream<R> = UnboundedReceiverStream<R>;

/// A response as the shared core sees it.
#[derive(Debug)]
pub(crate) enum Received {
    /// A response for a type the proxy subscribes to.
    Update(Update),
    /// A response for some other type.
    UnknownType(String),
}

/// The wire protocol (Delta or SotW) under the shared stream core.
pub(crate) trait Protocol: Default + Send + 'static {
    /// Request message.
    type Request: Send + 'static;
    /// Response message.
    type Response: Send + 'static;
    /// For logs.
    const NAME: &'static str;

    /// Starts the RPC.
    fn open(
        client: &mut AggregatedDiscoveryServiceClient<Channel>,
        requests: RequestStream<Self::Request>,
    ) -> impl Future<Output = Result<tonic::Streaming<Self::Response>, tonic::Status>> + Send;

    /// The requests that open a stream: every type with names to ask for,
    /// saying what the proxy already has. The first carries the node.
    fn initial(&mut self, state: &State, node: Node) -> Vec<Self::Request>;

    /// Reads a response.
    fn receive(&mut self, resp: Self::Response) -> Received;

    /// The ACK (no error) or NACK of the last response of `kind`, whose version was `version`.
    fn ack(&mut self, kind: ResourceType, version: &str, error: Option<String>) -> Self::Request;

    /// A request changing the names subscribed of `kind`, if they changed.
    fn subscribe(&mut self, kind: ResourceType, names: &BTreeSet<String>) -> Option<Self::Request>;
}

/// The types whose names follow from others: RDS from LDS, EDS from CDS.
const FOLLOWERS: [ResourceType; 2] = [ResourceType::Endpoint, ResourceType::Route];

impl XdsClient {
    /// A client and the handle the data path and admin server read.
    pub fn new(config: ClientConfig, metrics: Arc<Metrics>) -> (XdsClient, XdsHandle) {
        let (config_tx, config_rx) = watch::channel(Arc::new(Config::default()));
        let (status_tx, status_rx) = watch::channel(Arc::new(Status::default()));
        // Without TLS to the control plane there is no workload certificate (--insecure-plaintext).
        let state = State::new(config.initial_fetch_timeout).with_tls(config.control_tls.is_some());
        let client = XdsClient { config, state, config_tx, status_tx, metrics, connected: false };
        (client, XdsHandle { config: config_rx, status: status_rx })
    }

    /// Runs until `shutdown` turns true (or its sender is dropped),
    /// reconnecting as needed.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let span = info_span!("xds", server = %self.config.server, node = %self.config.node.id);
        match self.config.mode {
            Mode::Delta => self.run_with::<Delta>(shutdown).instrument(span).await,
            Mode::Sotw => self.run_with::<Sotw>(shutdown).instrument(span).await,
        }
    }

    async fn run_with<P: Protocol>(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut proto = P::default();
        let mut delay = self.config.backoff.initial;
        let mut failures: u32 = 0;
        loop {
            let mut received = false;
            let result = self.stream(&mut proto, &mut shutdown, &mut received).await;
            self.set_connected(false);
            let error = match result {
                Ok(()) => return,
                Err(e) => e,
            };
            if received {
                delay = self.config.backoff.initial;
                failures = 0;
            }
            failures += 1;
            let wait = jitter(delay);
            delay = (delay * 2).min(self.config.backoff.max);
            let error = chain(&error);
            // Say it when it happens, then now and then while it lasts.
            if failures % 20 == 1 {
                warn!(error, failures, retry_in = ?wait, "no xDS stream; serving the last good config");
            } else {
                debug!(error, failures, retry_in = ?wait, "no xDS stream");
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// One stream, until it fails (`Err`) or shutdown (`Ok`).
    async fn stream<P: Protocol>(
        &mut self,
        proto: &mut P,
        shutdown: &mut watch::Receiver<bool>,
        received: &mut bool,
    ) -> Result<(), StreamError> {
        let channel = tokio::select! {
            c = self.connect() => c?,
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        };
        let mut client =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        let (tx, rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        for kind in FOLLOWERS {
            let names = self.state.wanted(kind);
            // Nothing is dropped: the names are those of the state itself.
            let _ = self.state.subscribe(kind, &names, now);
        }
        for request in proto.initial(&self.state, self.config.node.to_node()) {
            // The receiver lives in `rx` until the RPC ends.
            let _ = tx.send(request);
        }
        let mut responses = tokio::select! {
            r = P::open(&mut client, UnboundedReceiverStream::new(rx)) => r.map_err(StreamError::Rpc)?,
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        };
        info!(protocol = P::NAME, "ADS stream open");
        self.set_connected(true);
        loop {
            let deadline = self.state.next_deadline();
            tokio::select! {
                msg = responses.message() => match msg {
                    Ok(Some(resp)) => {
                        *received = true;
                        self.on_response(proto, &tx, resp);
                    }
                    Ok(None) => return Err(StreamError::Closed),
                    Err(status) => return Err(StreamError::Rpc(status)),
                },
                () = sleep_until(deadline) => {
                    if self.state.expire(Instant::now()) {
                        self.publish_config();
                        self.publish_status();
                    }
                }
                _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            }
        }
    }

    async fn connect(&self) -> Result<Channel, StreamError> {
        let connect_error = |source| StreamError::Connect { server: self.config.server.clone(), source };
        let endpoint = control_endpoint(&self.config.server).map_err(connect_error)?;
        match &self.config.control_tls {
            // A fresh connector per stream: the anchors and the client
            // certificate are read at each handshake.
            Some(tls) => tls.connect(&endpoint).await,
            None => endpoint.connect().await,
        }
        .map_err(connect_error)
    }

    fn on_response<P: Protocol>(
        &mut self,
        proto: &mut P,
        tx: &mpsc::UnboundedSender<P::Request>,
        resp: P::Response,
    ) {
        let update = match proto.receive(resp) {
            Received::Update(update) => update,
            Received::UnknownType(type_url) => {
                warn!(type_url, "ignoring a response of a type weft-proxy did not subscribe to");
                return;
            }
        };
        let kind = update.kind;
        let version = update.system_version.clone();
        let outcome = self.state.apply(update);
        self.publish_config();
        let label = TypeLabel { r#type: kind.short().to_string() };
        self.metrics
            .xds_updates
            .get_or_create(&label)
            .inc_by(u64::try_from(outcome.changed).unwrap_or(u64::MAX));
        self.metrics
            .xds_rejections
            .get_or_create(&label)
            .inc_by(u64::try_from(outcome.errors.len()).unwrap_or(u64::MAX));
        let detail = outcome.detail();
        match &detail {
            None => debug!(r#type = kind.short(), version, changed = outcome.changed, "applied (ACK)"),
            Some(detail) => warn!(
                r#type = kind.short(),
                version,
                changed = outcome.changed,
                detail,
                "rejected resources (NACK); the valid ones were applied"
            ),
        }
        let _ = tx.send(proto.ack(kind, &version, detail));
        // Follow LDS and CDS: subscribe to what they refer to, drop the rest.
        let now = Instant::now();
        let mut dropped = false;
        for follower in FOLLOWERS {
            let names = self.state.wanted(follower);
            dropped |= self.state.subscribe(follower, &names, now);
            if let Some(request) = proto.subscribe(follower, &names) {
                debug!(r#type = follower.short(), ?names, "subscribing");
                let _ = tx.send(request);
            }
        }
        if dropped {
            self.publish_config();
        }
        self.publish_status();
    }

    /// Swaps in the config built from the current state.
    fn publish_config(&mut self) {
        let config = self.state.build();
        self.config_tx.send_replace(Arc::new(config));
    }

    fn publish_status(&mut self) {
        self.status_tx.send_replace(Arc::new(self.state.status(self.connected)));
    }

    fn set_connected(&mut self, connected: bool) {
        self.connected = connected;
        self.metrics.xds_connected.set(i64::from(connected));
        self.publish_status();
    }
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// `d` ±50 % at random, so proxies that lost the control plane together do
/// not all come back at the same instant.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.5..1.5))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
