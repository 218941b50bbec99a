//! State-of-the-World: a listener or cluster response carries every resource of its type;
//! route, endpoint and secret responses carry only what the proxy does not have yet, as the
//! xDS protocol allows for those types (a proxy keeps what a response leaves out). One
//! changed endpoint then costs one ClusterLoadAssignment, not all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use prost::bytes::Bytes;
use tracing::{debug, warn};
use weft_xds_protos::envoy::config::core::v3::{ControlPlane, Node};
use weft_xds_protos::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use weft_xds_protos::google::rpc::Status as RpcStatus;

use super::registry::{NackReport, ProxyReport, now_secs};
use super::stream::XdsProtocol;
use super::{known_type, short_type, wildcard_type};
use crate::cache::{Encoded, ProxyView, REMOVAL_ORDER, Snapshot, TYPE_ORDER, TypeResources};
use crate::metrics::{Metrics, TypeLabel};

/// A SotW `DiscoveryRequest` (the same wire format) whose resource names stay slices of the
/// received message. A sidecar's every EDS ACK repeats its whole subscription (10,000 names
/// in a 10,000-service mesh): decoding them as strings was a quarter of the control plane's
/// CPU per update, and they are only compared with what the stream already has.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SotwRequest {
    /// `version_info`.
    #[prost(string, tag = "1")]
    pub(crate) version_info: String,
    /// `node`.
    #[prost(message, optional, tag = "2")]
    pub(crate) node: Option<Node>,
    /// `resource_names`, as received.
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub(crate) resource_names: Vec<Bytes>,
    /// `type_url`.
    #[prost(string, tag = "4")]
    pub(crate) type_url: String,
    /// `response_nonce`.
    #[prost(string, tag = "5")]
    pub(crate) response_nonce: String,
    /// `error_detail`.
    #[prost(message, optional, tag = "6")]
    pub(crate) error_detail: Option<RpcStatus>,
}

impl From<DiscoveryRequest> for SotwRequest {
    fn from(r: DiscoveryRequest) -> Self {
        SotwRequest {
            version_info: r.version_info,
            node: r.node,
            resource_names: r.resource_names.into_iter().map(Bytes::from).collect(),
            type_url: r.type_url,
            response_nonce: r.response_nonce,
            error_detail: r.error_detail,
        }
    }
}

/// Per-type SotW state on one stream.
#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Nonce and version of the latest response, and the resources it carried.
    nonce: Option<String>,
    version: Option<String>,
    sent: TypeResources,
    /// A version the proxy rejected: never sent to it again.
    nacked: Option<String>,
    /// The last view map every entry of which `names` named.
    all_named: Option<TypeResources>,
}

/// The SotW protocol for one stream.
#[derive(Debug)]
pub(crate) struct Sotw {
    types: BTreeMap<&'static str, TypeState>,
    nonce: u64,
    metrics: Arc<Metrics>,
}

impl Sotw {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Sotw { types: BTreeMap::new(), nonce: 0, metrics }
    }

    fn desired(state: &mut TypeState, all: Option<&TypeResources>) -> TypeResources {
        let Some(all) = all else { return TypeResources::new() };
        if state.wildcard {
            return all.clone();
        }
        // A sidecar subscribes to every assignment: when the last map was all subscribed,
        // the next one is too unless a name it adds is not (no walk over every name).
        let still_all =
            state.all_named.as_ref().and_then(|prev| all.changed_since(prev)).is_some_and(|changed| {
                changed.iter().all(|n| !all.contains_key(n) || state.names.contains(*n))
            });
        if still_all {
            state.all_named = Some(all.clone());
            return all.clone();
        }
        // Shares the view's map when every resource is subscribed (a proxy's EDS).
        let desired = all.restricted_to(&state.names);
        state.all_named = desired.shares(all).then(|| all.clone());
        desired
    }

    /// A response for `resources` (the type's whole desired set), carrying `only` those
    /// when given (a partial response of a non-wildcard type), else all of them.
    fn respond(
        &mut self,
        type_url: &'static str,
        resources: TypeResources,
        only: Option<Vec<Arc<Encoded>>>,
        report: &mut ProxyReport,
    ) -> DiscoveryResponse {
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let version = resources.version();
        let state = self.types.entry(type_url).or_default();
        state.nonce = Some(nonce.clone());
        state.version = Some(version.clone());
        let tr = report.types.entry(short_type(type_url)).or_default();
        tr.sent_version = Some(version.clone());
        tr.sent_nonce = Some(nonce.clone());
        tr.resources = resources.len();
        tr.pushes += 1;
        let resp = DiscoveryResponse {
            version_info: version,
            resources: match only {
                Some(only) => only.iter().map(|r| r.any.clone()).collect(),
                None => resources.values().map(|r| r.any.clone()).collect(),
            },
            type_url: type_url.to_string(),
            nonce,
            control_plane: Some(ControlPlane { identifier: "weft".into() }),
            ..Default::default()
        };
        state.sent = resources;
        resp
    }
}

impl XdsProtocol for Sotw {
    type Request = SotwRequest;
    type Response = DiscoveryResponse;
    const MODE: &'static str = "sotw";

    fn node(req: &SotwRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn type_url(req: &mut SotwRequest) -> &mut String {
        &mut req.type_url
    }

    fn response_type(resp: &DiscoveryResponse) -> &str {
        &resp.type_url
    }

    fn on_request(
        &mut self,
        req: SotwRequest,
        view: &ProxyView,
        _snapshot: &Snapshot,
        report: &mut ProxyReport,
    ) -> Vec<DiscoveryResponse> {
        let Some(type_url) = known_type(&req.type_url) else { return Vec::new() };
        let short = short_type(type_url);
        let first = !self.types.contains_key(type_url);
        let state = self.types.entry(type_url).or_default();
        // A nonce from before this stream (a reconnect) makes the request an initial one.
        if !req.response_nonce.is_empty() && state.nonce.is_some() {
            if state.nonce.as_deref() != Some(req.response_nonce.as_str()) {
                debug!(r#type = short, nonce = %req.response_nonce, "ignoring request with a stale nonce");
                return Vec::new();
            }
            let tr = report.types.entry(short).or_default();
            if let Some(err) = &req.error_detail {
                warn!(r#type = short, version = ?state.version, detail = %err.message, "proxy NACKed");
                state.nacked = state.version.clone();
                tr.nacks += 1;
                tr.last_nack = Some(NackReport {
                    version: state.version.clone().unwrap_or_default(),
                    nonce: req.response_nonce.clone(),
                    detail: err.message.clone(),
                    resources: state.sent.keys().cloned().collect(),
                    at: now_secs(),
                });
                self.metrics.nacks.get_or_create(&TypeLabel { r#type: short.into() }).inc();
            } else {
                tr.acks += 1;
                tr.acked_version = Some(req.version_info.clone());
            }
        }
        let explicit_wildcard = req.resource_names.iter().any(|n| n.as_ref() == b"*");
        let named = || req.resource_names.iter().filter(|n| n.as_ref() != b"*");
        // An ACK usually repeats the subscription (10,000 names for a proxy's EDS): compare
        // it in place (a proxy that sends names sorted) before building a new set.
        let repeated = named().map(|n| n.as_ref()).eq(state.names.iter().map(String::as_bytes));
        let names: BTreeSet<String> = if repeated {
            std::mem::take(&mut state.names)
        } else {
            // A name that is not UTF-8 names no resource; it is kept (lossily) as asked for.
            named().map(|n| String::from_utf8_lossy(n).into_owned()).collect()
        };
        let wildcard = explicit_wildcard || (wildcard_type(type_url) && names.is_empty());
        let changed = first || wildcard != state.wildcard || (!wildcard && !repeated && names != state.names);
        if changed {
            state.all_named = None;
        }
        state.wildcard = wildcard;
        state.names = names;
        if changed {
            report.types.entry(short).or_default().set_subscribed(state.wildcard, state.names.iter());
        }
        if !changed {
            return Vec::new();
        }
        let desired = Self::desired(state, view.get(type_url));
        let only = (!wildcard_type(type_url)).then(|| desired.updated_since(&state.sent));
        vec![self.respond(type_url, desired, only, report)]
    }

    fn on_update(
        &mut self,
        view: &ProxyView,
        _snapshot: &Snapshot,
        report: &mut ProxyReport,
    ) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        let mut removals = Vec::new();
        for type_url in TYPE_ORDER {
            let Some(state) = self.types.get_mut(type_url) else { continue };
            let desired = Self::desired(state, view.get(type_url));
            let version = desired.version();
            if state.version.as_ref() == Some(&version) || state.nacked.as_ref() == Some(&version) {
                continue;
            }
            if !wildcard_type(type_url) {
                // Only what changed; what went away the proxy drops with the listener or
                // cluster that named it.
                let updated = desired.updated_since(&state.sent);
                if updated.is_empty() {
                    state.sent = desired;
                } else {
                    out.push(self.respond(type_url, desired, Some(updated), report));
                }
                continue;
            }
            // Make before break: keep what is going away until everything
            // that may still refer to it has been replaced.
            let removed = state.sent.missing_from(&desired);
            if !removed.is_empty() && state.wildcard {
                let mut union = desired.clone();
                union.extend(removed);
                out.push(self.respond(type_url, union, None, report));
                removals.push((type_url, desired));
            } else {
                out.push(self.respond(type_url, desired, None, report));
            }
        }
        removals.sort_by_key(|(t, _)| REMOVAL_ORDER.iter().position(|r| r == t));
        for (type_url, desired) in removals {
            out.push(self.respond(type_url, desired, None, report));
        }
        out
    }
}
