//! The SDS gRPC service: `StreamSecrets` (State of the World),
//! `DeltaSecrets` (incremental) and `FetchSecrets` (one shot), all answering
//! from the same [`SecretWatch`] and pushing new versions when it changes.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};
use weft_xds_protos::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use weft_xds_protos::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use weft_xds_protos::type_url;

use super::metrics::SdsMetrics;
use super::secrets::{SecretSet, SecretWatch};

/// Responses waiting to be written on one stream.
const STREAM_BUFFER: usize = 8;

/// A boxed response stream.
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Serves the agent's secrets over SDS.
#[derive(Debug, Clone)]
pub struct SdsService {
    secrets: SecretWatch,
    metrics: Arc<SdsMetrics>,
    streams: Arc<AtomicU64>,
}

impl SdsService {
    /// A service answering from `secrets`.
    pub fn new(secrets: SecretWatch, metrics: Arc<SdsMetrics>) -> Self {
        Self { secrets, metrics, streams: Arc::new(AtomicU64::new(0)) }
    }

    /// Wraps the service for a tonic `Server`.
    pub fn into_server(self) -> SecretDiscoveryServiceServer<Self> {
        SecretDiscoveryServiceServer::new(self)
    }

    fn next_stream_id(&self) -> u64 {
        self.streams.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Opens a stream of kind `S` on `requests`, served in the background (and counted in the
    /// `streams` gauge while it lasts).
    fn open<S: SecretStream>(
        &self,
        requests: Streaming<S::Request>,
    ) -> Response<ResponseStream<S::Response>> {
        let (out, rx) = mpsc::channel(STREAM_BUFFER);
        let id = self.next_stream_id();
        let stream =
            S::new(StreamCore { id, secrets: self.secrets.clone(), metrics: self.metrics.clone(), out });
        debug!(stream = id, "SDS stream opened ({})", S::KIND);
        let metrics = self.metrics.clone();
        metrics.streams.inc();
        tokio::spawn(async move {
            run(stream, requests).await;
            metrics.streams.dec();
        });
        Response::new(Box::pin(ReceiverStream::new(rx)))
    }
}

/// The type URL of a request, which may be left empty after the first one.
fn check_type(type_url_given: &str) -> Result<(), Status> {
    if type_url_given.is_empty() || type_url_given == type_url::SECRET {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "this server serves only {}, not {type_url_given}",
            type_url::SECRET
        )))
    }
}

/// The names a SotW request asks for: every secret when it names none.
fn sotw_names(set: &SecretSet, requested: &BTreeSet<String>) -> Vec<String> {
    if requested.is_empty() {
        set.secrets.keys().cloned().collect()
    } else {
        requested.iter().cloned().collect()
    }
}

fn sotw_response(set: &SecretSet, names: &[String], nonce: u64) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: set.version.clone(),
        resources: names.iter().filter_map(|n| set.get(n)).map(|s| s.resource.clone()).collect(),
        type_url: type_url::SECRET.to_owned(),
        nonce: nonce.to_string(),
        ..DiscoveryResponse::default()
    }
}

/// Names asked for that the agent does not have (logged once per stream).
fn unknown<'a>(set: &SecretSet, names: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
    names.into_iter().filter(|n| set.get(n).is_none()).map(String::as_str).collect()
}

/// What every SDS stream has, whatever its protocol.
struct StreamCore<R> {
    id: u64,
    secrets: SecretWatch,
    metrics: Arc<SdsMetrics>,
    out: mpsc::Sender<Result<R, Status>>,
}

/// One SDS stream, SotW or Delta: how it answers a request and pushes a change of secrets.
trait SecretStream: Send + Sized + 'static {
    /// What the client sends.
    type Request: Send + 'static;
    /// What the stream answers.
    type Response: Send + 'static;
    /// "SotW" or "Delta", for logs.
    const KIND: &'static str;

    /// A stream that has seen no request yet.
    fn new(core: StreamCore<Self::Response>) -> Self;
    /// Its id, secrets, metrics and response channel.
    fn core(&mut self) -> &mut StreamCore<Self::Response>;
    /// Handles a request; an error ends the stream with that status.
    fn on_request(&mut self, request: Self::Request) -> impl Future<Output = Result<(), Status>> + Send;
    /// Sends what changed, if anything. False when the stream is gone.
    fn push(&mut self) -> impl Future<Output = bool> + Send;
}

/// Serves one stream: each request as it comes, and a push whenever the secrets change, until
/// the client goes, a request is refused or the secrets' sender is dropped.
async fn run<S: SecretStream>(mut stream: S, mut requests: Streaming<S::Request>) {
    loop {
        tokio::select! {
            request = requests.message() => match request {
                Ok(Some(request)) => {
                    if let Err(status) = stream.on_request(request).await {
                        let _ = stream.core().out.send(Err(status)).await;
                        return;
                    }
                }
                Ok(None) => return,
                Err(status) => {
                    debug!(stream = stream.core().id, %status, "SDS stream ended ({})", S::KIND);
                    return;
                }
            },
            changed = stream.core().secrets.changed() => {
                if changed.is_err() { return; }
                if !stream.push().await { return; }
            }
        }
    }
}

/// One SotW stream: the names asked for and what was last sent.
struct SotwStream {
    core: StreamCore<DiscoveryResponse>,
    /// `None` until the first request.
    names: Option<BTreeSet<String>>,
    nonce: u64,
    /// (set version, names) of the last response.
    sent: Option<(String, BTreeSet<String>)>,
    warned_unknown: BTreeSet<String>,
}

impl SecretStream for SotwStream {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const KIND: &'static str = "SotW";

    fn new(core: StreamCore<DiscoveryResponse>) -> Self {
        Self { core, names: None, nonce: 0, sent: None, warned_unknown: BTreeSet::new() }
    }

    fn core(&mut self) -> &mut StreamCore<DiscoveryResponse> {
        &mut self.core
    }

    async fn on_request(&mut self, request: DiscoveryRequest) -> Result<(), Status> {
        check_type(&request.type_url)?;
        if let Some(error) = &request.error_detail {
            self.core.metrics.nacks.inc();
            warn!(
                stream = self.core.id,
                version = request.version_info,
                error = error.message,
                "Envoy rejected secrets (NACK)"
            );
        }
        if !request.response_nonce.is_empty() && request.response_nonce != self.nonce.to_string() {
            debug!(
                stream = self.core.id,
                nonce = request.response_nonce,
                "ignoring a request for a stale response"
            );
            return Ok(());
        }
        self.names = Some(request.resource_names.into_iter().collect());
        self.push().await;
        Ok(())
    }

    /// Sends the secrets asked for unless this very version went out for
    /// these names already. False when the stream is gone.
    async fn push(&mut self) -> bool {
        let Some(names) = self.names.clone() else { return true };
        let Some(set) = self.core.secrets.borrow_and_update().clone() else { return true };
        if self
            .sent
            .as_ref()
            .is_some_and(|(version, sent_names)| *version == set.version && *sent_names == names)
        {
            return true;
        }
        let wanted = sotw_names(&set, &names);
        for name in unknown(&set, &wanted) {
            if self.warned_unknown.insert(name.to_owned()) {
                warn!(stream = self.core.id, name, "Envoy asked for a secret the agent does not have");
            }
        }
        self.nonce += 1;
        let response = sotw_response(&set, &wanted, self.nonce);
        info!(stream = self.core.id, version = set.version, names = ?wanted, "sending secrets (SotW)");
        self.sent = Some((set.version.clone(), names));
        self.core.metrics.responses.inc();
        self.core.out.send(Ok(response)).await.is_ok()
    }
}

/// One Delta stream: subscriptions and the version of each name sent.
struct DeltaStream {
    core: StreamCore<DeltaDiscoveryResponse>,
    started: bool,
    wildcard: bool,
    subscribed: BTreeSet<String>,
    /// What the client holds: name -> version ("" for a name reported absent).
    known: BTreeMap<String, String>,
    nonce: u64,
}

impl SecretStream for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const KIND: &'static str = "Delta";

    fn new(core: StreamCore<DeltaDiscoveryResponse>) -> Self {
        Self {
            core,
            started: false,
            wildcard: false,
            subscribed: BTreeSet::new(),
            known: BTreeMap::new(),
            nonce: 0,
        }
    }

    fn core(&mut self) -> &mut StreamCore<DeltaDiscoveryResponse> {
        &mut self.core
    }

    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Result<(), Status> {
        check_type(&request.type_url)?;
        if let Some(error) = &request.error_detail {
            self.core.metrics.nacks.inc();
            warn!(
                stream = self.core.id,
                nonce = request.response_nonce,
                error = error.message,
                "Envoy rejected secrets (NACK)"
            );
        }
        if !self.started {
            self.started = true;
            // Legacy wildcard: a first request that subscribes to nothing.
            self.wildcard = request.resource_names_subscribe.is_empty();
            self.known.extend(request.initial_resource_versions);
        }
        for name in request.resource_names_subscribe {
            if name == "*" {
                self.wildcard = true;
            } else {
                self.subscribed.insert(name);
            }
        }
        for name in request.resource_names_unsubscribe {
            if name == "*" {
                self.wildcard = false;
            } else {
                self.subscribed.remove(&name);
                self.known.remove(&name);
            }
        }
        self.push().await;
        Ok(())
    }

    /// Sends what changed for the subscribed names. False when the stream is gone.
    async fn push(&mut self) -> bool {
        if !self.started {
            return true;
        }
        let Some(set) = self.core.secrets.borrow_and_update().clone() else { return true };
        let mut names: BTreeSet<String> = self.subscribed.clone();
        if self.wildcard {
            names.extend(set.secrets.keys().cloned());
        }
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        for name in &names {
            match set.get(name) {
                Some(secret) => {
                    if self.known.get(name) != Some(&secret.version) {
                        self.known.insert(name.clone(), secret.version.clone());
                        resources.push(Resource {
                            name: name.clone(),
                            version: secret.version.clone(),
                            resource: Some(secret.resource.clone()),
                            ..Resource::default()
                        });
                    }
                }
                None => {
                    if self.known.get(name).is_none_or(|v| !v.is_empty()) {
                        warn!(
                            stream = self.core.id,
                            name, "Envoy asked for a secret the agent does not have"
                        );
                        self.known.insert(name.clone(), String::new());
                        removed.push(name.clone());
                    }
                }
            }
        }
        if resources.is_empty() && removed.is_empty() {
            return true;
        }
        self.nonce += 1;
        info!(
            stream = self.core.id,
            version = set.version,
            names = ?resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            "sending secrets (Delta)"
        );
        let response = DeltaDiscoveryResponse {
            system_version_info: set.version.clone(),
            resources,
            type_url: type_url::SECRET.to_owned(),
            removed_resources: removed,
            nonce: self.nonce.to_string(),
            ..DeltaDiscoveryResponse::default()
        };
        self.core.metrics.responses.inc();
        self.core.out.send(Ok(response)).await.is_ok()
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for SdsService {
    type DeltaSecretsStream = ResponseStream<DeltaDiscoveryResponse>;
    type StreamSecretsStream = ResponseStream<DiscoveryResponse>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        Ok(self.open::<SotwStream>(request.into_inner()))
    }

    async fn delta_secrets(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Ok(self.open::<DeltaStream>(request.into_inner()))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let request = request.into_inner();
        check_type(&request.type_url)?;
        let Some(set) = self.secrets.borrow().clone() else {
            return Err(Status::unavailable("no workload certificate yet"));
        };
        let names = sotw_names(&set, &request.resource_names.into_iter().collect());
        self.metrics.responses.inc();
        Ok(Response::new(sotw_response(&set, &names, 0)))
    }
}
