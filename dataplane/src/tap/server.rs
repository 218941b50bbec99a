//! The tap endpoint: `weft.tap.v1.Tap` over mTLS on its own port (default
//! `<pod-ip>:4190`, Linkerd's tap port). The proxy presents its workload
//! certificate and requires a client certificate from the mesh CA whose
//! SPIFFE ID is the control plane's: an operator taps through the control
//! plane, never a workload, and never directly.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tonic::codegen::Service;
use weft_xds_protos::tap::tap_server::{Tap as TapService, TapServer};
use weft_xds_protos::tap::{ObserveRequest, TapEvent};

use super::Tap;
use crate::tls::config::server_config_for;
use crate::tls::{Credentials, SpiffeId, peer_identity};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The tap port on the pod IP (Linkerd's).
pub const TAP_PORT: u16 = 4190;

/// Binds the tap endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves tap on `listener` until `shutdown` turns true: mTLS with the
/// current workload certificate (no connection is accepted before there is
/// one), clients must be `allowed` (the control plane's identity).
pub async fn serve(
    listener: TcpListener,
    tap: Arc<Tap>,
    credentials: watch::Receiver<Option<Arc<Credentials>>>,
    allowed: SpiffeId,
    mut shutdown: watch::Receiver<bool>,
) {
    let allowed = Arc::new(allowed);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "tap: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        };
        let Some(creds) = credentials.borrow().clone() else {
            tracing::debug!(%peer, "tap: no workload certificate yet; closing");
            continue;
        };
        let tap = Arc::clone(&tap);
        let allowed = Arc::clone(&allowed);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = connection(stream, &creds, &allowed, tap, shutdown).await {
                tracing::info!(%peer, %error, "tap: connection refused");
            }
        });
    }
}

async fn connection(
    stream: TcpStream,
    creds: &Credentials,
    allowed: &SpiffeId,
    tap: Arc<Tap>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let config = server_config_for(creds, true, &[b"h2".to_vec()]).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(stream))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let presented = peer_identity(tls.get_ref().1.peer_certificates()).map_err(|e| e.to_string())?;
    if presented != *allowed {
        return Err(format!("client is {presented}; only {allowed} may tap"));
    }
    let service = TapServer::new(TapEndpoint { tap });
    let hyper_service = service_fn(move |req: hyper::Request<Incoming>| {
        let mut service = service.clone();
        async move { Ok::<_, Infallible>(service.call(req).await.unwrap_or_else(|never| match never {})) }
    });
    let builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    let conn = builder.serve_connection(TokioIo::new(tls), hyper_service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result.map_err(|e| e.to_string()),
        () = async { let _ = shutdown.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
            Ok(())
        }
    }
}

/// The gRPC service.
#[derive(Debug)]
struct TapEndpoint {
    tap: Arc<Tap>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<TapEvent, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl TapService for TapEndpoint {
    type ObserveStream = EventStream;

    async fn observe(
        &self,
        request: tonic::Request<ObserveRequest>,
    ) -> Result<tonic::Response<EventStream>, tonic::Status> {
        let stream = self.tap.open(request.get_ref());
        Ok(tonic::Response::new(Box::pin(stream.map(Ok))))
    }
}
