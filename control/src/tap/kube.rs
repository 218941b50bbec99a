//! Tap in Kubernetes mode: the operator is whoever the cluster says their bearer token belongs
//! to, and may tap what Kubernetes RBAC lets them `watch` in the `tap.weft.io` API group.
//!
//! - Authentication: a TokenReview of the presented token for the API server's own audiences
//!   (the token `kubectl` uses, or one from `kubectl create token`). A proxy's projected token
//!   (audience `weft`) is not valid there.
//! - Authorization: a SubjectAccessReview with the reviewed user, groups, uid and extra, for
//!   `watch` on `deployments`, `pods` or `workloads` of `tap.weft.io`, in the target's
//!   namespace, with the target's name. Nothing grants that by default; `weft install` makes the
//!   `weft-tap` ClusterRole an admin binds to operators. A workload's ServiceAccount is refused
//!   like any other user without the grant.
//! - Targets: `deploy/NAME` is the pods whose controlling owner is a ReplicaSet that a
//!   Deployment `NAME` controls; `pod/NAME` is that pod; both are read from the API server when
//!   the session starts (the control plane's own `list` rights), and matched to connected proxies
//!   by namespace and pod IP (or the injected node id `<pod>.<namespace>`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use ::kube::Api;
use ::kube::api::{ListParams, PostParams};
use axum::http::StatusCode;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::{Target, TargetKind};
use crate::translate::ProxyNode;

/// The API group of tap's RBAC resources.
pub const TAP_API_GROUP: &str = "tap.weft.io";

/// The RBAC verb a tap session needs.
pub const TAP_VERB: &str = "watch";

/// The ClusterRole `weft install` makes for operators.
pub const TAP_CLUSTER_ROLE: &str = "weft-tap";

/// How long a review or a lookup may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an operator's request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No token, or one the API server does not accept (401).
    #[error("not authorized: {0}")]
    Unauthenticated(String),
    /// The user is known but RBAC does not grant the tap (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The API server could not be asked (503).
    #[error("cannot check the operator's credential: {0}")]
    Unavailable(String),
}

impl Refusal {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The operator's identity as TokenReview gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operator {
    /// User name.
    pub username: String,
    /// uid.
    pub uid: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

/// Tap's access to the cluster: TokenReview, SubjectAccessReview, and Deployments' pods.
#[derive(Clone)]
pub struct KubeTap {
    client: ::kube::Client,
}

impl std::fmt::Debug for KubeTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTap").finish_non_exhaustive()
    }
}

/// The name of the controlling owner among `refs`, if it is of kind `kind`.
fn controller_of_kind<'a>(refs: Option<&'a [OwnerReference]>, kind: &str) -> Option<&'a str> {
    refs?.iter().find(|r| r.controller == Some(true) && r.kind == kind).map(|r| r.name.as_str())
}

impl KubeTap {
    /// Tap through `client` (the control plane's own).
    pub fn new(client: ::kube::Client) -> Self {
        Self { client }
    }

    /// Who `token` belongs to (TokenReview for the API server's audiences).
    pub async fn authenticate(&self, token: &str) -> Result<Operator, Refusal> {
        if token.is_empty() {
            return Err(Refusal::Unauthenticated("no bearer token presented".into()));
        }
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: None },
            ..Default::default()
        };
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let answer = tokio::time::timeout(API_TIMEOUT, reviews.create(&PostParams::default(), &review))
            .await
            .map_err(|_| Refusal::Unavailable(format!("TokenReview: no answer within {API_TIMEOUT:?}")))?
            .map_err(|e| Refusal::Unavailable(format!("TokenReview: {e}")))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            tracing::info!(error = ?status.error, "tap refused: TokenReview did not authenticate the token");
            return Err(Refusal::Unauthenticated(
                "the API server does not accept this bearer token (TokenReview)".into(),
            ));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        if username.is_empty() {
            return Err(Refusal::Unauthenticated("TokenReview named no user".into()));
        }
        Ok(Operator {
            username,
            uid: user.uid,
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        })
    }

    /// Whether RBAC lets `operator` tap `target` in `namespace` (SubjectAccessReview).
    pub async fn authorize(
        &self,
        operator: &Operator,
        target: &Target,
        namespace: &str,
    ) -> Result<(), Refusal> {
        let resource = target.kind.resource();
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(operator.username.clone()),
                uid: operator.uid.clone(),
                groups: Some(operator.groups.clone()),
                extra: Some(operator.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(TAP_API_GROUP.into()),
                    resource: Some(resource.into()),
                    verb: Some(TAP_VERB.into()),
                    namespace: Some(namespace.to_string()),
                    name: Some(target.name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviews: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = tokio::time::timeout(API_TIMEOUT, reviews.create(&PostParams::default(), &review))
            .await
            .map_err(|_| {
                Refusal::Unavailable(format!("SubjectAccessReview: no answer within {API_TIMEOUT:?}"))
            })?
            .map_err(|e| Refusal::Unavailable(format!("SubjectAccessReview: {e}")))?;
        let status = answer.status.unwrap_or_default();
        if status.allowed && status.denied != Some(true) {
            tracing::info!(user = %operator.username, %resource, %namespace, name = %target.name, "tap allowed by RBAC");
            return Ok(());
        }
        let place = if namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {namespace:?}")
        };
        let reason = status.reason.filter(|r| !r.is_empty()).map(|r| format!(" ({r})")).unwrap_or_default();
        tracing::warn!(user = %operator.username, %resource, %namespace, name = %target.name, "tap refused by RBAC");
        Err(Refusal::Forbidden(format!(
            "user {:?} cannot {TAP_VERB} resource {resource:?} in API group {TAP_API_GROUP:?} {place} \
             (name {:?}){reason}; an admin grants it by binding the ClusterRole {TAP_CLUSTER_ROLE}",
            operator.username, target.name
        )))
    }

    /// The connected proxies of `target` in `namespace`.
    pub async fn resolve(
        &self,
        nodes: &[ProxyNode],
        target: &Target,
        namespace: &str,
    ) -> Result<Vec<ProxyNode>, String> {
        if target.kind == TargetKind::Workload {
            let ns = (!namespace.is_empty()).then_some(namespace);
            return super::resolve_workload(nodes, &target.name, ns);
        }
        let pods = self.pods(namespace).await?;
        let sets = match target.kind {
            TargetKind::Deployment => self.replica_sets(namespace).await?,
            _ => Vec::new(),
        };
        let chosen = select_pods(target, namespace, &pods, &sets)?;
        proxies_of(target, namespace, &chosen, nodes)
    }

    async fn pods(&self, namespace: &str) -> Result<Vec<PodInfo>, String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let list = tokio::time::timeout(API_TIMEOUT, api.list(&ListParams::default()))
            .await
            .map_err(|_| format!("listing the pods of {namespace}: no answer within {API_TIMEOUT:?}"))?
            .map_err(|e| format!("listing the pods of {namespace}: {e}"))?;
        Ok(list
            .items
            .into_iter()
            .map(|pod| {
                let ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok());
                PodInfo {
                    replica_set: controller_of_kind(pod.metadata.owner_references.as_deref(), "ReplicaSet")
                        .map(str::to_string),
                    name: pod.metadata.name.unwrap_or_default(),
                    ip,
                }
            })
            .collect())
    }

    async fn replica_sets(&self, namespace: &str) -> Result<Vec<ReplicaSetInfo>, String> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        let list = tokio::time::timeout(API_TIMEOUT, api.list(&ListParams::default()))
            .await
            .map_err(|_| format!("listing the ReplicaSets of {namespace}: no answer within {API_TIMEOUT:?}"))?
            .map_err(|e| format!("listing the ReplicaSets of {namespace}: {e}"))?;
        Ok(list
            .items
            .into_iter()
            .map(|set| ReplicaSetInfo {
                deployment: controller_of_kind(set.metadata.owner_references.as_deref(), "Deployment")
                    .map(str::to_string),
                name: set.metadata.name.unwrap_or_default(),
            })
            .collect())
    }
}

/// What target resolution needs of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodInfo {
    pub(crate) name: String,
    pub(crate) ip: Option<IpAddr>,
    /// The ReplicaSet controlling it.
    pub(crate) replica_set: Option<String>,
}

/// What target resolution needs of a ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaSetInfo {
    pub(crate) name: String,
    /// The Deployment controlling it.
    pub(crate) deployment: Option<String>,
}

/// The pods `target` (a Deployment or a pod) names in `namespace`; an error names what exists.
pub(crate) fn select_pods<'a>(
    target: &Target,
    namespace: &str,
    pods: &'a [PodInfo],
    sets: &[ReplicaSetInfo],
) -> Result<Vec<&'a PodInfo>, String> {
    let list = |names: BTreeSet<&str>| {
        if names.is_empty() { "none".to_string() } else { names.into_iter().collect::<Vec<_>>().join(", ") }
    };
    match target.kind {
        TargetKind::Deployment => {
            let owned: BTreeSet<&str> = sets
                .iter()
                .filter(|s| s.deployment.as_deref() == Some(target.name.as_str()))
                .map(|s| s.name.as_str())
                .collect();
            let chosen: Vec<&PodInfo> = pods
                .iter()
                .filter(|p| p.replica_set.as_deref().is_some_and(|rs| owned.contains(rs)))
                .collect();
            if chosen.is_empty() {
                let known: BTreeSet<&str> = sets
                    .iter()
                    .filter(|s| pods.iter().any(|p| p.replica_set.as_deref() == Some(s.name.as_str())))
                    .filter_map(|s| s.deployment.as_deref())
                    .collect();
                return Err(format!(
                    "unknown target deploy/{} in namespace {namespace}: no pod of a Deployment {} runs there \
                     (Deployments with pods: {})",
                    target.name,
                    target.name,
                    list(known)
                ));
            }
            Ok(chosen)
        }
        TargetKind::Pod => match pods.iter().find(|p| p.name == target.name) {
            Some(pod) => Ok(vec![pod]),
            None => Err(format!(
                "unknown target pod/{} in namespace {namespace} (pods there: {})",
                target.name,
                list(pods.iter().map(|p| p.name.as_str()).collect())
            )),
        },
        TargetKind::Workload => Err("workload/ targets are matched to proxies directly".into()),
    }
}

/// The connected proxies of `pods` (one per pod IP): same namespace, and the pod's IP or the
/// node id the injector gives (`<pod>.<namespace>`).
pub(crate) fn proxies_of(
    target: &Target,
    namespace: &str,
    pods: &[&PodInfo],
    nodes: &[ProxyNode],
) -> Result<Vec<ProxyNode>, String> {
    let mut found = std::collections::BTreeMap::new();
    for pod in pods {
        let node_id = format!("{}.{namespace}", pod.name);
        for node in nodes.iter().filter(|n| n.namespace == namespace) {
            if pod.ip == Some(node.pod_ip) || node.id == node_id {
                found.entry(node.pod_ip).or_insert_with(|| node.clone());
            }
        }
    }
    if found.is_empty() {
        let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
        return Err(format!(
            "unknown target {target} in namespace {namespace}: its pods ({}) have no connected proxy \
             (are they meshed? `kubectl -n {namespace} get pods` shows 2/2 for meshed pods; with \
             several control plane replicas, their proxies may be connected to another one)",
            names.join(", ")
        ));
    }
    Ok(found.into_values().collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pod(name: &str, ip: [u8; 4], rs: Option<&str>) -> PodInfo {
        PodInfo { name: name.into(), ip: Some(ip.into()), replica_set: rs.map(Into::into) }
    }

    fn set(name: &str, deployment: Option<&str>) -> ReplicaSetInfo {
        ReplicaSetInfo { name: name.into(), deployment: deployment.map(Into::into) }
    }

    fn node(id: &str, ns: &str, ip: [u8; 4]) -> ProxyNode {
        ProxyNode {
            id: id.into(),
            namespace: ns.into(),
            service_account: "sa".into(),
            pod_ip: ip.into(),
            inbound_port: 4143,
            outbound_port: 4140,
            transparent: true,
        }
    }

    #[test]
    fn a_deployment_is_the_pods_of_the_replica_sets_it_controls() {
        let pods = vec![
            pod("payment-service-5d9f-a", [10, 0, 0, 1], Some("payment-service-5d9f")),
            pod("payment-service-7c2b-b", [10, 0, 0, 2], Some("payment-service-7c2b")),
            pod("payment-service-extra-c", [10, 0, 0, 3], Some("payment-service-extra-1")),
            pod("lonely", [10, 0, 0, 4], None),
        ];
        let sets = vec![
            set("payment-service-5d9f", Some("payment-service")),
            set("payment-service-7c2b", Some("payment-service")),
            set("payment-service-extra-1", Some("payment-service-extra")),
        ];
        let target: Target = "deploy/payment-service".parse().unwrap();
        let names: Vec<&str> =
            select_pods(&target, "payments", &pods, &sets).unwrap().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["payment-service-5d9f-a", "payment-service-7c2b-b"]);

        let unknown: Target = "deploy/nope".parse().unwrap();
        let err = select_pods(&unknown, "payments", &pods, &sets).unwrap_err();
        assert!(err.contains("unknown target deploy/nope in namespace payments"), "{err}");
        assert!(err.contains("Deployments with pods: payment-service, payment-service-extra"), "{err}");
    }

    #[test]
    fn a_pod_is_found_by_name_and_unknown_pods_list_the_others() {
        let pods = vec![pod("a-1", [10, 0, 0, 1], None), pod("b-1", [10, 0, 0, 2], None)];
        let target: Target = "pod/b-1".parse().unwrap();
        assert_eq!(select_pods(&target, "ns", &pods, &[]).unwrap()[0].name, "b-1");
        let err = select_pods(&"po/c".parse().unwrap(), "ns", &pods, &[]).unwrap_err();
        assert!(err.contains("pod/c in namespace ns (pods there: a-1, b-1)"), "{err}");
    }

    #[test]
    fn pods_map_to_proxies_by_namespace_and_ip_or_node_id() {
        let pods = [pod("web-1", [10, 0, 0, 1], None), pod("web-2", [10, 0, 0, 2], None)];
        let refs: Vec<&PodInfo> = pods.iter().collect();
        let nodes = vec![
            node("something", "shop", [10, 0, 0, 1]),
            node("web-2.shop", "shop", [10, 0, 0, 9]),
            node("web-1.other", "other", [10, 0, 0, 1]),
        ];
        let target: Target = "deploy/web".parse().unwrap();
        let ids: Vec<String> =
            proxies_of(&target, "shop", &refs, &nodes).unwrap().into_iter().map(|n| n.id).collect();
        assert_eq!(ids, ["something", "web-2.shop"]);
        let err = proxies_of(&target, "empty", &refs, &nodes).unwrap_err();
        assert!(err.contains("no connected proxy") && err.contains("web-1, web-2"), "{err}");
    }

    #[test]
    fn refusals_map_to_http_statuses() {
        assert_eq!(Refusal::Unauthenticated(String::new()).status(), StatusCode::UNAUTHORIZED);
        assert_eq!(Refusal::Forbidden(String::new()).status(), StatusCode::FORBIDDEN);
        assert_eq!(Refusal::Unavailable(String::new()).status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
