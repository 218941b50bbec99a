//! The listener manager: binds, keeps, rebinds and drains listeners as the
//! config changes, accepts connections, and hands each to the filter chain
//! its (original) destination selects.
//!
//! A listener whose address is unchanged keeps its socket; new connections
//! see its new chains, established ones keep theirs. A listener that moves
//! is rebound and its established connections go on. A removed listener
//! stops accepting and its connections drain (`DRAIN_TIMEOUT`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::http::{self, DRAIN_TIMEOUT, HttpConn};
use super::io::Counted;
use super::route::IndexedTable;
use super::runtime::Shared;
use super::tcp;
use crate::config::{ChainKind, Config, FilterChain, Listener, RouteSource, TcpProxy};
use crate::metrics::Direction;

/// Longest pause between bind attempts.
const MAX_BIND_BACKOFF: Duration = Duration::from_secs(5);

/// A filter chain ready to serve.
#[derive(Debug)]
pub(crate) struct ChainCtx {
    /// Chain name.
    pub(crate) name: String,
    /// Its listener's direction.
    pub(crate) direction: Direction,
    /// What it does.
    pub(crate) kind: ChainKindCtx,
}

/// What a chain does.
#[derive(Debug)]
pub(crate) enum ChainKindCtx {
    /// HTTP, routed by these routes.
    Http(RoutesCtx),
    /// TCP proxy.
    Tcp(TcpProxy),
}

/// Where an HTTP chain's routes are.
#[derive(Debug)]
pub(crate) enum RoutesCtx {
    /// An RDS table, looked up per request.
    Rds(String),
    /// Inline, indexed once.
    Inline(IndexedTable),
}

impl ChainCtx {
    fn new(listener: &Listener, chain: &FilterChain) -> Arc<ChainCtx> {
        let kind = match &chain.kind {
            ChainKind::Http(manager) => ChainKindCtx::Http(match &manager.routes {
                RouteSource::Rds(name) => RoutesCtx::Rds(name.clone()),
                RouteSource::Inline(table) => RoutesCtx::Inline(IndexedTable::new(Arc::clone(table))),
            }),
            ChainKind::Tcp(proxy) => ChainKindCtx::Tcp(proxy.clone()),
        };
        Arc::new(ChainCtx {
            name: chain.name.clone(),
            direction: Direction::of_listener(&listener.name),
            kind,
        })
    }
}

/// A listener's chains, as its accept loop uses them.
#[derive(Debug)]
struct Chains {
    spec: Arc<Listener>,
    chains: Vec<Arc<ChainCtx>>,
    default: Option<Arc<ChainCtx>>,
}

impl Chains {
    fn new(spec: &Arc<Listener>) -> Chains {
        Chains {
            spec: Arc::clone(spec),
            chains: spec.chains.iter().map(|c| ChainCtx::new(spec, c)).collect(),
            default: spec.default_chain.as_ref().map(|c| ChainCtx::new(spec, c)),
        }
    }

    fn select(&self, destination: Option<SocketAddr>) -> Option<&Arc<ChainCtx>> {
        destination
            .and_then(|d| select_chain(&self.spec.chains, d))
            .and_then(|i| self.chains.get(i))
            .or(self.default.as_ref())
    }
}

/// Envoy's filter chain match on destination: chains naming the port, if any
/// does, else chains without a port; among them the longest matching prefix
/// (a chain without prefixes matches anything, least specifically).
pub(crate) fn select_chain(chains: &[FilterChain], destination: SocketAddr) -> Option<usize> {
    let port = destination.port();
    let wanted = chains.iter().any(|c| c.destination_port == Some(port)).then_some(port);
    let ip = destination.ip().to_canonical();
    let mut best: Option<(usize, i16)> = None;
    for (i, chain) in chains.iter().enumerate() {
        if chain.destination_port != wanted {
            continue;
        }
        let specificity = if chain.destination_prefixes.is_empty() {
            Some(-1)
        } else {
            chain
                .destination_prefixes
                .iter()
                .filter(|(net, len)| prefix_contains(*net, *len, ip))
                .map(|(_, len)| i16::from(*len))
                .max()
        };
        if let Some(s) = specificity
            && best.is_none_or(|(_, b)| s > b)
        {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

fn prefix_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net.to_canonical(), ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

/// The destination a connection was addressed to: the original destination
/// of a redirected connection when asked (`SO_ORIGINAL_DST`), else the local
/// address.
fn destination(stream: &TcpStream, original_dst: bool) -> Option<SocketAddr> {
    let local = stream.local_addr().ok();
    if original_dst {
        let socket = SockRef::from(stream);
        let original = match local {
            Some(SocketAddr::V6(_)) => socket.original_dst_v6(),
            _ => socket.original_dst_v4(),
        };
        if let Some(addr) = original.ok().and_then(|a| a.as_socket()) {
            return Some(addr);
        }
    }
    local
}

/// A listener being served.
#[derive(Debug)]
struct Running {
    spec: Arc<Listener>,
    chains: Arc<ArcSwap<Chains>>,
    accept: JoinHandle<()>,
    /// Turned true to drain the listener's connections (old and new sockets').
    drain: Arc<watch::Sender<bool>>,
}

/// Every listener being served.
#[derive(Debug)]
pub(crate) struct Listeners {
    shared: Arc<Shared>,
    running: HashMap<String, Running>,
}

impl Listeners {
    /// No listeners yet.
    pub(crate) fn new(shared: Arc<Shared>) -> Listeners {
        Listeners { shared, running: HashMap::new() }
    }

    /// Serves `config`'s listeners: stops and drains removed ones, swaps the
    /// chains of those whose address is unchanged, rebinds those that moved,
    /// binds new ones (after the old sockets are closed).
    pub(crate) async fn update(&mut self, config: &Config) {
        let removed: Vec<String> =
            self.running.keys().filter(|name| !config.listeners.contains_key(*name)).cloned().collect();
        for name in removed {
            if let Some(running) = self.running.remove(&name) {
                stop_accepting(running.accept).await;
                running.drain.send_replace(true);
                tracing::info!(listener = %name, addr = %running.spec.addr, "listener removed; draining");
            }
        }
        let mut start = Vec::new();
        for (name, spec) in &config.listeners {
            match self.running.remove(name) {
                Some(running) if Arc::ptr_eq(&running.spec, spec) || running.spec == *spec => {
                    self.running.insert(name.clone(), running);
                }
                Some(mut running) if running.spec.addr == spec.addr => {
                    running.chains.store(Arc::new(Chains::new(spec)));
                    running.spec = Arc::clone(spec);
                    tracing::info!(listener = %name, "listener updated in place");
                    self.running.insert(name.clone(), running);
                }
                Some(running) => {
                    stop_accepting(running.accept).await;
                    tracing::info!(listener = %name, from = %running.spec.addr, to = %spec.addr, "listener moved");
                    start.push((spec, Some(running.drain)));
                }
                None => start.push((spec, None)),
            }
        }
        for (spec, drain) in start {
            let chains = Arc::new(ArcSwap::from_pointee(Chains::new(spec)));
            let drain = drain.unwrap_or_else(|| Arc::new(watch::channel(false).0));
            let accept = tokio::spawn(
                accept_loop(Arc::clone(&self.shared), spec.addr, Arc::clone(&chains), Arc::clone(&drain))
                    .instrument(tracing::info_span!("listener", name = %spec.name)),
            );
            self.running.insert(spec.name.clone(), Running { spec: Arc::clone(spec), chains, accept, drain });
        }
    }

    /// Stops accepting everywhere and drains every connection, for at most
    /// [`DRAIN_TIMEOUT`] (plus a little for the closes to land).
    pub(crate) async fn shutdown(self) {
        let mut drains = Vec::new();
        for (_, running) in self.running {
            stop_accepting(running.accept).await;
            running.drain.send_replace(true);
            drains.push(running.drain);
        }
        let all_closed = futures::future::join_all(drains.iter().map(|d| d.closed()));
        if tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_millis(500), all_closed).await.is_err() {
            tracing::warn!("shutdown: connections still open after the drain timeout");
        }
    }
}

async fn stop_accepting(accept: JoinHandle<()>) {
    accept.abort();
    // Wait for the task to end, so its socket is closed before a rebind.
    let _ = accept.await;
}

async fn accept_loop(
    shared: Arc<Shared>,
    addr: SocketAddr,
    chains: Arc<ArcSwap<Chains>>,
    drain: Arc<watch::Sender<bool>>,
) {
    let mut backoff = Duration::from_millis(100);
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(error) => {
                tracing::warn!(%addr, %error, retry_in = ?backoff, "bind failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BIND_BACKOFF);
            }
        }
    };
    tracing::info!(%addr, "listening");
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => accept(&shared, &chains, stream, peer, drain.subscribe()),
            Err(error) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn accept(
    shared: &Arc<Shared>,
    chains: &ArcSwap<Chains>,
    stream: TcpStream,
    peer: SocketAddr,
    drain: watch::Receiver<bool>,
) {
    let chains = chains.load();
    let destination = destination(&stream, chains.spec.original_dst);
    let Some(chain) = chains.select(destination).map(Arc::clone) else {
        tracing::debug!(%peer, ?destination, "no filter chain matches; closing");
        return;
    };
    let _ = stream.set_nodelay(true);
    let metrics = shared.metrics.tcp(chain.direction);
    metrics.open.inc();
    let io = Counted::new(stream, metrics);
    let shared = Arc::clone(shared);
    let span = tracing::debug_span!("conn", %peer, chain = %chain.name);
    tokio::spawn(
        async move {
            match &chain.kind {
                ChainKindCtx::Http(_) => {
                    let conn = Arc::new(HttpConn { shared, chain: Arc::clone(&chain) });
                    http::serve(io, conn, drain).await;
                }
                ChainKindCtx::Tcp(proxy) => tcp::proxy(&shared, proxy, io, drain).await,
            }
        }
        .instrument(span),
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{TcpProxy, WeightedCluster};

    fn chain(name: &str, port: Option<u16>, prefixes: &[(&str, u8)]) -> FilterChain {
        FilterChain {
            name: name.into(),
            destination_port: port,
            destination_prefixes: prefixes.iter().map(|(ip, len)| (ip.parse().unwrap(), *len)).collect(),
            server_names: vec![],
            transport_protocol: None,
            tls: None,
            rbac: None,
            kind: ChainKind::Tcp(TcpProxy {
                stat_prefix: name.into(),
                clusters: vec![WeightedCluster { name: "c".into(), weight: 1 }],
            }),
        }
    }

    #[test]
    fn chains_are_chosen_by_port_then_longest_prefix() {
        let chains = vec![
            chain("any", None, &[]),
            chain("ten", None, &[("10.0.0.0", 8)]),
            chain("ten-one", None, &[("10.1.0.0", 16)]),
            chain("port-80", Some(80), &[]),
            chain("port-80-svc", Some(80), &[("10.96.0.10", 32)]),
            chain("port-443-only-ten", Some(443), &[("10.0.0.0", 8)]),
            chain("v6", None, &[("fd00::", 8)]),
        ];
        let pick = |dest: &str| select_chain(&chains, dest.parse().unwrap()).map(|i| chains[i].name.as_str());
        for (dest, want) in [
            ("192.168.1.1:8080", Some("any")),
            ("10.2.3.4:8080", Some("ten")),
            ("10.1.3.4:8080", Some("ten-one")),
            ("10.1.3.4:80", Some("port-80")),
            ("10.96.0.10:80", Some("port-80-svc")),
            ("10.1.1.1:443", Some("port-443-only-ten")),
            // A port bucket exists but nothing in it matches: no fallback.
            ("192.168.1.1:443", None),
            ("[fd12::1]:9000", Some("v6")),
            ("[::ffff:10.1.0.1]:9000", Some("ten-one")),
        ] {
            assert_eq!(pick(dest), want, "destination {dest}");
        }
    }

    #[test]
    fn prefixes_compare_masked_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(prefix_contains(ip("10.0.0.0"), 8, ip("10.255.0.1")));
        assert!(!prefix_contains(ip("10.0.0.0"), 8, ip("11.0.0.1")));
        assert!(prefix_contains(ip("0.0.0.0"), 0, ip("1.2.3.4")));
        assert!(prefix_contains(ip("127.0.0.1"), 32, ip("127.0.0.1")));
        assert!(!prefix_contains(ip("0.0.0.0"), 0, ip("::1")));
    }
}
