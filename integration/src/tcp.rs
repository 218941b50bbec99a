//! An opaque TCP app: an echo server that sends back every byte it reads and, once the
//! client half-closes, finishes sending and half-closes too, so a test sees whether a
//! proxy in between carries data and FINs both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A running echo server; it stops (listener and every connection) when dropped.
#[derive(Debug)]
pub struct TcpEcho {
    addr: SocketAddr,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Stats {
    accepted: AtomicU64,
    echoed_bytes: AtomicU64,
    /// Connections whose client half-closed and which the server then closed cleanly.
    half_closed: AtomicU64,
}

impl TcpEcho {
    /// Listens on `addr` (port 0 picks one; see [`TcpEcho::addr`]).
    pub async fn start(addr: SocketAddr) -> anyhow::Result<TcpEcho> {
        let listener =
            TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("TCP echo: binding {addr}: {e}"))?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(serve(listener, stats.clone()));
        Ok(TcpEcho { addr, stats, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Bytes echoed so far.
    pub fn echoed_bytes(&self) -> u64 {
        self.stats.echoed_bytes.load(Ordering::SeqCst)
    }

    /// Connections that ended with the client's half-close (EOF) and the server's answer to it.
    pub fn half_closed(&self) -> u64 {
        self.stats.half_closed.load(Ordering::SeqCst)
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, stats: Arc<Stats>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                stats.accepted.fetch_add(1, Ordering::SeqCst);
                connections.spawn(echo(stream, stats.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn echo(mut stream: TcpStream, stats: Arc<Stats>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => {
                if stream.shutdown().await.is_ok() {
                    stats.half_closed.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                stats.echoed_bytes.fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(_) => return,
        }
    }
}

/// Reads exactly `n` bytes from `stream` within `timeout`.
pub async fn read_exactly(stream: &mut TcpStream, n: usize, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(timeout, stream.read_exact(&mut buf))
        .await
        .map_err(|_| anyhow::anyhow!("{n} bytes did not arrive within {timeout:?}"))??;
    Ok(buf)
}

/// Reads until EOF within `timeout`: what a half-closed peer sent last.
pub async fn read_to_eof(stream: &mut TcpStream, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    tokio::time::timeout(timeout, stream.read_to_end(&mut buf))
        .await
        .map_err(|_| anyhow::anyhow!("no EOF within {timeout:?} (got {} bytes)", buf.len()))??;
    Ok(buf)
}
