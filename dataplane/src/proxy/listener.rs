//! The listener manager: binds, keeps, rebinds and drains listeners as the
//! config changes, accepts connections, and hands each to the filter chain
//! its (original) destination, and for TLS its SNI, selects.
//!
//! A listener whose address is unchanged keeps its socket; new connections
//! see its new chains; established ones keep theirs if unchanged, and drain
//! (`DRAIN_TIMEOUT`) if their chain was changed or removed, as in Envoy, so
//! that new RBAC rules or routes reach every request. A listener that moves
//! is rebound and its established connections go on the same way. A removed
//! listener stops accepting and its connections drain.
//!
//! With a TLS inspector (or a chain that matches on SNI or on `tls`), a
//! connection's first bytes are read before the chain is chosen: a TLS
//! ClientHello gives the SNI and ALPN offers; anything else is `raw_buffer`.
//! A chain with TLS completes the handshake with the current credentials,
//! and the peer's SPIFFE ID goes with the connection to RBAC and metrics.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::authz;
use super::http::{self, DRAIN_TIMEOUT, Drain, HttpConn};
use super::io::Counted;
use super::route::IndexedTable;
use super::runtime::Shared;
use super::tcp;
use super::tls::{INSPECT_TIMEOUT, Inspected, Rewind, inspect};
use crate::config::rbac::Rbac;
use crate::config::{ChainKind, Config, DownstreamTls, FilterChain, Listener, RouteSource, TcpProxy};
use crate::metrics::Direction;
use crate::trace::{Exporters, HttpTracer};

/// Longest pause between bind attempts.
const MAX_BIND_BACKOFF: Duration = Duration::from_secs(5);

/// A filter chain ready to serve.
#[derive(Debug)]
pub(crate) struct ChainCtx {
    /// Chain name.
    pub(crate) name: String,
    /// Its listener's direction.
    pub(crate) direction: Direction,
    /// TLS termination.
    pub(crate) tls: Option<DownstreamTls>,
    /// Network RBAC, checked once per connection.
    pub(crate) network_rbac: Option<Arc<Rbac>>,
    /// HTTP RBAC, checked per request.
    pub(crate) http_rbac: Option<Arc<Rbac>>,
    /// The destination port RBAC sees, when the chain says it (see [`chain_port`]).
    pub(crate) port: Option<u16>,
    /// What it does.
    pub(crate) kind: ChainKindCtx,
    /// Spans per request, when the HTTP connection manager traces.
    pub(crate) tracer: Option<HttpTracer>,
    /// The config it was built from (to tell whether an update changed it).
    spec: FilterChain,
    /// Turned true when an update replaces or removes the chain.
    drain: watch::Sender<bool>,
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

/// What the data path knows of a downstream connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Downstream {
    /// The connection is TLS (terminated by the proxy).
    pub(crate) tls: bool,
    /// The peer's SPIFFE ID, from its client certificate.
    pub(crate) peer: Option<Arc<str>>,
    /// The destination port for RBAC.
    pub(crate) port: u16,
    /// The peer's address (for tap).
    pub(crate) remote: Option<SocketAddr>,
    /// The (original) destination address (for tap).
    pub(crate) local: Option<SocketAddr>,
}

impl ChainCtx {
    fn new(listener: &Listener, chain: &FilterChain, exporters: &Exporters) -> Arc<ChainCtx> {
        let direction = Direction::of_listener(&listener.name);
        let tracer = match &chain.kind {
            ChainKind::Http(manager) => manager.tracing.as_ref().and_then(|t| {
                let exporter = exporters.get(&t.collector_cluster)?;
                Some(HttpTracer::new(Arc::clone(t), direction, Arc::clone(exporter)))
            }),
            ChainKind::Tcp(_) => None,
        };
        let (kind, http_rbac) = match &chain.kind {
            ChainKind::Http(manager) => {
                let routes = match &manager.routes {
                    RouteSource::Rds(name) => RoutesCtx::Rds(name.clone()),
                    RouteSource::Inline(table) => RoutesCtx::Inline(IndexedTable::new(Arc::clone(table))),
                };
                (ChainKindCtx::Http(routes), manager.rbac.clone())
            }
            ChainKind::Tcp(proxy) => (ChainKindCtx::Tcp(proxy.clone()), None),
        };
        Arc::new(ChainCtx {
            name: chain.name.clone(),
            direction,
            tls: chain.tls.clone(),
            network_rbac: chain.rbac.clone(),
            http_rbac,
            port: chain_port(chain),
            kind,
            tracer,
            spec: chain.clone(),
            drain: watch::channel(false).0,
        })
    }
}

/// The destination port RBAC checks on a chain: the workload port of an
/// inbound chain named `inbound|<port>|...` (Envoy's naming, which weft's
/// control plane uses: mesh traffic arrives on the proxy's inbound port, and
/// the SNI chose the chain), else the chain's own destination port match;
/// `None` leaves it to the connection's (original) destination.
pub(crate) fn chain_port(chain: &FilterChain) -> Option<u16> {
    let named = chain.name.strip_prefix("inbound|").and_then(|rest| rest.split('|').next()?.parse().ok());
    named.or(chain.destination_port)
}

/// A listener's chains, as its accept loop uses them.
#[derive(Debug)]
struct Chains {
    spec: Arc<Listener>,
    chains: Vec<Arc<ChainCtx>>,
    default: Option<Arc<ChainCtx>>,
    /// Read the start of each connection before choosing: the listener has a
    /// TLS inspector, or a chain needs what it finds (as Envoy adds one then).
    inspect: bool,
}

impl Chains {
    /// The chains of `spec`, keeping those of `previous` (the same listener's)
    /// that did not change, with their connections.
    fn new(spec: &Arc<Listener>, previous: Option<&Chains>, exporters: &Exporters) -> Chains {
        let needs_inspector = spec
            .chains
            .iter()
            .any(|c| !c.server_names.is_empty() || c.transport_protocol.as_deref() == Some("tls"));
        let ctx = |chain: &FilterChain| {
            let kept = previous.and_then(|p| p.all().find(|old| old.spec == *chain));
            kept.map_or_else(|| ChainCtx::new(spec, chain, exporters), Arc::clone)
        };
        Chains {
            spec: Arc::clone(spec),
            chains: spec.chains.iter().map(ctx).collect(),
            default: spec.default_chain.as_ref().map(ctx),
            inspect: spec.tls_inspector || needs_inspector,
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<ChainCtx>> {
        self.chains.iter().chain(self.default.as_ref())
    }

    /// Drains the connections of the chains that `next` does not keep.
    fn drain_replaced(&self, next: &Chains) {
        for old in self.all() {
            if !next.all().any(|new| Arc::ptr_eq(new, old)) {
                tracing::debug!(chain = %old.name, "filter chain changed or removed; draining its connections");
                old.drain.send_replace(true);
            }
        }
    }

    fn select(&self, destination: Option<SocketAddr>, seen: &Inspected) -> Option<&Arc<ChainCtx>> {
        destination
            .and_then(|d| select_chain(&self.spec.chains, d, seen))
            .and_then(|i| self.chains.get(i))
            .or(self.default.as_ref())
    }
}

/// Envoy's filter chain match, one criterion after the other, each keeping
/// only its most specific matches among what the previous one kept (no
/// backtracking): destination port (chains naming it, if any does, else
/// chains without a port); longest matching destination prefix (no prefix
/// matches anything, least specifically); SNI (exact, then the longest
/// `*.` suffix, then chains without server names); transport protocol (the
/// one detected, then chains without one). The first chain left wins.
pub(crate) fn select_chain(
    chains: &[FilterChain],
    destination: SocketAddr,
    seen: &Inspected,
) -> Option<usize> {
    let port = destination.port();
    let wanted = chains.iter().any(|c| c.destination_port == Some(port)).then_some(port);
    let ip = destination.ip().to_canonical();
    let by_port: Vec<usize> = (0..chains.len()).filter(|&i| chains[i].destination_port == wanted).collect();
    let by_prefix = most_specific(chains, by_port, |c| prefix_specificity(c, ip));
    let by_name =
        most_specific(chains, by_prefix, |c| server_name_specificity(c, seen.server_name.as_deref()));
    let transport = if seen.tls { "tls" } else { "raw_buffer" };
    let by_transport = most_specific(chains, by_name, |c| match c.transport_protocol.as_deref() {
        None => Some(0),
        Some(p) if p == transport => Some(1),
        Some(_) => None,
    });
    by_transport.first().copied()
}

/// The candidates that match (`score` is `Some`) with the highest score.
fn most_specific(
    chains: &[FilterChain],
    candidates: Vec<usize>,
    score: impl Fn(&FilterChain) -> Option<i32>,
) -> Vec<usize> {
    let scored: Vec<(usize, i32)> =
        candidates.into_iter().filter_map(|i| score(&chains[i]).map(|s| (i, s))).collect();
    let best = scored.iter().map(|(_, s)| *s).max();
    scored.into_iter().filter(|(_, s)| Some(*s) == best).map(|(i, _)| i).collect()
}

fn prefix_specificity(chain: &FilterChain, ip: IpAddr) -> Option<i32> {
    if chain.destination_prefixes.is_empty() {
        return Some(-1);
    }
    chain
        .destination_prefixes
        .iter()
        .filter(|(net, len)| prefix_contains(*net, *len, ip))
        .map(|(_, len)| i32::from(*len))
        .max()
}

/// An exact name beats every wildcard; a longer `*.` suffix beats a shorter
/// one; a chain without names matches any connection, least specifically.
fn server_name_specificity(chain: &FilterChain, sni: Option<&str>) -> Option<i32> {
    if chain.server_names.is_empty() {
        return Some(0);
    }
    let sni = sni?;
    chain
        .server_names
        .iter()
        .filter_map(|name| match name.strip_prefix('*') {
            None => (name == sni).then_some(i32::MAX),
            // `*.b.c` matches `a.b.c` and `x.a.b.c`, not `b.c`.
            Some(suffix) => (sni.len() > suffix.len() && sni.ends_with(suffix))
                .then(|| i32::try_from(suffix.len()).unwrap_or(i32::MAX - 1)),
        })
        .max()
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
    /// Span exporters, one per trace collector cluster.
    exporters: Exporters,
}

impl Listeners {
    /// No listeners yet.
    pub(crate) fn new(shared: Arc<Shared>) -> Listeners {
        Listeners { shared, running: HashMap::new(), exporters: Exporters::default() }
    }

    /// Serves `config`'s listeners: stops and drains removed ones, swaps the
    /// chains of those whose address is unchanged, rebinds those that moved,
    /// binds new ones (after the old sockets are closed).
    pub(crate) async fn update(&mut self, config: &Config) {
        self.exporters.update(config);
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
                    let old = running.chains.load_full();
                    let next = Arc::new(Chains::new(spec, Some(&old), &self.exporters));
                    running.chains.store(Arc::clone(&next));
                    old.drain_replaced(&next);
                    running.spec = Arc::clone(spec);
                    tracing::info!(listener = %name, "listener updated in place");
                    self.running.insert(name.clone(), running);
                }
                Some(running) => {
                    stop_accepting(running.accept).await;
                    tracing::info!(listener = %name, from = %running.spec.addr, to = %spec.addr, "listener moved");
                    start.push((spec, Some((running.drain, running.chains.load_full()))));
                }
                None => start.push((spec, None)),
            }
        }
        for (spec, moved) in start {
            let (drain, old) = moved.unzip();
            let next = Arc::new(Chains::new(spec, old.as_deref(), &self.exporters));
            if let Some(old) = &old {
                old.drain_replaced(&next);
            }
            let chains = Arc::new(ArcSwap::new(next));
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
    let chains = chains.load_full();
    let _ = stream.set_nodelay(true);
    let shared = Arc::clone(shared);
    let span = tracing::debug_span!("conn", %peer);
    tokio::spawn(serve(shared, chains, stream, drain).instrument(span));
}

/// Inspects a connection if its listener says so, picks its chain, and
/// serves it: TLS handshake first on a TLS chain.
async fn serve(
    shared: Arc<Shared>,
    chains: Arc<Chains>,
    mut stream: TcpStream,
    drain: watch::Receiver<bool>,
) {
    let destination = destination(&stream, chains.spec.original_dst);
    let remote = stream.peer_addr().ok();
    let (seen, prefix) = if chains.inspect {
        match inspect(&mut stream).await {
            Ok(inspected) => inspected,
            Err(error) => {
                tracing::debug!(%error, "TLS inspector: closing");
                return;
            }
        }
    } else {
        (Inspected::default(), Vec::new())
    };
    let Some(chain) = chains.select(destination, &seen).map(Arc::clone) else {
        tracing::debug!(
            ?destination,
            tls = seen.tls,
            sni = seen.server_name.as_deref().unwrap_or(""),
            "no filter chain matches; closing"
        );
        return;
    };
    tracing::debug!(chain = %chain.name, tls = seen.tls, "filter chain selected");
    let drain = Drain { listener: drain, chain: chain.drain.subscribe() };
    let metrics = shared.metrics.tcp(chain.direction);
    metrics.open.inc();
    let io = Counted::new(Rewind::new(prefix, stream), metrics);
    let port = chain.port.or(destination.map(|d| d.port())).unwrap_or(0);
    let Some(tls) = &chain.tls else {
        let downstream = Downstream { tls: false, peer: None, port, remote, local: destination };
        return serve_chain(shared, chain, io, downstream, false, drain).await;
    };
    let config = match shared.tls.server(tls) {
        Ok(config) => config,
        Err(error) => {
            tracing::warn!(chain = %chain.name, %error, "cannot terminate TLS; closing");
            return;
        }
    };
    let stream = match tokio::time::timeout(INSPECT_TIMEOUT, TlsAcceptor::from(config).accept(io)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(chain = %chain.name, %error, "downstream TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(chain = %chain.name, "downstream TLS handshake timed out");
            return;
        }
    };
    let (_, session) = stream.get_ref();
    let peer = match session.peer_certificates() {
        None => None,
        Some(certs) => match crate::tls::peer_identity(Some(certs)) {
            Ok(id) => Some(Arc::from(id.to_string())),
            Err(error) => {
                tracing::debug!(%error, "client certificate without a SPIFFE ID");
                None
            }
        },
    };
    let h2 = session.alpn_protocol() == Some(b"h2".as_slice());
    let downstream = Downstream { tls: true, peer, port, remote, local: destination };
    serve_chain(shared, chain, stream, downstream, h2, drain).await;
}

/// Runs a chain's filters on a connection: network RBAC, then the HTTP
/// connection manager (HTTP/2 only when TLS negotiated `h2`) or the TCP proxy.
async fn serve_chain<I>(
    shared: Arc<Shared>,
    chain: Arc<ChainCtx>,
    io: I,
    downstream: Downstream,
    h2: bool,
    drain: Drain,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Some(rbac) = &chain.network_rbac
        && let Err(denied) = authz::check_tcp(rbac, downstream.peer.as_deref(), downstream.port)
    {
        let client_id = downstream.peer.as_deref().unwrap_or("");
        shared.metrics.authz_denied(false, client_id);
        tracing::debug!(chain = %chain.name, client_id, ?denied, "RBAC: connection denied");
        return;
    }
    match &chain.kind {
        ChainKindCtx::Http(_) => {
            let conn = Arc::new(HttpConn { shared, chain: Arc::clone(&chain), downstream });
            http::serve(io, conn, h2, drain).await;
        }
        ChainKindCtx::Tcp(proxy) => tcp::proxy(&shared, proxy, io, drain).await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{TcpProxy, WeightedCluster};

    fn chain(name: &str, port: Option<u16>, prefixes: &[(&str, u8)]) -> FilterChain {
        named_chain(name, port, prefixes, &[], None)
    }

    fn named_chain(
        name: &str,
        port: Option<u16>,
        prefixes: &[(&str, u8)],
        server_names: &[&str],
        transport: Option<&str>,
    ) -> FilterChain {
        FilterChain {
            name: name.into(),
            destination_port: port,
            destination_prefixes: prefixes.iter().map(|(ip, len)| (ip.parse().unwrap(), *len)).collect(),
            server_names: server_names.iter().map(|n| n.to_string()).collect(),
            transport_protocol: transport.map(str::to_string),
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
        let pick = |dest: &str| {
            select_chain(&chains, dest.parse().unwrap(), &Inspected::default())
                .map(|i| chains[i].name.as_str())
        };
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
    fn tls_chains_are_chosen_by_sni_then_transport() {
        let chains = vec![
            named_chain("web", None, &[], &["outbound_.80_._.web.shop.svc.cluster.local"], Some("tls")),
            named_chain("api", None, &[], &["outbound_.8080_._.api.shop.svc.cluster.local"], Some("tls")),
            named_chain("wild", None, &[], &["*.shop.svc.cluster.local"], Some("tls")),
            named_chain("wilder", None, &[], &["*.svc.cluster.local"], None),
            named_chain("any-tls", None, &[], &[], Some("tls")),
            named_chain("plain", None, &[], &[], Some("raw_buffer")),
        ];
        let tls =
            |sni: Option<&str>| Inspected { tls: true, server_name: sni.map(str::to_string), alpn: vec![] };
        let dest: SocketAddr = "127.0.0.1:4143".parse().unwrap();
        let pick = |seen: Inspected| select_chain(&chains, dest, &seen).map(|i| chains[i].name.as_str());
        assert_eq!(pick(tls(Some("outbound_.80_._.web.shop.svc.cluster.local"))), Some("web"));
        assert_eq!(pick(tls(Some("outbound_.8080_._.api.shop.svc.cluster.local"))), Some("api"));
        assert_eq!(pick(tls(Some("other.shop.svc.cluster.local"))), Some("wild"));
        assert_eq!(pick(tls(Some("db.pay.svc.cluster.local"))), Some("wilder"));
        assert_eq!(pick(tls(Some("svc.cluster.local"))), Some("any-tls"));
        assert_eq!(pick(tls(Some("example.com"))), Some("any-tls"));
        assert_eq!(pick(tls(None)), Some("any-tls"));
        assert_eq!(pick(Inspected::default()), Some("plain"));
        // Only SNI chains: a plaintext client or an unknown name matches nothing.
        let only_sni = &chains[..2];
        assert_eq!(select_chain(only_sni, dest, &Inspected::default()), None);
        assert_eq!(select_chain(only_sni, dest, &tls(Some("example.com"))), None);
        // A named chain that does not say `tls` still takes only what its names match.
        let mixed = vec![named_chain("sni", None, &[], &["a.example"], None)];
        assert_eq!(select_chain(&mixed, dest, &tls(Some("a.example"))), Some(0));
        assert_eq!(select_chain(&mixed, dest, &Inspected::default()), None);
    }

    #[test]
    fn an_update_keeps_unchanged_chains_and_drains_the_others() {
        let listener = |chains: Vec<FilterChain>| {
            Arc::new(Listener {
                name: "inbound".into(),
                addr: "127.0.0.1:4143".parse().unwrap(),
                chains,
                default_chain: None,
                original_dst: false,
                tls_inspector: false,
            })
        };
        let first = Chains::new(
            &listener(vec![chain("a", Some(1), &[]), chain("b", Some(2), &[])]),
            None,
            &Exporters::default(),
        );
        let mut changed = chain("b", Some(2), &[]);
        changed.rbac =
            Some(Arc::new(Rbac { action: crate::config::rbac::RbacAction::Allow, policies: vec![] }));
        let second = Chains::new(
            &listener(vec![chain("a", Some(1), &[]), changed]),
            Some(&first),
            &Exporters::default(),
        );
        first.drain_replaced(&second);
        assert!(Arc::ptr_eq(&first.chains[0], &second.chains[0]));
        assert!(!*first.chains[0].drain.borrow());
        assert!(!Arc::ptr_eq(&first.chains[1], &second.chains[1]));
        assert!(*first.chains[1].drain.borrow(), "the replaced chain drains");
        assert!(second.chains[1].http_rbac.is_none() && second.chains[1].network_rbac.is_some());
    }

    #[test]
    fn rbac_sees_the_workload_port_of_an_inbound_chain() {
        assert_eq!(chain_port(&chain("inbound|8080|web.shop|80", None, &[])), Some(8080));
        assert_eq!(chain_port(&chain("inbound|x|web.shop|80", Some(9), &[])), Some(9));
        assert_eq!(chain_port(&chain("outbound", None, &[])), None);
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
