//! TCP proxying through `weft_proxy::proxy::run` on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use proxy_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server that answers after the client's half-close, to prove the
/// half-close is passed on: it reads to EOF, then writes everything back.
async fn echo_after_eof() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut received = Vec::new();
                stream.read_to_end(&mut received).await.unwrap();
                stream.write_all(b"echo:").await.unwrap();
                stream.write_all(&received).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
    });
    addr
}

#[tokio::test]
async fn tcp_passthrough_with_half_close() {
    let backend = echo_after_eof().await;
    let listen = free_addr();
    let proxy = Proxy::start(config(
        vec![tcp_listener("inbound", listen, "echo")],
        vec![],
        vec![cluster("echo", &[backend])],
    ));
    wait_listening(listen).await;

    let payload = vec![7u8; 256 * 1024];
    let mut stream = TcpStream::connect(listen).await.unwrap();
    stream.write_all(&payload).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(patience(), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert_eq!(&answer[..5], b"echo:");
    assert_eq!(answer.len(), 5 + payload.len());

    let metrics = proxy.metrics.encode();
    assert!(metrics.contains(r#"tcp_read_bytes_total{direction="inbound"} 262144"#), "{metrics}");
    // The readiness probe's connection may add its own "echo:".
    let written = metric(&metrics, r#"tcp_write_bytes_total{direction="inbound"}"#).unwrap();
    assert!(written >= (5 + payload.len()) as f64, "{metrics}");
    proxy.stop().await;
}

#[tokio::test]
async fn tcp_connect_failure_closes_the_downstream_connection() {
    let dead = free_addr();
    let listen = free_addr();
    let proxy = Proxy::start(config(
        vec![tcp_listener("outbound", listen, "dead")],
        vec![],
        vec![cluster("dead", &[dead])],
    ));
    wait_listening(listen).await;
    let mut stream = TcpStream::connect(listen).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(patience(), stream.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "closed without data");
    proxy.stop().await;
}
