//! The agent itself: certify, renew, and serve SDS on the socket until told
//! to stop. The `weft-agent` binary parses flags into an [`AgentConfig`] and
//! calls [`run`]; tests call it in-process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{error, info};

use super::admin::{AgentAdminState, router};
use super::metrics::SdsMetrics;
use super::secrets::SecretSet;
use super::server::SdsService;
use super::socket::{self, SocketError};
use crate::tls::identity::error_chain;
use crate::tls::{
    Certifier, ControlPlaneTls, Credentials, SpiffeId, TlsError, TokenSource, control_endpoint,
};

/// What the agent needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The control plane's address (identity service), `host:port`.
    pub xds_addr: String,
    /// The workload's identity.
    pub identity: SpiffeId,
    /// The identity the control plane's certificate must carry.
    pub control_identity: SpiffeId,
    /// Trust anchors for the control plane (`--ca-file`).
    pub ca_anchors: Vec<CertificateDer<'static>>,
    /// The workload's proof of identity.
    pub token: TokenSource,
    /// The SDS socket.
    pub sds_socket: PathBuf,
    /// The admin server's address, if any.
    pub admin_addr: Option<SocketAddr>,
}

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The SDS socket could not be set up.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The admin address could not be bound.
    #[error("binding the admin server to {addr}: {source}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The control plane refused to certify the workload (a bad token, a
    /// wrong identity): retrying would not help.
    #[error("certification refused: {}", error_chain(.0))]
    Refused(TlsError),
    /// The control plane address is not usable.
    #[error("--xds-addr {addr}: {source}")]
    Address {
        /// The address given.
        addr: String,
        /// The error.
        source: tonic::transport::Error,
    },
}

/// What a running agent exposes to an in-process caller.
#[derive(Debug, Clone)]
pub struct AgentHandle {
    /// The workload credentials (`None` until certified).
    pub credentials: watch::Receiver<Option<Arc<Credentials>>>,
    /// The bound admin address, if any.
    pub admin_addr: Option<SocketAddr>,
}

/// Runs the agent until `shutdown` turns true. `started` receives the
/// handle once the socket and the admin server are bound.
pub async fn run(
    config: AgentConfig,
    mut shutdown: watch::Receiver<bool>,
    started: Option<tokio::sync::oneshot::Sender<AgentHandle>>,
) -> Result<(), AgentError> {
    let endpoint = control_endpoint(&config.xds_addr)
        .map_err(|source| AgentError::Address { addr: config.xds_addr.clone(), source })?;
    let (listener, socket_guard) = socket::bind(&config.sds_socket)?;
    let admin_listener = match config.admin_addr {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.map_err(|source| AgentError::Admin { addr, source })?)
        }
        None => None,
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

    let metrics = Arc::new(SdsMetrics::new());
    let (creds_tx, creds_rx) = watch::channel(None::<Arc<Credentials>>);
    let (secrets_tx, secrets_rx) = watch::channel(None::<Arc<SecretSet>>);
    let mut tasks = Vec::new();

    // Credentials -> secrets (and metrics), for as long as the agent runs.
    let mut creds = creds_rx.clone();
    let publish_metrics = metrics.clone();
    let publisher = tokio::spawn(async move {
        while creds.changed().await.is_ok() {
            let Some(current) = creds.borrow_and_update().clone() else { continue };
            publish_metrics.certificate_refreshed(current.not_after());
            let set = SecretSet::from_credentials(&current);
            info!(version = set.version, not_after = ?current.not_after(), "serving new secrets");
            secrets_tx.send_replace(Some(Arc::new(set)));
        }
    });

    // The servers stop when the agent does, for whatever reason.
    let (stop_tx, stop_rx) = watch::channel(false);
    let service = SdsService::new(secrets_rx, metrics.clone());
    let mut stop = stop_rx.clone();
    let socket_path = config.sds_socket.clone();
    tasks.push(tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            error!(error = %error_chain(&e), socket = %socket_path.display(), "the SDS server failed");
        }
    }));

    if let Some(listener) = admin_listener {
        let state = AgentAdminState { credentials: creds_rx.clone(), metrics: metrics.clone() };
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::admin::serve_router(listener, router(state), stop).await {
                error!(error = %e, "the admin server failed");
            }
        }));
    }
    info!(
        identity = %config.identity,
        socket = %config.sds_socket.display(),
        admin = ?admin_addr,
        control_plane = config.xds_addr,
        "weft-agent serving SDS; certifying"
    );
    if let Some(started) = started {
        let _ = started.send(AgentHandle { credentials: creds_rx.clone(), admin_addr });
    }

    let tls = ControlPlaneTls::new(config.ca_anchors.clone(), config.control_identity.clone());
    let mut certifier =
        Certifier::new(tls.connect_lazy(&endpoint), config.identity.clone(), config.token.clone());
    let first = tokio::select! {
        r = certifier.certify_with_retry() => Some(r),
        _ = shutdown.wait_for(|s| *s) => None,
    };
    let result = match first {
        Some(Ok(first)) => {
            let renewals = tokio::spawn(certifier.maintain(first, creds_tx));
            let _ = shutdown.wait_for(|s| *s).await;
            renewals.abort();
            Ok(())
        }
        Some(Err(e)) => Err(AgentError::Refused(e)),
        None => Ok(()),
    };
    info!("weft-agent stopping");
    publisher.abort();
    let _ = stop_tx.send(true);
    for task in tasks {
        let abort = task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), task).await.is_err() {
            abort.abort();
        }
    }
    drop(socket_guard);
    result
}
