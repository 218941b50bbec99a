//! Listener lifecycle through `weft_proxy::proxy::run`: listeners added,
//! changed, moved and removed live, with established connections kept or
//! drained.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use proxy_support::*;
use weft_proxy::config::*;

/// One downstream keep-alive connection, to tell whether it survives.
struct Conn {
    sender: http1::SendRequest<BoxBody>,
    closed: tokio::task::JoinHandle<()>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        let closed = tokio::spawn(async move {
            let _ = connection.await;
        });
        Conn { sender, closed }
    }

    async fn get(&mut self, host: &str) -> (StatusCode, String) {
        self.sender.ready().await.unwrap();
        let req = Request::get("/").header("host", host).body(full("")).unwrap();
        let response = self.sender.send_request(req).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn web(cluster_name: &str) -> VirtualHost {
    vhost("web", &["web"], vec![route("/", Action::Forward(forward(&[(cluster_name, 1)])))])
}

async fn refused(addr: SocketAddr) -> Option<()> {
    tokio::net::TcpStream::connect(addr).await.is_err().then_some(())
}

#[tokio::test]
async fn listeners_are_added_and_removed_live_and_unchanged_ones_keep_their_connections() {
    let one = Backend::named("one").await;
    let two = Backend::named("two").await;
    let (a, b) = (free_addr(), free_addr());
    let clusters = || vec![cluster("one", &[one.addr]), cluster("two", &[two.addr])];
    let proxy = Proxy::start(config(vec![http_listener("a", a, "routes")], vec![web("one")], clusters()));
    wait_listening(a).await;
    let mut kept = Conn::open(a).await;
    assert_eq!(kept.get("web").await.1, "one");

    // Add b and reroute: a is unchanged, so its socket and connection stay.
    proxy.update(config(
        vec![http_listener("a", a, "routes"), http_listener("b", b, "routes")],
        vec![web("two")],
        clusters(),
    ));
    wait_listening(b).await;
    let mut on_b = Conn::open(b).await;
    assert_eq!(on_b.get("web").await.1, "two");
    assert_eq!(kept.get("web").await.1, "two", "the established connection serves the new routes");

    // Remove a: it stops accepting, b goes on.
    proxy.update(config(vec![http_listener("b", b, "routes")], vec![web("two")], clusters()));
    eventually("the removed listener to refuse connections", || refused(a)).await;
    assert_eq!(on_b.get("web").await.1, "two");
    // The drained idle connection of a is closed.
    tokio::time::timeout(patience(), kept.closed).await.unwrap().unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn a_removed_listener_lets_its_request_in_flight_finish() {
    let slow = Backend::spawn(|_req: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        Response::new(full("slow"))
    })
    .await;
    let a = free_addr();
    let proxy = Proxy::start(config(
        vec![http_listener("a", a, "routes")],
        vec![web("slow")],
        vec![cluster("slow", &[slow.addr])],
    ));
    wait_listening(a).await;
    let mut conn = Conn::open(a).await;
    let in_flight = tokio::spawn(async move { conn.get("web").await });
    eventually("the request to reach the backend", || {
        let n = slow.requests.load(Ordering::SeqCst);
        async move { (n == 1).then_some(()) }
    })
    .await;
    proxy.update(config(vec![], vec![web("slow")], vec![cluster("slow", &[slow.addr])]));
    eventually("the removed listener to refuse connections", || refused(a)).await;
    assert_eq!(in_flight.await.unwrap(), (StatusCode::OK, "slow".to_owned()));
    proxy.stop().await;
}

#[tokio::test]
async fn a_moved_listener_is_rebound_and_its_connections_go_on() {
    let one = Backend::named("one").await;
    let (old_addr, new_addr) = (free_addr(), free_addr());
    let cfg = |addr| {
        config(vec![http_listener("a", addr, "routes")], vec![web("one")], vec![cluster("one", &[one.addr])])
    };
    let proxy = Proxy::start(cfg(old_addr));
    wait_listening(old_addr).await;
    let mut established = Conn::open(old_addr).await;
    assert_eq!(established.get("web").await.1, "one");

    proxy.update(cfg(new_addr));
    wait_listening(new_addr).await;
    eventually("the old address to refuse connections", || refused(old_addr)).await;
    assert_eq!(Conn::open(new_addr).await.get("web").await.1, "one");
    assert_eq!(established.get("web").await.1, "one", "moving the listener did not drop its connection");
    proxy.stop().await;
}

#[tokio::test]
async fn a_bind_failure_is_retried_until_the_address_frees_up() {
    let one = Backend::named("one").await;
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = blocker.local_addr().unwrap();
    let proxy = Proxy::start(config(
        vec![http_listener("a", addr, "routes")],
        vec![web("one")],
        vec![cluster("one", &[one.addr])],
    ));
    // The proxy cannot bind yet; once the blocker goes, it does.
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(blocker);
    wait_listening(addr).await;
    assert_eq!(Conn::open(addr).await.get("web").await.1, "one");
    proxy.stop().await;
}
