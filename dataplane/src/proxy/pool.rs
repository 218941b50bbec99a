//! Keep-alive connections to one endpoint: a lock-free queue of idle
//! HTTP/1.1 connections, and one shared HTTP/2 connection that every request
//! multiplexes over. Dialling counts against the cluster's connection and
//! pending-request breakers. An endpoint reached over mTLS dials TLS with
//! the current credentials, offering exactly the protocol its pool speaks.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::RequestBody;
use super::cluster::{Breakers, Limit, Permit, Transport};
use super::tls::{Alpn, MaybeTls, TlsContexts, connect_tls};
use crate::config::CircuitBreakers;

/// Idle HTTP/1.1 connections kept per endpoint; more are closed.
const MAX_IDLE_H1: usize = 64;

/// The HTTP version spoken upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
}

/// Why a request could not get a response from an endpoint.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// TCP connect or the TLS handshake failed or timed out, or the HTTP handshake failed.
    #[error("connection failure: {0}")]
    Connect(io::Error),
    /// The connection or pending-request breaker is open.
    #[error("upstream overloaded ({0:?})")]
    Overloaded(Limit),
    /// The request was sent but the connection failed before response headers.
    #[error("connection reset before response headers: {0}")]
    Reset(hyper::Error),
}

/// How to dial an endpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dial<'a> {
    /// Where.
    pub(crate) addr: SocketAddr,
    /// Plaintext or mTLS.
    pub(crate) transport: &'a Transport,
    /// TLS configs of the current credentials.
    pub(crate) tls: &'a TlsContexts,
    /// TCP connect timeout (and, separately, TLS handshake timeout).
    pub(crate) connect_timeout: Duration,
    /// The cluster's breakers and their limits.
    pub(crate) breakers: &'a Arc<Breakers>,
    /// Limits.
    pub(crate) limits: CircuitBreakers,
}

/// The connections of one endpoint.
#[derive(Debug)]
pub(crate) struct Pool {
    idle: ArrayQueue<http1::SendRequest<RequestBody>>,
    h2: ArcSwapOption<http2::SendRequest<RequestBody>>,
    /// Serialises HTTP/2 dials so a burst opens one connection, not many.
    h2_dial: tokio::sync::Mutex<()>,
}

impl Pool {
    /// An empty pool.
    pub(crate) fn new() -> Pool {
        Pool {
            idle: ArrayQueue::new(MAX_IDLE_H1),
            h2: ArcSwapOption::empty(),
            h2_dial: tokio::sync::Mutex::new(()),
        }
    }

    /// Gives back an HTTP/1.1 connection whose response has ended; it is
    /// closed if the pool is full.
    pub(crate) fn put_h1(&self, sender: http1::SendRequest<RequestBody>) {
        if !sender.is_closed() {
            let _ = self.idle.push(sender);
        }
    }

    /// Sends `req` over a pooled or new connection. For HTTP/1.1 the
    /// connection comes back with the response: it goes back to the pool when
    /// the response body ends ([`Pool::put_h1`]).
    pub(crate) async fn send(
        &self,
        dial: Dial<'_>,
        protocol: Protocol,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<http1::SendRequest<RequestBody>>), SendError> {
        match protocol {
            Protocol::Http1 => self.send_h1(dial, req).await.map(|(r, s)| (r, Some(s))),
            Protocol::Http2 => self.send_h2(dial, req).await.map(|r| (r, None)),
        }
    }

    async fn send_h1(
        &self,
        dial: Dial<'_>,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, http1::SendRequest<RequestBody>), SendError> {
        while let Some(mut sender) = self.idle.pop() {
            if sender.is_closed() || sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok((response, sender)),
                // The server closed the idle connection before the request
                // went out: nothing was sent, so try the next connection.
                Err(mut error) => match error.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Reset(error.into_error())),
                },
            }
        }
        let (mut sender, connection) = {
            let (io, permit) = connect(dial, Alpn::Http1).await?;
            let (sender, connection) = http1::Builder::new()
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| SendError::Connect(io::Error::other(e)))?;
            (sender, (connection, permit))
        };
        tokio::spawn(async move {
            let (connection, _permit) = connection;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream HTTP/1.1 connection ended");
            }
        });
        match sender.try_send_request(req).await {
            Ok(response) => Ok((response, sender)),
            Err(error) => Err(SendError::Reset(error.into_error())),
        }
    }

    async fn send_h2(
        &self,
        dial: Dial<'_>,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut sender = match self.h2.load_full() {
            Some(sender) if !sender.is_closed() => http2::SendRequest::clone(&sender),
            _ => self.dial_h2(dial).await?,
        };
        match sender.try_send_request(req).await {
            Ok(response) => Ok(response),
            Err(mut error) => match error.take_message() {
                // The connection went away before the stream opened: one fresh dial.
                Some(unsent) => {
                    let mut sender = self.dial_h2(dial).await?;
                    sender.send_request(unsent).await.map_err(SendError::Reset)
                }
                None => Err(SendError::Reset(error.into_error())),
            },
        }
    }

    async fn dial_h2(&self, dial: Dial<'_>) -> Result<http2::SendRequest<RequestBody>, SendError> {
        let _dialling = self.h2_dial.lock().await;
        if let Some(sender) = self.h2.load_full().filter(|s| !s.is_closed()) {
            return Ok(http2::SendRequest::clone(&sender));
        }
        let (io, permit) = connect(dial, Alpn::H2).await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| SendError::Connect(io::Error::other(e)))?;
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream HTTP/2 connection ended");
            }
        });
        self.h2.store(Some(Arc::new(http2::SendRequest::clone(&sender))));
        Ok(sender)
    }
}

/// Opens a connection within the cluster's limits, offering `alpn` if it is
/// TLS; the permit counts it until the connection ends.
async fn connect(dial: Dial<'_>, alpn: Alpn) -> Result<(MaybeTls, Permit), SendError> {
    let _pending = dial
        .breakers
        .try_acquire(Limit::Pending, dial.limits.max_pending_requests)
        .ok_or(SendError::Overloaded(Limit::Pending))?;
    let permit = dial
        .breakers
        .try_acquire(Limit::Connections, dial.limits.max_connections)
        .ok_or(SendError::Overloaded(Limit::Connections))?;
    let stream = open(dial.addr, dial.transport, dial.tls, dial.connect_timeout, alpn)
        .await
        .map_err(SendError::Connect)?;
    Ok((stream, permit))
}

/// Opens a connection to `addr`: TCP, then for an mTLS endpoint the TLS
/// handshake (client certificate from the current credentials, the server
/// checked against the trust bundle and the allowed identities, `alpn`
/// offered). A TLS failure is logged with its reason and is a connect failure.
pub(crate) async fn open(
    addr: SocketAddr,
    transport: &Transport,
    tls: &TlsContexts,
    timeout: Duration,
    alpn: Alpn,
) -> io::Result<MaybeTls> {
    let target = match transport {
        Transport::Plain => return Ok(MaybeTls::Plain(tcp_connect(addr, timeout).await?)),
        Transport::Tls(target) => target,
        Transport::Invalid(reason) => {
            tracing::warn!(endpoint = %addr, reason, "mTLS endpoint with unusable TLS settings");
            return Err(io::Error::other(format!("mTLS to {addr}: {reason}")));
        }
    };
    let config = tls.client(&target.allowed, alpn).map_err(|error| {
        tracing::warn!(endpoint = %addr, %error, "no TLS config for an mTLS endpoint");
        io::Error::other(format!("mTLS to {addr}: {error}"))
    })?;
    let tcp = tcp_connect(addr, timeout).await?;
    connect_tls(tcp, config, target, timeout).await.inspect_err(|error| {
        tracing::warn!(
            endpoint = %addr,
            sni = ?target.server_name,
            allowed = ?target.allowed,
            %error,
            "upstream TLS handshake failed"
        );
    })
}

/// A TCP connection with `TCP_NODELAY`, or a timeout error.
pub(crate) async fn tcp_connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out")))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}
