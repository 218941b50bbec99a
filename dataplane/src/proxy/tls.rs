//! mTLS on the data path: rustls configs built from the workload's current
//! credentials (rebuilt when they rotate), the TLS inspector that reads a
//! ClientHello before a filter chain is chosen, and the streams both sides use.
//!
//! Rotation never touches an established connection: a handshake takes the
//! config of the credentials current at that moment, and a connection keeps
//! the session it negotiated.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::pki_types::ServerName;
use rustls::server::Acceptor;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream as ClientTlsStream;

use crate::config::DownstreamTls;
use crate::tls::{Credentials, SpiffeId, TlsError, config as tls_config};

/// The workload's credentials as the data path receives them: `None` when
/// the proxy runs without an identity (`--insecure-plaintext`).
pub(crate) type CredentialsRx = watch::Receiver<Option<Arc<Credentials>>>;

/// How long the TLS inspector waits for a connection's first bytes
/// (Envoy's default `listener_filters_timeout`); the connection is closed then.
pub(crate) const INSPECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest ClientHello the inspector reads (TLS allows 16 KiB records;
/// a hello spanning more than a few is not a client weft-proxy serves).
const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// The ALPN protocols an upstream connection offers: exactly what its pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Alpn {
    /// None (TCP proxy).
    None,
    /// `http/1.1`.
    Http1,
    /// `h2`.
    H2,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::None => Vec::new(),
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::H2 => vec![b"h2".to_vec()],
        }
    }
}

/// Why no TLS config could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unavailable {
    /// The proxy has no workload certificate.
    #[error("no workload credentials (the proxy runs with --insecure-plaintext)")]
    NoCredentials,
    /// rustls refused to build the config.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

type ServerKey = (bool, Vec<String>);
type ClientKey = (Arc<[SpiffeId]>, Alpn);

/// The configs built from one version of the credentials, built on first
/// use (two handshakes racing may both build one; either is kept).
#[derive(Debug)]
struct Generation {
    credentials: Arc<Credentials>,
    servers: ArcSwap<HashMap<ServerKey, Arc<ServerConfig>>>,
    clients: ArcSwap<HashMap<ClientKey, Arc<ClientConfig>>>,
}

impl Generation {
    fn new(credentials: Arc<Credentials>) -> Generation {
        Generation { credentials, servers: ArcSwap::default(), clients: ArcSwap::default() }
    }
}

/// Looks `key` up in `map`, building and adding its value on a miss.
fn cached<K, V>(
    map: &ArcSwap<HashMap<K, Arc<V>>>,
    key: K,
    build: impl FnOnce() -> Result<Arc<V>, TlsError>,
) -> Result<Arc<V>, Unavailable>
where
    K: std::hash::Hash + Eq + Clone,
{
    if let Some(found) = map.load().get(&key) {
        return Ok(Arc::clone(found));
    }
    let built = build()?;
    map.rcu(|current| {
        let mut next = HashMap::clone(current);
        next.entry(key.clone()).or_insert_with(|| Arc::clone(&built));
        next
    });
    Ok(built)
}

/// rustls configs for the current credentials, built on first use and
/// cached until the credentials change. Lock-free.
#[derive(Debug)]
pub(crate) struct TlsContexts {
    credentials: CredentialsRx,
    cache: ArcSwapOption<Generation>,
}

impl TlsContexts {
    /// Follows `credentials`.
    pub(crate) fn new(credentials: CredentialsRx) -> TlsContexts {
        TlsContexts { credentials, cache: ArcSwapOption::empty() }
    }

    /// The configs of the current credentials (a fresh set when they
    /// changed since the last handshake).
    fn current(&self) -> Result<Arc<Generation>, Unavailable> {
        let current = self.credentials.borrow().clone().ok_or(Unavailable::NoCredentials)?;
        if let Some(generation) = self.cache.load_full().filter(|g| Arc::ptr_eq(&g.credentials, &current)) {
            return Ok(generation);
        }
        let generation = Arc::new(Generation::new(current));
        self.cache.store(Some(Arc::clone(&generation)));
        Ok(generation)
    }

    /// The workload's SPIFFE ID, if it holds a certificate (for tap events).
    pub(crate) fn identity(&self) -> String {
        self.credentials.borrow().as_ref().map(|c| c.identity().to_string()).unwrap_or_default()
    }

    /// The server config of a chain that terminates TLS.
    pub(crate) fn server(&self, tls: &DownstreamTls) -> Result<Arc<ServerConfig>, Unavailable> {
        let generation = self.current()?;
        let key = (tls.require_client_certificate, tls.alpn.clone());
        cached(&generation.servers, key, || {
            let alpn: Vec<Vec<u8>> = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
            tls_config::server_config_for(&generation.credentials, tls.require_client_certificate, &alpn)
        })
    }

    /// The client config for a server that must present one of `allowed`,
    /// offering `alpn`.
    pub(crate) fn client(
        &self,
        allowed: &Arc<[SpiffeId]>,
        alpn: Alpn,
    ) -> Result<Arc<ClientConfig>, Unavailable> {
        let generation = self.current()?;
        cached(&generation.clients, (Arc::clone(allowed), alpn), || {
            tls_config::client_config_for(&generation.credentials, allowed, &alpn.protocols())
        })
    }
}

/// Where and as whom an upstream TLS connection goes: the SNI and the
/// identities the server may present. Part of an endpoint's pool key, so TLS
/// and plaintext connections (or different expectations) never share a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TlsTarget {
    /// The SNI (an IP address name sends none).
    pub(crate) server_name: ServerName<'static>,
    /// The server must present one of these (any if empty).
    pub(crate) allowed: Arc<[SpiffeId]>,
}

impl TlsTarget {
    /// The target for an endpoint at `addr`: SNI `sni` (none if empty), and
    /// the identities allowed: the endpoint's own if it has one, else the
    /// cluster's. An identity that is not a SPIFFE ID is an error.
    pub(crate) fn new(
        addr: SocketAddr,
        sni: &str,
        endpoint_identity: Option<&str>,
        cluster_identities: &[String],
    ) -> Result<TlsTarget, String> {
        let server_name = if sni.is_empty() {
            ServerName::IpAddress(addr.ip().into())
        } else {
            ServerName::try_from(sni.to_owned()).map_err(|e| format!("SNI {sni:?}: {e}"))?
        };
        let names: Vec<&str> = match endpoint_identity {
            Some(id) => vec![id],
            None => cluster_identities.iter().map(String::as_str).collect(),
        };
        let mut allowed = names
            .iter()
            .map(|id| id.parse::<SpiffeId>().map_err(|e| format!("identity {id:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        allowed.sort();
        allowed.dedup();
        Ok(TlsTarget { server_name, allowed: allowed.into() })
    }
}

/// An upstream connection: plaintext, or TLS over TCP.
#[derive(Debug)]
pub(crate) enum MaybeTls {
    /// Plaintext.
    Plain(TcpStream),
    /// mTLS.
    Tls(Box<ClientTlsStream<TcpStream>>),
}

/// Completes a TLS handshake as a client over `tcp`.
pub(crate) async fn connect_tls(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    target: &TlsTarget,
    timeout: Duration,
) -> io::Result<MaybeTls> {
    let handshake = TlsConnector::from(config).connect(target.server_name.clone(), tcp);
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(stream)) => Ok(MaybeTls::Tls(Box::new(stream))),
        Ok(Err(error)) => Err(io::Error::new(error.kind(), format!("TLS handshake: {error}"))),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
    }
}

macro_rules! either_io {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            MaybeTls::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            MaybeTls::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for MaybeTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        either_io!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        either_io!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        either_io!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either_io!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either_io!(self, s => s.poll_shutdown(cx))
    }
}

/// What the TLS inspector saw at the start of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Inspected {
    /// The transport protocol: `tls` or `raw_buffer`.
    pub(crate) tls: bool,
    /// The SNI, lowercase (TLS only).
    pub(crate) server_name: Option<String>,
    /// ALPN protocols offered (TLS only).
    pub(crate) alpn: Vec<Vec<u8>>,
}

/// Why inspection ended the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InspectError {
    /// No first bytes within [`INSPECT_TIMEOUT`].
    #[error("no data within {INSPECT_TIMEOUT:?}")]
    Timeout,
    /// The peer closed before a full ClientHello.
    #[error("closed before a full ClientHello")]
    Closed,
    /// Not a valid ClientHello, or too large.
    #[error("invalid ClientHello: {0}")]
    Invalid(String),
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads the start of a connection to tell TLS from plaintext and, for TLS,
/// the SNI and ALPN offers of its ClientHello (Envoy's `tls_inspector`).
/// Everything read is returned too, to be replayed ([`Rewind`]).
pub(crate) async fn inspect(stream: &mut TcpStream) -> Result<(Inspected, Vec<u8>), InspectError> {
    let mut read = Vec::with_capacity(2048);
    match tokio::time::timeout(INSPECT_TIMEOUT, read_some(stream, &mut read)).await {
        Err(_) => return Err(InspectError::Timeout),
        Ok(result) => result?,
    }
    // A TLS handshake record: content type 22, then a 3.x version.
    if read[0] != 0x16 || read.get(1).is_some_and(|major| *major != 3) {
        return Ok((Inspected::default(), read));
    }
    let mut acceptor = Acceptor::default();
    let mut fed = 0;
    let deadline = tokio::time::Instant::now() + INSPECT_TIMEOUT;
    loop {
        while fed < read.len() {
            fed += acceptor.read_tls(&mut &read[fed..]).map_err(|e| InspectError::Invalid(e.to_string()))?;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                let inspected = Inspected {
                    tls: true,
                    server_name: hello.server_name().map(str::to_ascii_lowercase),
                    alpn: hello.alpn().map(|offers| offers.map(<[u8]>::to_vec).collect()).unwrap_or_default(),
                };
                return Ok((inspected, read));
            }
            Ok(None) => {}
            Err((error, _)) => return Err(InspectError::Invalid(error.to_string())),
        }
        if read.len() >= MAX_CLIENT_HELLO {
            return Err(InspectError::Invalid(format!("longer than {MAX_CLIENT_HELLO} bytes")));
        }
        match tokio::time::timeout_at(deadline, read_some(stream, &mut read)).await {
            Err(_) => return Err(InspectError::Timeout),
            Ok(result) => result?,
        }
    }
}

/// Appends what the stream has (at least one byte), or fails at EOF.
async fn read_some(stream: &mut TcpStream, into: &mut Vec<u8>) -> Result<(), InspectError> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await? {
        0 => Err(InspectError::Closed),
        n => {
            into.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

/// A stream that first replays bytes already read from it.
#[derive(Debug)]
pub(crate) struct Rewind<S> {
    prefix: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner`, with `prefix` read again first.
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Rewind<S> {
        Rewind { prefix, offset: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.offset < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.offset);
            buf.put_slice(&this.prefix[this.offset..this.offset + n]);
            this.offset += n;
            if this.offset == this.prefix.len() {
                this.prefix = Vec::new();
                this.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn plaintext_is_raw_and_replayed_whole() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let (seen, prefix) = inspect(&mut server).await.unwrap();
        assert_eq!(seen, Inspected::default());
        let mut all = String::new();
        Rewind::new(prefix, server).read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_client_hello_gives_its_sni_and_alpn() {
        let (client, mut server) = pair().await;
        let mut config = ClientConfig::builder_with_provider(tls_config::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let name = ServerName::try_from("Outbound_.80_._.web.shop.svc.cluster.local").unwrap();
        tokio::spawn(async move {
            // Fails once the server side goes away; only the hello matters.
            let _ = TlsConnector::from(Arc::new(config)).connect(name.to_owned(), client).await;
        });
        let (seen, prefix) = inspect(&mut server).await.unwrap();
        assert!(seen.tls);
        assert_eq!(seen.server_name.as_deref(), Some("outbound_.80_._.web.shop.svc.cluster.local"));
        assert_eq!(seen.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(prefix[0], 0x16);
    }

    #[tokio::test]
    async fn garbage_that_looks_like_tls_is_refused() {
        let (mut client, mut server) = pair().await;
        client.write_all(&[0x16, 3, 1, 0, 4, 9, 9, 9, 9]).await.unwrap();
        assert!(matches!(inspect(&mut server).await, Err(InspectError::Invalid(_))));
    }

    #[test]
    fn targets_prefer_the_endpoint_identity_and_sort_the_cluster_ones() {
        let addr: SocketAddr = "10.0.0.1:4143".parse().unwrap();
        let a = "spiffe://cluster.local/ns/shop/sa/a".to_string();
        let b = "spiffe://cluster.local/ns/shop/sa/b".to_string();
        let t = TlsTarget::new(addr, "x.svc", None, &[b.clone(), a.clone()]).unwrap();
        assert_eq!(t.allowed.iter().map(ToString::to_string).collect::<Vec<_>>(), [a.clone(), b.clone()]);
        let t = TlsTarget::new(addr, "", Some(&b), std::slice::from_ref(&a)).unwrap();
        assert_eq!(t.allowed.len(), 1);
        assert!(matches!(t.server_name, ServerName::IpAddress(_)));
        assert!(TlsTarget::new(addr, "", Some("not-spiffe"), &[]).is_err());
    }
}
