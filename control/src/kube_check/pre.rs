//! `weft check --pre`: can weft be installed on this cluster?

use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::version::Info;
use kube::api::PostParams;
use kube::{Api, Client};

use super::{Checklist, http_date};
use crate::inject::native_sidecars_supported;
use crate::install::{NAMESPACE, WEBHOOK_CONFIGURATION};

const API: &str = "Kubernetes API";
const VERSION: &str = "Kubernetes version";
const PERMISSIONS: &str = "Permissions";
const CLOCK: &str = "Clock";
const EXISTING: &str = "Existing installation";

/// The oldest Kubernetes minor version weft supports (1.25: EndpointSlice v1, PodDisruptionBudget
/// policy/v1, projected tokens everywhere).
pub const MIN_MINOR: u32 = 25;
/// Clock skew above which certificates may be refused as not yet valid (they are backdated a
/// minute).
const SKEW_FAIL: Duration = Duration::from_secs(60);
/// Clock skew worth a warning.
const SKEW_WARN: Duration = Duration::from_secs(5);

/// What `weft install` needs to create: (group, resource, namespace).
const NEEDED: [(&str, &str, Option<&str>); 12] = [
    ("", "namespaces", None),
    ("apiextensions.k8s.io", "customresourcedefinitions", None),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", None),
    ("rbac.authorization.k8s.io", "clusterroles", None),
    ("rbac.authorization.k8s.io", "clusterrolebindings", None),
    ("rbac.authorization.k8s.io", "roles", Some(NAMESPACE)),
    ("rbac.authorization.k8s.io", "rolebindings", Some(NAMESPACE)),
    ("", "serviceaccounts", Some(NAMESPACE)),
    ("", "services", Some(NAMESPACE)),
    ("apps", "deployments", Some(NAMESPACE)),
    ("policy", "poddisruptionbudgets", Some(NAMESPACE)),
    ("", "configmaps", Some(NAMESPACE)),
];

/// Runs the pre-install checks against the cluster `client` talks to.
pub async fn pre_install(client: &Client) -> Checklist {
    let mut list = Checklist::default();
    let Some(version) = api_and_clock(client, &mut list).await else {
        return list;
    };
    check_version(&version, &mut list);
    for (group, resource, namespace) in NEEDED {
        can_create(client, group, resource, namespace, &mut list).await;
    }
    existing(client, &mut list).await;
    list
}

/// GET /version: reachability, the version, and the server's clock from its `Date` header.
pub(super) async fn api_and_clock(client: &Client, list: &mut Checklist) -> Option<Info> {
    let unreachable_fix = "check the kubeconfig and context (`kubectl config current-context`, \
                           `kubectl cluster-info`) and that the cluster is running";
    let request = match http::Request::get("/version").body(kube::client::Body::empty()) {
        Ok(r) => r,
        Err(e) => {
            list.fail(API, format!("cannot build a request: {e}"), unreachable_fix);
            return None;
        }
    };
    let sent = SystemTime::now();
    let clock = Instant::now();
    let response = match client.send(request).await {
        Ok(r) => r,
        Err(e) => {
            list.fail(API, format!("the API server cannot be reached: {e}"), unreachable_fix);
            return None;
        }
    };
    let round_trip = clock.elapsed();
    let status = response.status();
    let date = response.headers().get(http::header::DATE).and_then(|d| d.to_str().ok()).map(str::to_string);
    let body = match response.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            list.fail(API, format!("the API server's answer was cut: {e}"), unreachable_fix);
            return None;
        }
    };
    if !status.is_success() {
        let fix = if status == http::StatusCode::UNAUTHORIZED {
            "your credentials were refused: log in again or refresh the kubeconfig's token"
        } else {
            unreachable_fix
        };
        list.fail(API, format!("GET /version answered {status}"), fix);
        return None;
    }
    let info: Info = match serde_json::from_slice(&body) {
        Ok(info) => info,
        Err(e) => {
            list.fail(API, format!("GET /version is not a Kubernetes version: {e}"), unreachable_fix);
            return None;
        }
    };
    list.ok(API, format!("the API server answers ({})", info.git_version));

    // The server stamped its clock somewhere during the round trip; take the middle.
    match date.as_deref().and_then(http_date::parse_http_date) {
        Some(server) => {
            let local = sent + round_trip / 2;
            let (skew, ahead) = match server.duration_since(local) {
                Ok(d) => (d, "ahead of"),
                Err(e) => (e.duration(), "behind"),
            };
            // The header has whole seconds: a second of skew is noise.
            let slack = Duration::from_secs(1) + round_trip / 2;
            let skew = skew.saturating_sub(slack);
            let what = format!("the API server's clock is {}s {ahead} this machine's", skew.as_secs());
            let fix = "synchronise the clocks (NTP on this machine and on the nodes): certificates and \
                       tokens are refused while they disagree";
            if skew > SKEW_FAIL {
                list.fail(CLOCK, what, fix);
            } else if skew > SKEW_WARN {
                list.warn(CLOCK, what, fix);
            } else {
                list.ok(CLOCK, "this machine's clock agrees with the API server's");
            }
        }
        None => list.warn(
            CLOCK,
            "the API server sent no Date header: clock skew not checked",
            "compare `date -u` here with a node's",
        ),
    }
    Some(info)
}

fn check_version(info: &Info, list: &mut Checklist) {
    let minor: Option<u32> = info.minor.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok();
    let shown = format!("{}.{}", info.major, info.minor);
    let modern_major = info.major == "1" && minor.is_some();
    if modern_major && minor.is_some_and(|m| m < MIN_MINOR) {
        list.fail(
            VERSION,
            format!("Kubernetes {shown} is older than 1.{MIN_MINOR}, the oldest weft supports"),
            format!("upgrade the cluster to 1.{MIN_MINOR} or later (1.29+ for native sidecars)"),
        );
    } else if native_sidecars_supported(&info.major, &info.minor) {
        list.ok(VERSION, format!("Kubernetes {shown}: supported, with native sidecars"));
    } else if modern_major {
        list.warn(
            VERSION,
            format!("Kubernetes {shown} has no native sidecars: proxies are injected as regular containers"),
            "upgrade to 1.29 or later so that apps start after their proxy is ready and Jobs complete",
        );
    } else {
        list.warn(
            VERSION,
            format!("cannot read the version {shown:?}"),
            format!("make sure the cluster runs Kubernetes 1.{MIN_MINOR} or later"),
        );
    }
}

/// A SelfSubjectAccessReview for `create` on a resource.
async fn can_create(
    client: &Client,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    list: &mut Checklist,
) {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                verb: Some("create".to_string()),
                namespace: namespace.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let what = match (group, namespace) {
        ("", None) => resource.to_string(),
        ("", Some(ns)) => format!("{resource} in {ns}"),
        (g, None) => format!("{resource}.{g}"),
        (g, Some(ns)) => format!("{resource}.{g} in {ns}"),
    };
    let fix = format!(
        "weft install needs a cluster admin: use an admin context, or get a role that allows \
         `create` on {what} (check with `kubectl auth can-i create {resource}{}`)",
        namespace.map(|ns| format!(" -n {ns}")).unwrap_or_default()
    );
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    match api.create(&PostParams::default(), &review).await {
        Ok(answer) => match answer.status {
            Some(status) if status.allowed => list.ok(PERMISSIONS, format!("can create {what}")),
            Some(status) => {
                let why =
                    status.reason.filter(|r| !r.is_empty()).map(|r| format!(" ({r})")).unwrap_or_default();
                list.fail(PERMISSIONS, format!("cannot create {what}{why}"), fix);
            }
            None => list.fail(PERMISSIONS, format!("cannot tell whether {what} may be created"), fix),
        },
        Err(e) => list.fail(PERMISSIONS, format!("cannot ask whether {what} may be created: {e}"), fix),
    }
}

/// A previous installation: the namespace or the webhook configuration exists; SMI CRDs from
/// another installer are worth a warning.
async fn existing(client: &Client, list: &mut Checklist) {
    let uninstall = "weft is installed already: run `weft check --kubernetes` to check it, upgrade with \
                     `weft install | kubectl apply -f -`, or remove it first with \
                     `weft uninstall | kubectl delete -f -`";
    let mut found = false;
    match Api::<Namespace>::all(client.clone()).get_opt(NAMESPACE).await {
        Ok(Some(_)) => {
            found = true;
            list.fail(EXISTING, format!("namespace {NAMESPACE} already exists"), uninstall);
        }
        Ok(None) => {}
        Err(e) => list.warn(
            EXISTING,
            format!("cannot look for namespace {NAMESPACE}: {e}"),
            "grant get on namespaces",
        ),
    }
    match Api::<MutatingWebhookConfiguration>::all(client.clone()).get_opt(WEBHOOK_CONFIGURATION).await {
        Ok(Some(_)) => {
            found = true;
            list.fail(
                EXISTING,
                format!("MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION} already exists"),
                uninstall,
            );
        }
        Ok(None) => {}
        Err(e) => list.warn(
            EXISTING,
            format!("cannot look for MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION}: {e}"),
            "grant get on mutatingwebhookconfigurations",
        ),
    }
    match Api::<CustomResourceDefinition>::all(client.clone()).list(&Default::default()).await {
        Ok(crds) => {
            let foreign: Vec<String> = crds
                .items
                .iter()
                .filter(|c| c.spec.group.ends_with("smi-spec.io"))
                .filter(|c| {
                    c.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("app.kubernetes.io/part-of"))
                        .map(String::as_str)
                        != Some("weft")
                })
                .filter_map(|c| c.metadata.name.clone())
                .collect();
            if !foreign.is_empty() {
                list.warn(
                    EXISTING,
                    format!("SMI CRDs installed by something else: {}", foreign.join(", ")),
                    "weft install replaces their definitions with weft's (every SMI version stays served); \
                     make sure no other SMI implementation still needs its own",
                );
            }
        }
        Err(e) => {
            list.warn(EXISTING, format!("cannot list CRDs: {e}"), "grant list on customresourcedefinitions")
        }
    }
    if !found {
        list.ok(EXISTING, "weft is not installed yet");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(major: &str, minor: &str) -> Info {
        Info {
            major: major.into(),
            minor: minor.into(),
            git_version: format!("v{major}.{minor}.0"),
            ..Default::default()
        }
    }

    #[test]
    fn versions_below_the_minimum_fail_and_below_1_29_warn() {
        use super::super::Status;
        for (minor, want) in
            [("24", Status::Fail), ("27+", Status::Warn), ("29", Status::Ok), ("33", Status::Ok)]
        {
            let mut list = Checklist::default();
            check_version(&info("1", minor), &mut list);
            assert_eq!(list.checks[0].status, want, "1.{minor}: {:?}", list.checks[0]);
        }
    }
}
