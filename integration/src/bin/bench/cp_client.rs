//! One load client: an ADS stream (SotW or Delta) that subscribes and ACKs like a
//! sidecar (wildcard CDS and LDS, then the EDS names of the EDS clusters and the RDS
//! names of the listeners), and records when it ACKed what, and how many bytes it got.
//!
//! It decodes only what a sidecar needs to know what to ask for next: the envelope,
//! each cluster's name and discovery type (two fields; the rest is skipped), and the
//! listeners (few) down to their RDS names. Endpoints and routes stay opaque bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use weft_xds_protos::envoy::config::core::v3::Node;
use weft_xds_protos::envoy::config::listener::v3::Listener;
use weft_xds_protos::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use weft_xds_protos::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use weft_xds_protos::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use weft_xds_protos::google::protobuf::Any;
use weft_xds_protos::type_url;

/// The types a sidecar uses, in the order the stats arrays hold them.
pub(crate) const TYPES: [&str; 4] =
    [type_url::CLUSTER, type_url::ENDPOINT, type_url::LISTENER, type_url::ROUTE];
/// Index of EDS in [`TYPES`].
pub(crate) const EDS: usize = 1;
/// Index of RDS in [`TYPES`].
pub(crate) const RDS: usize = 3;

/// `envoy.config.cluster.v3.Cluster.DiscoveryType.EDS`.
const DISCOVERY_EDS: i32 = 3;

/// The two fields of a Cluster a sidecar needs to subscribe to its endpoints.
#[derive(Clone, PartialEq, prost::Message)]
struct ClusterHead {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "2")]
    discovery_type: i32,
}

/// What one client saw, readable while it runs. Times are microseconds since the
/// benchmark's clock started; 0 means "not yet".
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// ACKs sent, per type.
    pub(crate) acks: [AtomicU64; 4],
    /// Encoded response bytes received, per type.
    pub(crate) bytes: [AtomicU64; 4],
    /// Responses received, per type.
    pub(crate) responses: [AtomicU64; 4],
    /// The first ACK of each type at or after the current mark.
    pub(crate) first_ack_after_mark: [AtomicU64; 4],
    /// When every type had been ACKed at least once.
    pub(crate) synced_at: AtomicU64,
    /// The stream ended or failed.
    pub(crate) failed: AtomicBool,
}

impl Stats {
    /// Forgets the marked ACKs (before a change).
    pub(crate) fn reset_mark(&self) {
        for a in &self.first_ack_after_mark {
            a.store(0, Ordering::SeqCst);
        }
    }

    /// Total bytes received over every type.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.bytes.iter().map(|b| b.load(Ordering::SeqCst)).sum()
    }
}

/// The benchmark's clock and the mark: ACKs at or after it count for the change being timed.
#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
    mark: AtomicU64,
}

impl Clock {
    pub(crate) fn new() -> Arc<Clock> {
        Arc::new(Clock { start: Instant::now(), mark: AtomicU64::new(u64::MAX) })
    }

    /// Microseconds since the start (at least 1, so 0 can mean "never").
    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX).max(1)
    }

    /// Sets the mark to now and returns it.
    pub(crate) fn mark(&self) -> u64 {
        let now = self.now_us();
        self.mark.store(now, Ordering::SeqCst);
        now
    }
}

fn type_index(url: &str) -> Option<usize> {
    TYPES.iter().position(|t| *t == url)
}

fn record_ack(stats: &Stats, clock: &Clock, t: usize) {
    let now = clock.now_us();
    stats.acks[t].fetch_add(1, Ordering::SeqCst);
    if now >= clock.mark.load(Ordering::SeqCst) {
        let _ = stats.first_ack_after_mark[t].compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    }
    if stats.synced_at.load(Ordering::SeqCst) == 0 && stats.acks.iter().all(|a| a.load(Ordering::SeqCst) > 0)
    {
        stats.synced_at.store(now, Ordering::SeqCst);
    }
}

/// The EDS cluster names among encoded clusters (name and type decoded, nothing else).
fn eds_clusters<'a>(clusters: impl Iterator<Item = &'a Any>) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for any in clusters {
        let head = ClusterHead::decode(any.value.as_slice())?;
        if head.discovery_type == DISCOVERY_EDS {
            out.push(head.name);
        }
    }
    Ok(out)
}

/// A listener's name and the RDS route configurations its HTTP connection managers name.
fn listener_routes(any: &Any) -> anyhow::Result<(String, BTreeSet<String>)> {
    let listener = Listener::decode(any.value.as_slice())?;
    let mut names = BTreeSet::new();
    for chain in listener.filter_chains.iter().chain(listener.default_filter_chain.iter()) {
        for filter in &chain.filters {
            use weft_xds_protos::envoy::config::listener::v3::filter::ConfigType;
            let Some(ConfigType::TypedConfig(tc)) = &filter.config_type else { continue };
            if !tc.type_url.ends_with("HttpConnectionManager") {
                continue;
            }
            let hcm = HttpConnectionManager::decode(tc.value.as_slice())?;
            if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                names.insert(rds.route_config_name);
            }
        }
    }
    Ok((listener.name, names))
}

/// Runs one SotW client until the stream ends.
pub(crate) async fn run_sotw(
    channel: Channel,
    node: Node,
    stats: Arc<Stats>,
    clock: Arc<Clock>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
    let request = |t: usize, version: &str, nonce: &str, names: &BTreeSet<String>| DiscoveryRequest {
        type_url: TYPES[t].to_string(),
        version_info: version.to_string(),
        response_nonce: nonce.to_string(),
        resource_names: names.iter().cloned().collect(),
        ..Default::default()
    };
    // Per type: version, nonce, subscribed names (empty = wildcard for CDS/LDS).
    let mut state: [(String, String, BTreeSet<String>); 4] = Default::default();
    let mut first = request(0, "", "", &BTreeSet::new());
    first.node = Some(node);
    tx.send(first)?;
    tx.send(request(2, "", "", &BTreeSet::new()))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let mut responses =
        client.stream_aggregated_resources(UnboundedReceiverStream::new(rx)).await?.into_inner();
    while let Some(resp) = responses.message().await? {
        let resp: DiscoveryResponse = resp;
        let Some(t) = type_index(&resp.type_url) else { continue };
        stats.bytes[t].fetch_add(resp.encoded_len() as u64, Ordering::Relaxed);
        stats.responses[t].fetch_add(1, Ordering::Relaxed);
        // What this response makes the client want next (EDS from CDS, RDS from LDS).
        let follow = match t {
            0 => Some((EDS, eds_clusters(resp.resources.iter())?.into_iter().collect::<BTreeSet<_>>())),
            2 => {
                let mut names = BTreeSet::new();
                for any in &resp.resources {
                    names.extend(listener_routes(any)?.1);
                }
                Some((RDS, names))
            }
            _ => None,
        };
        state[t].0 = resp.version_info.clone();
        state[t].1 = resp.nonce.clone();
        tx.send(request(t, &state[t].0, &state[t].1, &state[t].2))?;
        record_ack(&stats, &clock, t);
        if let Some((f, names)) = follow
            && names != state[f].2
        {
            state[f].2 = names;
            tx.send(request(f, &state[f].0, &state[f].1, &state[f].2))?;
        }
    }
    Ok(())
}

/// Runs one Delta client until the stream ends.
pub(crate) async fn run_delta(
    channel: Channel,
    node: Node,
    stats: Arc<Stats>,
    clock: Arc<Clock>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
    let subscribe = |t: usize, sub: Vec<String>, unsub: Vec<String>| DeltaDiscoveryRequest {
        type_url: TYPES[t].to_string(),
        resource_names_subscribe: sub,
        resource_names_unsubscribe: unsub,
        ..Default::default()
    };
    let mut first = subscribe(0, Vec::new(), Vec::new());
    first.node = Some(node);
    tx.send(first)?;
    tx.send(subscribe(2, Vec::new(), Vec::new()))?;
    // EDS names subscribed; RDS names per listener, and subscribed.
    let mut eds: BTreeSet<String> = BTreeSet::new();
    let mut listener_rds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut rds: BTreeSet<String> = BTreeSet::new();
    let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let mut responses =
        client.delta_aggregated_resources(UnboundedReceiverStream::new(rx)).await?.into_inner();
    while let Some(resp) = responses.message().await? {
        let resp: DeltaDiscoveryResponse = resp;
        let Some(t) = type_index(&resp.type_url) else { continue };
        stats.bytes[t].fetch_add(resp.encoded_len() as u64, Ordering::Relaxed);
        stats.responses[t].fetch_add(1, Ordering::Relaxed);
        let mut follow: Option<(usize, Vec<String>, Vec<String>)> = None;
        match t {
            0 => {
                let added = eds_clusters(resp.resources.iter().filter_map(|r| r.resource.as_ref()))?;
                let sub: Vec<String> = added.into_iter().filter(|n| eds.insert(n.clone())).collect();
                let unsub: Vec<String> =
                    resp.removed_resources.iter().filter(|n| eds.remove(*n)).cloned().collect();
                follow = Some((EDS, sub, unsub));
            }
            2 => {
                for r in &resp.resources {
                    if let Some(any) = &r.resource {
                        let (name, names) = listener_routes(any)?;
                        listener_rds.insert(name, names);
                    }
                }
                for name in &resp.removed_resources {
                    listener_rds.remove(name);
                }
                let want: BTreeSet<String> = listener_rds.values().flatten().cloned().collect();
                let sub = want.difference(&rds).cloned().collect();
                let unsub = rds.difference(&want).cloned().collect();
                rds = want;
                follow = Some((RDS, sub, unsub));
            }
            _ => {}
        }
        tx.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })?;
        record_ack(&stats, &clock, t);
        if let Some((f, sub, unsub)) = follow
            && (!sub.is_empty() || !unsub.is_empty())
        {
            tx.send(subscribe(f, sub, unsub))?;
        }
    }
    Ok(())
}
