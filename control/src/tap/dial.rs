//! Dialling a proxy's tap endpoint as the control plane: mTLS presenting the control plane's
//! own (rotating) certificate, trusting the mesh CA, and requiring the proxy to present its
//! workload's SPIFFE ID.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Endpoint, Uri};
use weft_xds_protos::tap::tap_client::TapClient;
use weft_xds_protos::tap::{ObserveRequest, TapEvent};

use crate::admin::identity::IdentityHandles;
use crate::identity::{CertInfo, ControlTls, SpiffeId};
use crate::translate::ProxyNode;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens an `Observe` stream on the proxy `node` at `addr`.
pub(super) async fn observe(
    handles: &IdentityHandles,
    node: &ProxyNode,
    addr: SocketAddr,
    request: ObserveRequest,
    duration: Duration,
) -> anyhow::Result<tonic::Streaming<TapEvent>> {
    let expected = SpiffeId::new(handles.ca.trust_domain(), &node.namespace, &node.service_account)?;
    let config = client_config(handles, expected)?;
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(duration + Duration::from_secs(5))
        .connect_with_connector(Dialer { addr, config })
        .await
        .map_err(|e| anyhow::anyhow!("connecting: {}", error_chain(&e)))?;
    let response = TapClient::new(channel)
        .observe(request)
        .await
        .map_err(|s| anyhow::anyhow!("Observe refused: {}", s.message()))?;
    Ok(response.into_inner())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn client_config(handles: &IdentityHandles, expected: SpiffeId) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for der in handles.ca.trust_bundle() {
        roots.add(CertificateDer::from(der))?;
    }
    let verifier = ProxyVerifier {
        roots: Arc::new(roots),
        expected,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous() // The verifier checks the chain; only the name check is SPIFFE's.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(ControlCert(handles.control.clone())));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Presents the control plane's current certificate.
#[derive(Debug)]
struct ControlCert(Arc<ControlTls>);

impl ResolvesClientCert for ControlCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks the proxy's chain against the mesh CA and its SPIFFE ID; not a DNS name.
#[derive(Debug)]
struct ProxyVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ProxyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let presented = CertInfo::from_der(end_entity.as_ref())
            .ok()
            .and_then(|info| info.spiffe_id())
            .ok_or_else(|| rustls::Error::General("the proxy's certificate has no SPIFFE ID".into()))?;
        if presented != self.expected {
            return Err(rustls::Error::General(format!("proxy is {presented}, expected {}", self.expected)));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Dials one proxy over TLS, whatever URI tonic asks for.
#[derive(Debug, Clone)]
struct Dialer {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
}

type DialFuture = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tonic::codegen::Service<Uri> for Dialer {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = DialFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let Dialer { addr, config } = self.clone();
        Box::pin(async move {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
            tcp.set_nodelay(true)?;
            let name = ServerName::IpAddress(addr.ip().into());
            let tls = tokio::time::timeout(CONNECT_TIMEOUT, TlsConnector::from(config).connect(name, tcp))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok(TokioIo::new(tls))
        })
    }
}
