//! The admission webhook server: `POST /inject` over TLS, answering AdmissionReviews with
//! [`super::review`].
//!
//! Its certificate comes from the mesh CA ([`WebhookTls`]): issued for the `weft-webhook`
//! Service's DNS names and renewed at 70 % of its life. The API server trusts it because the
//! control plane patches the CA root into the MutatingWebhookConfiguration's `caBundle`
//! ([`patch_ca_bundle`]) at start-up. Ready to run inside `weft control` with [`start`].

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use kube::{Api, Client};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

use super::InjectConfig;
use crate::identity::tls::{IssueError, ServingCert, spawn_tls_accept};
use crate::identity::{CaError, CertificateAuthority, control_identity};
use crate::install::{NAMESPACE, WEBHOOK_NAME, WEBHOOK_SERVICE};

/// Lifetime of the webhook's certificate.
pub const CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The CA could not issue the certificate.
    #[error("issuing the webhook's certificate: {0}")]
    Ca(#[from] CaError),
    /// rustls refused the certificate or key.
    #[error("the webhook's TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The listening address could not be bound.
    #[error("binding the webhook to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The API server refused to patch the caBundle.
    #[error("patching the caBundle of MutatingWebhookConfiguration {name}: {source}")]
    Patch {
        /// The configuration's name.
        name: String,
        /// What the client said.
        source: kube::Error,
    },
}

impl From<IssueError> for WebhookError {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::Ca(e) => Self::Ca(e),
            IssueError::Rustls(e) => Self::Tls(e),
        }
    }
}

/// The DNS names the API server may use for the webhook Service.
pub fn dns_names() -> [String; 3] {
    [
        format!("{WEBHOOK_SERVICE}.{NAMESPACE}.svc"),
        format!("{WEBHOOK_SERVICE}.{NAMESPACE}.svc.cluster.local"),
        format!("{WEBHOOK_SERVICE}.{NAMESPACE}"),
    ]
}

/// The webhook's TLS identity: a certificate from the mesh CA for the webhook Service's names,
/// swapped on renewal without restarting the server.
#[derive(Debug)]
pub struct WebhookTls {
    ca: Arc<CertificateAuthority>,
    cert: Arc<ServingCert>,
}

impl WebhookTls {
    /// Issues the first certificate, valid for `lifetime` (capped at the CA's expiry).
    pub fn new(ca: Arc<CertificateAuthority>, lifetime: Duration) -> Result<Self, WebhookError> {
        let identity = control_identity(ca.trust_domain()).map_err(CaError::TrustDomain)?;
        let names = dns_names().to_vec();
        let cert = ServingCert::new(ca.clone(), identity, names, Vec::new(), lifetime, "the webhook")?;
        Ok(Self { ca, cert: Arc::new(cert) })
    }

    /// When the served certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.cert.current().not_after
    }

    /// When it is due for renewal (70 % of its life).
    pub fn renew_at(&self) -> SystemTime {
        self.cert.renew_at()
    }

    /// The CA root (PEM) that verifies the certificate: what `caBundle` must hold.
    pub fn ca_bundle_pem(&self) -> String {
        self.ca.trust_bundle_pem().to_string()
    }

    /// Issues a new certificate; new handshakes use it at once.
    pub fn renew(&self) -> Result<(), WebhookError> {
        Ok(self.cert.renew()?)
    }

    /// Renews at 70 % of each certificate's life (retrying every 30 s on failure) until `stop`.
    pub async fn renew_until(self: Arc<Self>, stop: watch::Receiver<bool>) {
        self.cert.clone().renew_until(stop).await;
    }

    /// The rustls config: this certificate (rotating), HTTP/1.1, no client certificate (the API
    /// server does not present one by default).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, WebhookError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.cert.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Where the webhook learns a namespace's labels and annotations (its `weft.io/inject`).
pub trait NamespaceSource: Send + Sync + 'static {
    /// The namespace's metadata; `Ok(None)` if it does not exist.
    fn namespace(&self, name: &str) -> impl Future<Output = Result<Option<ObjectMeta>, String>> + Send;
}

/// Reads namespaces from the API server, one GET per admission.
#[derive(Clone)]
pub struct ApiNamespaces(pub Client);

impl NamespaceSource for ApiNamespaces {
    async fn namespace(&self, name: &str) -> Result<Option<ObjectMeta>, String> {
        let api: Api<Namespace> = Api::all(self.0.clone());
        api.get_opt(name).await.map(|ns| ns.map(|ns| ns.metadata)).map_err(|e| e.to_string())
    }
}

/// Reads namespaces from a reflector's cache (no request per admission).
impl NamespaceSource for kube::runtime::reflector::Store<Namespace> {
    async fn namespace(&self, name: &str) -> Result<Option<ObjectMeta>, String> {
        Ok(self.get(&kube::runtime::reflector::ObjectRef::new(name)).map(|ns| ns.metadata.clone()))
    }
}

/// A fixed set of namespaces, by name (tests, and clusters whose namespaces are known).
impl NamespaceSource for BTreeMap<String, ObjectMeta> {
    async fn namespace(&self, name: &str) -> Result<Option<ObjectMeta>, String> {
        Ok(self.get(name).cloned())
    }
}

/// What the handler needs.
struct Injector<N> {
    config: InjectConfig,
    namespaces: N,
}

async fn inject_handler<N: NamespaceSource>(
    State(injector): State<Arc<Injector<N>>>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let name = review.request.as_ref().and_then(|r| r.namespace.clone()).unwrap_or_default();
    let (namespace, lookup_warning) = match injector.namespaces.namespace(&name).await {
        Ok(Some(meta)) => (meta, None),
        Ok(None) => (ObjectMeta { name: Some(name.clone()), ..Default::default() }, None),
        Err(e) => {
            tracing::warn!(namespace = name, error = %e, "reading the namespace failed; deciding on the pod alone");
            let warning = format!(
                "weft: namespace {name} could not be read ({e}); only the pod's weft.io/inject was honoured"
            );
            (ObjectMeta { name: Some(name.clone()), ..Default::default() }, Some(warning))
        }
    };
    let mut answer = super::review(review, &namespace, &injector.config);
    if let (Some(warning), Some(response)) = (lookup_warning, answer.response.as_mut()) {
        response.warnings.get_or_insert_with(Vec::new).push(warning);
    }
    Json(answer)
}

/// A TLS listener for axum: handshakes run concurrently in a background task, so one slow
/// client does not hold up the others; failed handshakes are logged and dropped.
struct TlsListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        stop: watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let accepted =
            spawn_tls_accept(listener, config, stop, "the webhook port", || (), |tls, peer| (tls, peer));
        Ok(Self { local, accepted })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            // The accept loop stopped (shutdown): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A running webhook server.
#[derive(Debug)]
pub struct RunningWebhook {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its TLS identity (for `caBundle` and expiry reporting).
    pub tls: Arc<WebhookTls>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningWebhook {
    /// Stops accepting, lets requests in flight finish, and waits (at most 5 s).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Serves the injector on `addr` with a certificate from `ca` (renewed in the background), the
/// namespaces' settings from `namespaces`. Routes: `POST /inject`, `GET /live`.
pub async fn start<N: NamespaceSource>(
    addr: SocketAddr,
    ca: Arc<CertificateAuthority>,
    config: InjectConfig,
    namespaces: N,
) -> Result<RunningWebhook, WebhookError> {
    let tls = Arc::new(WebhookTls::new(ca, CERT_LIFETIME)?);
    let listener = TcpListener::bind(addr).await.map_err(|source| WebhookError::Bind { addr, source })?;
    let (stop, stopped) = watch::channel(false);
    let tls_listener = TlsListener::new(listener, tls.server_config()?, stopped.clone())
        .map_err(|source| WebhookError::Bind { addr, source })?;
    let bound = tls_listener.local;
    let router = axum::Router::new()
        .route("/inject", post(inject_handler::<N>))
        .route("/live", get(|| async { "live\n" }))
        .with_state(Arc::new(Injector { config, namespaces }));
    tokio::spawn(tls.clone().renew_until(stopped.clone()));
    let mut shutdown = stopped;
    let task = tokio::spawn(async move {
        let served = axum::serve(tls_listener, router)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the webhook server stopped");
        }
    });
    tracing::info!(addr = %bound, "sidecar injector serving");
    Ok(RunningWebhook { addr: bound, tls, stop, task })
}

/// Puts `ca_pem` into the `caBundle` of the `inject.weft.io` webhook of MutatingWebhookConfiguration
/// `name` (a strategic merge on the webhook list, keyed by name), so the API server trusts the
/// certificate [`WebhookTls`] serves. Call at start-up and after a CA rotation.
pub async fn patch_ca_bundle(client: Client, name: &str, ca_pem: &str) -> Result<(), WebhookError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let bundle = k8s_openapi::ByteString(ca_pem.as_bytes().to_vec());
    let patch = serde_json::json!({
        "webhooks": [{ "name": WEBHOOK_NAME, "clientConfig": { "caBundle": bundle } }]
    });
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(|source| WebhookError::Patch { name: name.to_string(), source })?;
    tracing::info!(configuration = name, "patched the injector's caBundle");
    Ok(())
}
