//! A cluster at run time: its endpoints with their connection pools and
//! in-flight counts, its balancer, and its circuit breakers.
//!
//! A [`ClusterState`] belongs to one config generation, but what must
//! survive an update (pools, counters, the round-robin cursor) is shared by
//! name and address from the previous generation, so an EDS update keeps
//! warm connections and in-flight counts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::client::conn::http1;

use super::balancer::{Balancer, Tried};
use super::body::RequestBody;
use super::pool::Pool;
use super::tls::TlsTarget;
use crate::config::{Cluster, ClusterEndpoints, Endpoint, UpstreamProtocol, UpstreamTls};

/// Counters of a cluster's circuit breakers.
#[derive(Debug, Default)]
pub(crate) struct Breakers {
    connections: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
}

/// Which breaker a [`Permit`] holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    /// Open upstream connections.
    Connections,
    /// Requests waiting for a connection.
    Pending,
    /// Requests in flight.
    Requests,
}

impl Breakers {
    fn counter(&self, limit: Limit) -> &AtomicU32 {
        match limit {
            Limit::Connections => &self.connections,
            Limit::Pending => &self.pending,
            Limit::Requests => &self.requests,
        }
    }

    /// Takes one unit of `limit` if fewer than `max` are taken.
    pub(crate) fn try_acquire(self: &Arc<Self>, limit: Limit, max: u32) -> Option<Permit> {
        let counter = self.counter(limit);
        if counter.fetch_add(1, Ordering::AcqRel) >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Permit { breakers: Arc::clone(self), limit })
    }

    /// The units of `limit` taken now.
    #[cfg(test)]
    pub(crate) fn taken(&self, limit: Limit) -> u32 {
        self.counter(limit).load(Ordering::Acquire)
    }
}

/// One unit of a breaker, given back on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    breakers: Arc<Breakers>,
    limit: Limit,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.breakers.counter(self.limit).fetch_sub(1, Ordering::AcqRel);
    }
}

/// What outlives config generations for a cluster of one name.
#[derive(Debug)]
pub(crate) struct ClusterShared {
    /// Circuit breaker counters.
    pub(crate) breakers: Arc<Breakers>,
    /// Round-robin position.
    pub(crate) cursor: AtomicUsize,
    /// The settings its pools were made with; a change starts afresh.
    protocol: UpstreamProtocol,
    connect_timeout: Duration,
}

/// How an endpoint is dialled: plaintext, mTLS to this target, or not at
/// all because its TLS settings are unusable (each dial fails, saying why).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Transport {
    /// Plaintext TCP.
    Plain,
    /// mTLS.
    Tls(TlsTarget),
    /// TLS was asked for, but its SNI or identities are invalid.
    Invalid(String),
}

impl Transport {
    /// The transport of `endpoint` in a cluster with `tls`: mTLS when the
    /// cluster has TLS and the endpoint asks for it (or every endpoint does).
    pub(crate) fn of(tls: Option<&UpstreamTls>, endpoint: &Endpoint) -> Transport {
        match tls {
            Some(tls) if endpoint.mtls || tls.all_endpoints => {
                match TlsTarget::new(
                    endpoint.addr,
                    &tls.sni,
                    endpoint.identity.as_deref(),
                    &tls.allowed_identities,
                ) {
                    Ok(target) => Transport::Tls(target),
                    Err(reason) => Transport::Invalid(reason),
                }
            }
            _ => Transport::Plain,
        }
    }
}

/// One upstream endpoint: its address, transport, requests in flight and pool.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// Where to connect.
    pub(crate) addr: SocketAddr,
    /// How (part of the pool's identity: a change starts a new pool).
    pub(crate) transport: Transport,
    /// Requests in flight (least request).
    in_flight: AtomicU32,
    /// Keep-alive connections.
    pub(crate) pool: Pool,
}

impl EndpointState {
    fn new(addr: SocketAddr, transport: Transport) -> EndpointState {
        EndpointState { addr, transport, in_flight: AtomicU32::new(0), pool: Pool::new() }
    }

    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A cluster in one config generation.
#[derive(Debug)]
pub(crate) struct ClusterState {
    /// Its config.
    pub(crate) spec: Arc<Cluster>,
    /// The endpoints it was built from (to tell whether they changed).
    source: Option<Arc<ClusterEndpoints>>,
    /// State shared across generations.
    pub(crate) shared: Arc<ClusterShared>,
    /// Healthy endpoints.
    pub(crate) endpoints: Vec<Arc<EndpointState>>,
    balancer: Balancer,
}

impl ClusterState {
    /// Builds the state of `spec` with `endpoints`, keeping what it can of
    /// `previous` (the same cluster name in the previous generation).
    pub(crate) fn build(
        spec: &Arc<Cluster>,
        endpoints: Option<&Arc<ClusterEndpoints>>,
        previous: Option<&Arc<ClusterState>>,
    ) -> Arc<ClusterState> {
        if let Some(previous) = previous
            && Arc::ptr_eq(&previous.spec, spec)
            && match (&previous.source, endpoints) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        {
            return Arc::clone(previous);
        }
        let previous = previous.filter(|p| {
            p.shared.protocol == spec.protocol && p.shared.connect_timeout == spec.connect_timeout
        });
        let shared = match previous {
            Some(p) => Arc::clone(&p.shared),
            None => Arc::new(ClusterShared {
                breakers: Arc::default(),
                cursor: AtomicUsize::new(0),
                protocol: spec.protocol,
                connect_timeout: spec.connect_timeout,
            }),
        };
        // Pools are kept by address and transport: TLS and plaintext
        // connections (or TLS with other expectations) never mix.
        let known: HashMap<(SocketAddr, &Transport), &Arc<EndpointState>> = previous
            .map(|p| p.endpoints.iter().map(|e| ((e.addr, &e.transport), e)).collect())
            .unwrap_or_default();
        let list = endpoints.map(|e| e.endpoints.as_slice()).unwrap_or_default();
        let states = list
            .iter()
            .map(|e| {
                let transport = Transport::of(spec.tls.as_ref(), e);
                match known.get(&(e.addr, &transport)) {
                    Some(state) => Arc::clone(state),
                    None => Arc::new(EndpointState::new(e.addr, transport)),
                }
            })
            .collect();
        let weights: Vec<u32> = list.iter().map(|e| e.weight).collect();
        Arc::new(ClusterState {
            spec: Arc::clone(spec),
            source: endpoints.cloned(),
            shared,
            endpoints: states,
            balancer: Balancer::new(spec.lb, &weights),
        })
    }

    /// Picks an endpoint not yet `tried` (when there is one), marks it and
    /// counts a request in flight on it until the guard drops.
    pub(crate) fn pick(&self, tried: &mut Tried) -> Option<InFlight> {
        let eps = &self.endpoints;
        let index = self.balancer.pick(
            &self.shared.cursor,
            *tried,
            |i| eps[i].in_flight(),
            |n| rand::random_range(0..n),
        )?;
        tried.mark(index);
        let endpoint = Arc::clone(eps.get(index)?);
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(endpoint))
    }
}

/// A request in flight on an endpoint.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<EndpointState>);

impl InFlight {
    /// The endpoint.
    pub(crate) fn endpoint(&self) -> &Arc<EndpointState> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an exchange holds until its response body ends: the request permit,
/// the endpoint's in-flight count, and an HTTP/1 connection to give back.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    /// The cluster's max-requests permit.
    pub(crate) permit: Option<Permit>,
    /// The endpoint's in-flight count.
    pub(crate) in_flight: Option<InFlight>,
    /// The HTTP/1 connection, reusable once the body has ended.
    pub(crate) h1: Option<http1::SendRequest<RequestBody>>,
}

impl Lease {
    /// The body ended cleanly: the connection goes back to its pool, and the
    /// counts are released.
    pub(crate) fn finish(&mut self) {
        if let (Some(sender), Some(in_flight)) = (self.h1.take(), self.in_flight.as_ref()) {
            in_flight.endpoint().pool.put_h1(sender);
        }
        self.in_flight = None;
        self.permit = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{CircuitBreakers, Discovery, Endpoint, LbPolicy};

    fn cluster(protocol: UpstreamProtocol) -> Arc<Cluster> {
        Arc::new(Cluster {
            name: "c".into(),
            discovery: Discovery::Eds,
            connect_timeout: Duration::from_secs(1),
            lb: LbPolicy::RoundRobin,
            limits: CircuitBreakers::default(),
            protocol,
            tls: None,
        })
    }

    fn endpoints(ports: &[u16]) -> Arc<ClusterEndpoints> {
        Arc::new(ClusterEndpoints {
            cluster: "c".into(),
            endpoints: ports
                .iter()
                .map(|p| Endpoint {
                    addr: SocketAddr::from(([127, 0, 0, 1], *p)),
                    identity: None,
                    weight: 1,
                    mtls: false,
                })
                .collect(),
        })
    }

    #[test]
    fn breakers_refuse_past_the_limit_and_recover() {
        let breakers = Arc::new(Breakers::default());
        let a = breakers.try_acquire(Limit::Requests, 2);
        let b = breakers.try_acquire(Limit::Requests, 2);
        assert!(a.is_some() && b.is_some());
        assert!(breakers.try_acquire(Limit::Requests, 2).is_none());
        assert_eq!(breakers.taken(Limit::Requests), 2);
        drop(a);
        assert!(breakers.try_acquire(Limit::Requests, 2).is_some());
        assert_eq!(breakers.taken(Limit::Pending), 0);
    }

    #[test]
    fn an_endpoint_update_keeps_the_state_of_known_endpoints() {
        let spec = cluster(UpstreamProtocol::Http1);
        let first = ClusterState::build(&spec, Some(&endpoints(&[1, 2])), None);
        let _held = first.pick(&mut Tried::default());
        let second = ClusterState::build(&spec, Some(&endpoints(&[2, 1, 3])), Some(&first));
        assert!(Arc::ptr_eq(&first.shared, &second.shared));
        assert!(Arc::ptr_eq(&first.endpoints[0], &second.endpoints[1]));
        assert!(Arc::ptr_eq(&first.endpoints[1], &second.endpoints[0]));
        assert_eq!(second.endpoints[1].in_flight(), 1);
        assert_eq!(second.endpoints.len(), 3);
    }

    #[test]
    fn unchanged_inputs_reuse_the_state_and_a_protocol_change_starts_afresh() {
        let spec = cluster(UpstreamProtocol::Http1);
        let eps = endpoints(&[1]);
        let first = ClusterState::build(&spec, Some(&eps), None);
        assert!(Arc::ptr_eq(&first, &ClusterState::build(&spec, Some(&eps), Some(&first))));
        let h2 = ClusterState::build(&cluster(UpstreamProtocol::Http2), Some(&eps), Some(&first));
        assert!(!Arc::ptr_eq(&first.shared, &h2.shared));
        assert!(!Arc::ptr_eq(&first.endpoints[0], &h2.endpoints[0]));
    }

    #[test]
    fn tls_and_plaintext_endpoints_never_share_a_pool() {
        let id = "spiffe://cluster.local/ns/shop/sa/web";
        let tls =
            UpstreamTls { sni: "web.svc".into(), allowed_identities: vec![id.into()], all_endpoints: false };
        let mut spec = (*cluster(UpstreamProtocol::Http1)).clone();
        spec.tls = Some(tls);
        let spec = Arc::new(spec);
        let plain = endpoints(&[1]);
        let first = ClusterState::build(&spec, Some(&plain), None);
        assert_eq!(first.endpoints[0].transport, Transport::Plain);
        let mut meshed = (*plain).clone();
        meshed.endpoints[0].mtls = true;
        let second = ClusterState::build(&spec, Some(&Arc::new(meshed.clone())), Some(&first));
        assert!(matches!(second.endpoints[0].transport, Transport::Tls(_)));
        assert!(!Arc::ptr_eq(&first.endpoints[0], &second.endpoints[0]));
        // The same TLS settings again keep the pool.
        let third = ClusterState::build(&spec, Some(&Arc::new(meshed.clone())), Some(&second));
        assert!(Arc::ptr_eq(&second.endpoints[0], &third.endpoints[0]));
        // Another expected identity does not.
        meshed.endpoints[0].identity = Some("spiffe://cluster.local/ns/shop/sa/other".into());
        let fourth = ClusterState::build(&spec, Some(&Arc::new(meshed.clone())), Some(&third));
        assert!(!Arc::ptr_eq(&third.endpoints[0], &fourth.endpoints[0]));
        meshed.endpoints[0].identity = Some("not a spiffe id".into());
        let bad = ClusterState::build(&spec, Some(&Arc::new(meshed)), Some(&fourth));
        assert!(matches!(bad.endpoints[0].transport, Transport::Invalid(_)));
    }

    #[test]
    fn in_flight_counts_follow_the_guards() {
        let first = ClusterState::build(&cluster(UpstreamProtocol::Http1), Some(&endpoints(&[1])), None);
        let a = first.pick(&mut Tried::default());
        let b = first.pick(&mut Tried::default());
        assert_eq!(first.endpoints[0].in_flight(), 2);
        drop((a, b));
        assert_eq!(first.endpoints[0].in_flight(), 0);
    }
}
