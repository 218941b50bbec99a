//! ClusterLoadAssignments (EDS, or inline in a STATIC cluster): the healthy
//! endpoints of a cluster, their weights, the identity they should present,
//! and whether they are dialled over mTLS.

use weft_xds_protos::envoy::config::core::v3::HealthStatus;
use weft_xds_protos::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use weft_xds_protos::google::protobuf::value::Kind;

use super::cluster::{MTLS_KEY, SOCKET_MATCH_METADATA};
use super::{Notes, ignored, socket_addr, unsupported};
use crate::config::{ClusterEndpoints, Endpoint};
use crate::xds::error::{At, FieldError};

/// `filter_metadata` namespace of weft's endpoint metadata.
const WEFT_METADATA: &str = "weft";

/// Validates a ClusterLoadAssignment of cluster `cluster` (a STATIC cluster's
/// inline assignment may leave its own `cluster_name` empty).
pub(crate) fn assignment(
    la: &ClusterLoadAssignment,
    cluster: &str,
    notes: &mut Notes,
) -> Result<ClusterEndpoints, FieldError> {
    unsupported!(la, [named_endpoints]);
    if let Some(policy) = &la.policy {
        (|| {
            unsupported!(policy, [drop_overloads]);
            Ok(())
        })()
        .at("policy")?;
        ignored!(
            notes,
            policy,
            "ClusterLoadAssignment.Policy",
            [overprovisioning_factor, endpoint_stale_after, weighted_priority_health]
        );
    }
    let mut endpoints = Vec::new();
    for (i, locality) in la.endpoints.iter().enumerate() {
        locality_endpoints(locality, &mut endpoints, notes).at_index("endpoints", i)?;
    }
    Ok(ClusterEndpoints { cluster: cluster.to_string(), endpoints })
}

fn locality_endpoints(
    l: &LocalityLbEndpoints,
    out: &mut Vec<Endpoint>,
    notes: &mut Notes,
) -> Result<(), FieldError> {
    if l.priority != 0 {
        // Failover between priorities is not implemented: serving priority 1
        // as 0 would send traffic where Envoy would not.
        return Err(FieldError::new(
            "priority",
            format!("{} is not supported by weft-proxy (only 0)", l.priority),
        ));
    }
    ignored!(
        notes,
        l,
        "LocalityLbEndpoints",
        [locality, metadata, load_balancing_weight, proximity, lb_config]
    );
    for (j, e) in l.lb_endpoints.iter().enumerate() {
        if let Some(endpoint) = lb_endpoint(e, notes).at_index("lb_endpoints", j)? {
            out.push(endpoint);
        }
    }
    Ok(())
}

/// An endpoint, or `None` if its health status says not to use it.
fn lb_endpoint(e: &LbEndpoint, notes: &mut Notes) -> Result<Option<Endpoint>, FieldError> {
    let ep = match &e.host_identifier {
        Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => ep,
        Some(lb_endpoint::HostIdentifier::EndpointName(_)) => {
            return Err(FieldError::unsupported("endpoint_name"));
        }
        None => return Err(FieldError::required("endpoint")),
    };
    ignored!(
        notes,
        ep,
        "Endpoint",
        [health_check_config, hostname, additional_addresses, observability_name]
    );
    let addr = socket_addr(ep.address.as_ref(), notes).at("endpoint.address")?;
    let weight = match &e.load_balancing_weight {
        None => 1,
        Some(w) if w.value >= 1 => w.value,
        Some(_) => return Err(FieldError::new("load_balancing_weight", "must be at least 1")),
    };
    let identity = match e.metadata.as_ref().and_then(|m| m.filter_metadata.get(WEFT_METADATA)) {
        None => None,
        Some(weft) => match weft.fields.get("identity").and_then(|v| v.kind.as_ref()) {
            None => None,
            Some(Kind::StringValue(id)) => Some(id.clone()),
            Some(_) => {
                return Err(FieldError::new("metadata.filter_metadata.weft.identity", "must be a string"));
            }
        },
    };
    // Envoy matches the cluster's `{"weft.mtls": true}` socket against this metadata.
    let mtls = e
        .metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get(SOCKET_MATCH_METADATA))
        .and_then(|s| s.fields.get(MTLS_KEY))
        .is_some_and(|v| matches!(v.kind, Some(Kind::BoolValue(true))));
    let healthy = match HealthStatus::try_from(e.health_status) {
        Ok(HealthStatus::Unknown | HealthStatus::Healthy) => true,
        Ok(_) => false,
        Err(_) => {
            return Err(FieldError::new("health_status", format!("unknown status {}", e.health_status)));
        }
    };
    Ok(healthy.then_some(Endpoint { addr, identity, weight, mtls }))
}
