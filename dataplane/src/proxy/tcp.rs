//! The TCP proxy: weighted cluster, endpoint, connect with the cluster's
//! timeout (over mTLS, without ALPN, when the endpoint asks for it), then
//! bytes both ways until both sides have closed (a half-close is passed on,
//! not treated as the end).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::balancer::Tried;
use super::cluster::Limit;
use super::http::{DRAIN_TIMEOUT, Drain};
use super::pool;
use super::route;
use super::runtime::Shared;
use super::tls::Alpn;
use crate::config::TcpProxy;

/// Proxies one downstream connection as `tcp` says. When `drain` turns true
/// the connection gets [`DRAIN_TIMEOUT`] to end by itself, then is closed.
pub(crate) async fn proxy<I>(shared: &Shared, tcp: &TcpProxy, mut downstream: I, mut drain: Drain)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let runtime = shared.runtime.load_full();
    let Some(picked) = route::pick_cluster(&tcp.clusters) else {
        tracing::debug!("TCP proxy without clusters");
        return;
    };
    let Some(cluster) = runtime.clusters.get(picked.name.as_str()).map(Arc::clone) else {
        tracing::debug!(cluster = %picked.name, "TCP proxy: cluster not found");
        return;
    };
    drop(runtime);
    let Some(in_flight) = cluster.pick(&mut Tried::default()) else {
        tracing::debug!(cluster = %cluster.spec.name, "TCP proxy: no healthy upstream");
        return;
    };
    let Some(_connection) =
        cluster.shared.breakers.try_acquire(Limit::Connections, cluster.spec.limits.max_connections)
    else {
        tracing::debug!(cluster = %cluster.spec.name, "TCP proxy: upstream overloaded");
        return;
    };
    let endpoint = in_flight.endpoint();
    let addr = endpoint.addr;
    let connect_timeout = cluster.spec.connect_timeout;
    let mut upstream = match pool::open(addr, &endpoint.transport, &shared.tls, connect_timeout, Alpn::None)
        .await
    {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::debug!(cluster = %cluster.spec.name, endpoint = %addr, %error, "TCP proxy: connect failed");
            return;
        }
    };
    let drained = async {
        drain.signaled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut downstream, &mut upstream) => match copied {
            Ok((up, down)) => tracing::debug!(endpoint = %addr, up, down, "TCP proxy: closed"),
            Err(error) => tracing::debug!(endpoint = %addr, %error, "TCP proxy: ended"),
        },
        () = drained => tracing::debug!(endpoint = %addr, "TCP proxy: drain timeout"),
    }
}
