//! The Kubernetes source against the fake API server: objects created through the API
//! reach the model and the xDS the control plane serves; dropped watches, 410 Gone and
//! API server restarts re-list without losing or duplicating state; status conditions
//! and Events are written back by the lease holder only; TokenReview authenticates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use weft_control::identity::{AuthError, Authenticator, SpiffeId};
use weft_control::model::Key;
use weft_control::server::{ControlConfig, KubernetesSource, RunningControl, SourceConfig};
use weft_control::source::LoadReport;
use weft_control::source::kube::{
    self as kube_source, KubeSource, KubeSourceOptions, KubernetesConfig, LeaderElection, LeaseConfig,
    NackInfo, StatusWriter, TokenReviewAuthenticator,
};
use weft_integration::eventually;
use weft_integration::fake_kube::{FakeKube, ResourceType, default_types};

mod objects {
    //! The objects of the scenario: `pay/web` split between `web-v1` and `web-v2`.

    use super::*;

    pub(crate) fn namespace(name: &str, inject: bool) -> Value {
        let annotations = if inject { json!({"weft.io/inject": "enabled"}) } else { json!({}) };
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "annotations": annotations}})
    }

    pub(crate) fn service(name: &str, app: &str, cluster_ip: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "pay"},
            "spec": {
                "type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                "selector": {"app": app},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
            "status": {"loadBalancer": {}},
        })
    }

    pub(crate) fn slice(service: &str, ips: &[&str]) -> Value {
        let endpoints: Vec<Value> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                json!({
                    "addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false},
                    "targetRef": {"kind": "Pod", "namespace": "pay", "name": format!("{service}-{i}")},
                })
            })
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-abcde"), "namespace": "pay",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        })
    }

    pub(crate) fn pod(name: &str, app: &str, ip: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "pay", "labels": {"app": app}},
            "spec": {"serviceAccountName": app, "containers": [
                {"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]},
            ]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        })
    }

    /// A v1alpha1 split (weights are quantities).
    pub(crate) fn split_v1alpha1(name: &str, weights: &[(&str, &str)]) -> Value {
        let backends: Vec<Value> = weights.iter().map(|(s, w)| json!({"service": s, "weight": w})).collect();
        json!({
            "apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
            "metadata": {"name": name, "namespace": "pay"},
            "spec": {"service": "web.pay.svc.cluster.local", "backends": backends},
        })
    }

    /// A v1alpha2 split.
    pub(crate) fn split(name: &str, weights: &[(&str, i64)]) -> Value {
        let backends: Vec<Value> = weights.iter().map(|(s, w)| json!({"service": s, "weight": w})).collect();
        json!({
            "apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
            "metadata": {"name": name, "namespace": "pay"},
            "spec": {"service": "web", "backends": backends},
        })
    }

    /// Everything but the split.
    pub(crate) async fn create_mesh(api: &FakeKube) -> anyhow::Result<()> {
        api.create(namespace("pay", true)).await?;
        api.create(service("web", "web", "10.96.0.10")).await?;
        api.create(service("web-v1", "web-v1", "10.96.0.11")).await?;
        api.create(service("web-v2", "web-v2", "10.96.0.12")).await?;
        api.create(slice("web-v1", &["10.1.0.11"])).await?;
        api.create(slice("web-v2", &["10.1.0.12"])).await?;
        api.create_with_status(pod("web-v1-0", "web-v1", "10.1.0.11")).await?;
        api.create_with_status(pod("web-v2-0", "web-v2", "10.1.0.12")).await?;
        Ok(())
    }
}

use objects::*;

fn fast() -> KubeSourceOptions {
    KubeSourceOptions { debounce: Duration::from_millis(20), ..KubeSourceOptions::default() }
}

async fn start_source(api: &FakeKube) -> anyhow::Result<KubeSource> {
    let client = api.client()?;
    Ok(tokio::time::timeout(weft_integration::patience(), kube_source::start(client, fast())).await??)
}

fn key(name: &str) -> Key {
    Key::new("pay", name)
}

fn weights(report: &LoadReport, split: &str) -> Option<Vec<(String, u64)>> {
    let s = report.state.traffic_splits.get(&key(split))?;
    Some(s.backends.iter().map(|b| (b.service.clone(), b.weight_milli)).collect())
}

/// Waits until the latest report satisfies `check` (which explains what it sees when not).
async fn report_where(
    source: &KubeSource,
    what: &str,
    check: impl Fn(&LoadReport) -> Result<(), String>,
) -> anyhow::Result<Arc<LoadReport>> {
    eventually(what, || async {
        let report = source.reports.borrow().clone();
        check(&report).map(|()| Some(report)).map_err(|e| anyhow::anyhow!(e))
    })
    .await
}

#[tokio::test]
async fn kube_objects_created_through_the_api_reach_the_model_after_the_first_sync() {
    let api = FakeKube::start().await.unwrap();
    create_mesh(&api).await.unwrap();
    api.create(split_v1alpha1("web", &[("web-v1", "950m"), ("web-v2", "50m")])).await.unwrap();

    let source = start_source(&api).await.unwrap();
    // No waiting: the first report is the synced cluster.
    let report = source.reports.borrow().clone();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let state = &report.state;
    assert!(state.namespaces["pay"].inject.unwrap());
    assert_eq!(state.services.len(), 3);
    assert_eq!(state.services[&key("web")].cluster_ip, Some("10.96.0.10".parse().unwrap()));
    assert_eq!(state.endpoint_slices[&key("web-v1-abcde")].service, "web-v1");
    assert_eq!(state.pods[&key("web-v2-0")].ip, Some("10.1.0.12".parse().unwrap()));
    assert_eq!(state.pods[&key("web-v2-0")].service_account, "web-v2");
    assert_eq!(
        weights(&report, "web").unwrap(),
        vec![("web-v1".to_string(), 950), ("web-v2".to_string(), 50)],
        "a v1alpha1 split is read as v1alpha1 although every version serves it"
    );
    assert_eq!(state.traffic_splits[&key("web")].root_service, "web");
    assert!(source.watched.contains(&"split.smi-spec.io/v1alpha4/trafficsplits".to_string()));

    // Changes flow; an invalid edit is reported and the last valid version kept.
    api.apply(split("web", &[("web-v1", 50), ("web-v2", 50)])).await.unwrap();
    report_where(&source, "the split at 50/50", |r| match weights(r, "web") {
        Some(w) if w == [("web-v1".to_string(), 50_000), ("web-v2".to_string(), 50_000)] => Ok(()),
        other => Err(format!("weights {other:?}")),
    })
    .await
    .unwrap();
    api.apply(split("web", &[("web-v1", -5), ("web-v2", 50)])).await.unwrap();
    let report = report_where(&source, "the invalid weight reported", |r| {
        if r.errors.is_empty() { Err("no error".into()) } else { Ok(()) }
    })
    .await
    .unwrap();
    assert_eq!(
        report.errors[0].to_string(),
        "TrafficSplit pay/web: spec.backends[0].weight: must not be negative (got -5)"
    );
    assert_eq!(weights(&report, "web").unwrap()[0].1, 50_000, "last valid version kept");

    api.delete("v1", "Service", "pay", "web-v2").await.unwrap();
    report_where(&source, "web-v2 gone", |r| {
        if r.state.services.contains_key(&key("web-v2")) { Err("still there".into()) } else { Ok(()) }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn kube_source_skips_smi_versions_the_cluster_does_not_serve() {
    let types: Vec<ResourceType> = default_types()
        .into_iter()
        .filter(|t| t.plural != "tcproutes")
        .map(|mut t| {
            if t.plural == "trafficsplits" {
                t.versions = vec!["v1alpha2".into()];
            }
            t
        })
        .collect();
    let api = FakeKube::start_with(types).await.unwrap();
    create_mesh(&api).await.unwrap();
    api.create(split("web", &[("web-v1", 1)])).await.unwrap();
    let source = start_source(&api).await.unwrap();
    let splits: Vec<&String> = source.watched.iter().filter(|w| w.contains("trafficsplits")).collect();
    assert_eq!(splits, ["split.smi-spec.io/v1alpha2/trafficsplits"]);
    assert!(!source.watched.iter().any(|w| w.contains("tcproutes")));
    assert_eq!(weights(&source.reports.borrow(), "web").unwrap(), vec![("web-v1".to_string(), 1000)]);
}

#[tokio::test]
async fn kube_source_does_not_report_before_every_watcher_listed() {
    let api = FakeKube::start().await.unwrap();
    create_mesh(&api).await.unwrap();
    // Pods cannot be listed for now: start() must keep waiting.
    api.fail_requests("GET /api/v1/pods", 503).await;
    let client = api.client().unwrap();
    let starting = tokio::spawn(kube_source::start(client, fast()));
    eventually("pods to be asked for again", || async {
        api.requests().await.iter().filter(|r| r.starts_with("GET /api/v1/pods")).count() >= 2
    })
    .await
    .unwrap();
    assert!(!starting.is_finished(), "start() returned before the pods were listed");
    api.clear_failures().await;
    let source =
        tokio::time::timeout(weft_integration::patience(), starting).await.unwrap().unwrap().unwrap();
    assert_eq!(source.reports.borrow().state.pods.len(), 2);
}

#[tokio::test]
async fn kube_dropped_watches_resume_and_410_gone_relists_without_losing_or_duplicating_state() {
    let api = FakeKube::start().await.unwrap();
    create_mesh(&api).await.unwrap();
    api.create(split("web", &[("web-v1", 90), ("web-v2", 10)])).await.unwrap();
    let source = start_source(&api).await.unwrap();
    let lists = || async {
        api.requests()
            .await
            .iter()
            .filter(|r| r.starts_with("GET /api/v1/services?") && !r.contains("watch="))
            .count()
    };
    eventually("every watch open", || async { api.open_watches().await >= 8 }).await.unwrap();

    // A dropped watch resumes from its resourceVersion: no new list.
    let listed = lists().await;
    assert!(api.drop_watches().await >= 8);
    api.create(service("web-v3", "web-v3", "10.96.0.13")).await.unwrap();
    report_where(&source, "web-v3 after the watch resumed", |r| {
        r.state.services.contains_key(&key("web-v3")).then_some(()).ok_or("no web-v3".into())
    })
    .await
    .unwrap();
    assert_eq!(lists().await, listed, "resumed without a re-list");

    // Watches down, history compacted, objects changed meanwhile: the watch resumes into
    // 410 Gone and the source re-lists.
    api.fail_requests("watch=true", 500).await;
    api.drop_watches().await;
    api.delete("v1", "Service", "pay", "web-v3").await.unwrap();
    api.apply(split("web", &[("web-v1", 10), ("web-v2", 90)])).await.unwrap();
    api.create_with_status(pod("web-v1-1", "web-v1", "10.1.0.21")).await.unwrap();
    api.compact().await;
    // Meanwhile the source keeps serving what it had.
    let during = source.reports.borrow().clone();
    assert!(during.state.services.contains_key(&key("web-v3")));
    assert_eq!(weights(&during, "web").unwrap()[0].1, 90_000);
    api.clear_failures().await;

    let report = report_where(&source, "the changes made while the watches were down", |r| {
        let split = weights(r, "web").map(|w| w[0].1);
        let ok = !r.state.services.contains_key(&key("web-v3"))
            && split == Some(10_000)
            && r.state.pods.contains_key(&key("web-v1-1"));
        ok.then_some(()).ok_or(format!("services {:?}, split {split:?}", r.state.services.keys()))
    })
    .await
    .unwrap();
    assert!(lists().await > listed, "410 Gone made the source re-list");
    assert!(api.requests().await.iter().any(|r| r.contains("watch=true")));
    // Nothing lost, nothing duplicated.
    assert_eq!(report.state.services.len(), 3);
    assert_eq!(report.state.pods.len(), 3);
    assert_eq!(report.state.endpoint_slices.len(), 2);
    assert_eq!(report.state.traffic_splits.len(), 1);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

#[tokio::test]
async fn kube_source_follows_the_cluster_across_an_api_server_restart() {
    let api = FakeKube::start().await.unwrap();
    create_mesh(&api).await.unwrap();
    let source = start_source(&api).await.unwrap();
    eventually("every watch open", || async { api.open_watches().await >= 8 }).await.unwrap();
    api.restart().await.unwrap();
    api.create(split("web", &[("web-v1", 1)])).await.unwrap();
    api.delete("v1", "Pod", "pay", "web-v2-0").await.unwrap();
    report_where(&source, "the split and the pod deletion after the restart", |r| {
        let ok =
            r.state.traffic_splits.contains_key(&key("web")) && !r.state.pods.contains_key(&key("web-v2-0"));
        ok.then_some(()).ok_or("not yet".into())
    })
    .await
    .unwrap();
}

// ----- TokenReview -----

#[tokio::test]
async fn kube_tokenreview_accepts_only_the_claimed_service_account() {
    let api = FakeKube::start().await.unwrap();
    api.register_token("good", "system:serviceaccount:pay:web", &["weft"]).await;
    api.register_token("other-audience", "system:serviceaccount:pay:web", &["vault"]).await;
    api.register_token("a-user", "alice", &["weft"]).await;
    let auth = TokenReviewAuthenticator::new(api.client().unwrap());
    let web = SpiffeId::new("cluster.local", "pay", "web").unwrap();
    let db = SpiffeId::new("cluster.local", "pay", "db").unwrap();

    auth.authenticate("good", &web).await.unwrap();
    match auth.authenticate("good", &db).await {
        Err(AuthError::IdentityMismatch { actual, .. }) => assert_eq!(*actual, web),
        other => panic!("another identity: {other:?}"),
    }
    for token in ["unknown", "other-audience", "a-user"] {
        assert_eq!(
            auth.authenticate(token, &web).await,
            Err(AuthError::InvalidToken(web.clone())),
            "{token}"
        );
    }
    assert_eq!(auth.authenticate("", &web).await, Err(AuthError::MissingToken));
    let review = api.requests().await.into_iter().find(|r| r.contains("tokenreviews"));
    assert_eq!(review.as_deref(), Some("POST /apis/authentication.k8s.io/v1/tokenreviews"));

    api.fail_requests("tokenreviews", 500).await;
    assert!(matches!(auth.authenticate("good", &web).await, Err(AuthError::Unavailable(_))));
}

// ----- Status and leases -----

fn condition(object: &Value, type_: &str) -> Option<(String, String, String)> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).map(|c| {
        (
            c["status"].as_str().unwrap_or("").to_string(),
            c["reason"].as_str().unwrap_or("").to_string(),
            c["message"].as_str().unwrap_or("").to_string(),
        )
    })
}

/// Waits for a TrafficSplit's condition to have `status` and `reason`; returns its message.
async fn split_condition(
    api: &FakeKube,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> anyhow::Result<String> {
    eventually(&format!("{name}: {type_}={status} ({reason})"), || async {
        let split = api.get("split.smi-spec.io/v1alpha2", "TrafficSplit", "pay", name).await;
        let got = split.as_ref().and_then(|s| condition(s, type_));
        match got {
            Some((s, r, m)) if s == status && r == reason => Ok(Some(m)),
            other => Err(anyhow::anyhow!("{other:?}")),
        }
    })
    .await
}

fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_millis(1500),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(100),
        ..LeaseConfig::new("weft-system", "weft-status", identity)
    }
}

/// A replica: its election and status writer.
struct Replica {
    election: LeaderElection,
    writer: tokio::task::JoinHandle<()>,
}

fn replica(
    api: &FakeKube,
    source: &KubeSource,
    identity: &str,
    nacks: &watch::Receiver<Vec<NackInfo>>,
) -> Replica {
    let client = api.client().unwrap();
    let election = LeaderElection::start(client.clone(), lease(identity));
    let writer = StatusWriter::new(client, identity);
    let writer = tokio::spawn(writer.run(
        source.reports.clone(),
        source.objects.clone(),
        nacks.clone(),
        election.subscribe(),
    ));
    Replica { election, writer }
}

async fn event_instances(api: &FakeKube) -> Vec<String> {
    let events = api.list("events.k8s.io/v1", "Event").await;
    events.iter().filter_map(|e| e["reportingInstance"].as_str().map(str::to_string)).collect()
}

#[tokio::test]
async fn kube_status_conditions_are_written_back_by_the_lease_holder_only() {
    let api = FakeKube::start().await.unwrap();
    create_mesh(&api).await.unwrap();
    api.create(split("web", &[("web-v1", 90), ("web-v2", 10)])).await.unwrap();
    let source = start_source(&api).await.unwrap();
    let (nack_tx, nacks) = watch::channel(Vec::new());
    let a = replica(&api, &source, "weft-a", &nacks);
    let b = replica(&api, &source, "weft-b", &nacks);

    let message = split_condition(&api, "web", "Accepted", "True", "Accepted").await.unwrap();
    assert_eq!(message, "splits traffic to web");
    split_condition(&api, "web", "Programmed", "True", "Programmed").await.unwrap();
    let stored = api.get("split.smi-spec.io/v1alpha2", "TrafficSplit", "pay", "web").await.unwrap();
    assert_eq!(stored["status"]["conditions"][0]["observedGeneration"], 1);
    assert_eq!(u8::from(a.election.is_leader()) + u8::from(b.election.is_leader()), 1, "exactly one leader");
    let (leader_id, leader, follower) =
        if a.election.is_leader() { ("weft-a", a, b) } else { ("weft-b", b, a) };
    eventually("the Accepted event", || async { !event_instances(&api).await.is_empty() }).await.unwrap();
    let instances = event_instances(&api).await;
    assert!(instances.iter().all(|i| i == leader_id), "events from {instances:?}, leader {leader_id}");
    let lease = api.get("coordination.k8s.io/v1", "Lease", "weft-system", "weft-status").await.unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], leader_id);

    // A backend without endpoints, a conflicting newer split, NACKs.
    api.apply(slice("web-v2", &[])).await.unwrap();
    let message = split_condition(&api, "web", "Accepted", "True", "BackendWithoutEndpoints").await.unwrap();
    assert!(message.contains("backend web-v2 has no ready endpoints"), "{message}");
    api.create(split("web-newer", &[("web-v1", 1)])).await.unwrap();
    let message = split_condition(&api, "web-newer", "Accepted", "False", "Conflicted").await.unwrap();
    assert!(message.contains("pay/web"), "{message}");
    nack_tx.send_replace(vec![NackInfo {
        proxy: "client-1".into(),
        namespace: "pay".into(),
        service_account: "client".into(),
        detail: "weights sum to zero".into(),
        resources: vec!["outbound|80||web-v1.pay.svc.cluster.local".into()],
    }]);
    let message = split_condition(&api, "web", "Programmed", "False", "Nacked").await.unwrap();
    assert_eq!(message, "NACKed by 1 proxy; first error (client-1): weights sum to zero");

    // The follower wrote nothing; when the leader goes, it takes over.
    let instances = event_instances(&api).await;
    assert!(instances.iter().all(|i| i == leader_id), "events from {instances:?}");
    leader.writer.abort();
    leader.election.release().await;
    eventually("the follower to lead", || async { follower.election.is_leader() }).await.unwrap();
    api.apply(split("web", &[("web-v1", -1)])).await.unwrap();
    let message = split_condition(&api, "web", "Accepted", "False", "InvalidWeight").await.unwrap();
    assert!(message.starts_with("spec.backends[0].weight: must not be negative"), "{message}");
    let instances = event_instances(&api).await;
    assert!(instances.iter().any(|i| i != leader_id), "the new leader recorded events: {instances:?}");
    let lease = api.get("coordination.k8s.io/v1", "Lease", "weft-system", "weft-status").await.unwrap();
    assert_ne!(lease["spec"]["holderIdentity"], leader_id);
    assert!(lease["spec"]["leaseTransitions"].as_i64().unwrap() >= 1);
    follower.writer.abort();
}

#[tokio::test]
async fn kube_lease_passes_to_another_replica_when_its_holder_stops_renewing() {
    let api = FakeKube::start().await.unwrap();
    let first = LeaderElection::start(api.client().unwrap(), lease("first"));
    eventually("first leads", || async { first.is_leader() }).await.unwrap();
    let second = LeaderElection::start(api.client().unwrap(), lease("second"));
    // Several renew periods: the second must not take a lease that is being renewed.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(first.is_leader() && !second.is_leader());
    drop(first); // Stops renewing without releasing.
    eventually("second leads once the lease expired", || async { second.is_leader() }).await.unwrap();
    let lease = api.get("coordination.k8s.io/v1", "Lease", "weft-system", "weft-status").await.unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "second");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

#[tokio::test]
async fn kube_status_goes_on_the_object_when_the_crd_has_no_status_subresource() {
    let types: Vec<ResourceType> = default_types()
        .into_iter()
        .map(|t| if t.plural == "trafficsplits" { t.without_status() } else { t })
        .collect();
    let api = FakeKube::start_with(types).await.unwrap();
    create_mesh(&api).await.unwrap();
    api.create(split("web", &[("web-v1", 1)])).await.unwrap();
    let source = start_source(&api).await.unwrap();
    let (_nack_tx, nacks) = watch::channel(Vec::new());
    let only = replica(&api, &source, "weft-a", &nacks);
    split_condition(&api, "web", "Accepted", "True", "Accepted").await.unwrap();
    split_condition(&api, "web", "Programmed", "True", "Programmed").await.unwrap();
    // Settled: no more writes (each one would bump the generation here).
    let settled = api.get("split.smi-spec.io/v1alpha2", "TrafficSplit", "pay", "web").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = api.get("split.smi-spec.io/v1alpha2", "TrafficSplit", "pay", "web").await.unwrap();
    assert_eq!(settled["metadata"]["resourceVersion"], later["metadata"]["resourceVersion"]);
    only.writer.abort();
}

// ----- End to end: the control plane fed by the Kubernetes source -----

/// The control plane fed by the Kubernetes source, as `weft control --source kubernetes`
/// runs it (in-process, plaintext, no status writer or injector): xDS on `ip`.
async fn control(api: &FakeKube, ip: std::net::IpAddr) -> anyhow::Result<RunningControl> {
    let kube = KubernetesSource {
        client: api.client()?,
        runtime: KubernetesConfig { source: fast(), lease: None },
        namespace: "weft-system".into(),
        ca_secret: "weft-ca".into(),
        webhook: None,
        trust_bundles: false,
    };
    let config = ControlConfig {
        source: SourceConfig::Kubernetes(Box::new(kube)),
        xds_addr: std::net::SocketAddr::new(ip, 0),
        admin_addr: std::net::SocketAddr::new(ip, 0),
        reload_interval: Duration::from_millis(100),
        mesh: weft_control::translate::MeshOptions::plaintext(),
        identity: None,
    };
    let started = weft_control::server::start(config);
    Ok(tokio::time::timeout(weft_integration::patience(), started).await??)
}

use weft_control::bootstrap::AdsMode;
use weft_integration::load;
use weft_integration::{Backend, Proxy, ProxyConfig, ProxyKind, Subnet};

/// web-v1 and web-v2 as plain (unmeshed) backends on the subnet, their EndpointSlices
/// pointing at them, and a split of `web` created through the API.
async fn routed_mesh(api: &FakeKube, net: &Subnet) -> anyhow::Result<(Backend, Backend)> {
    let v1 = Backend::start(net.addr(11, 8080), "web-v1").await?;
    let v2 = Backend::start(net.addr(12, 8080), "web-v2").await?;
    api.create(namespace("pay", false)).await?;
    api.create(service("web", "web", "10.96.0.10")).await?;
    api.create(service("web-v1", "web-v1", "10.96.0.11")).await?;
    api.create(service("web-v2", "web-v2", "10.96.0.12")).await?;
    api.create(slice("web-v1", &[&net.ip(11).to_string()])).await?;
    api.create(slice("web-v2", &[&net.ip(12).to_string()])).await?;
    api.create(split("web", &[("web-v1", 100), ("web-v2", 0)])).await?;
    Ok((v1, v2))
}

/// Who answers requests for `web` sent through the client's proxy.
async fn answers(outbound: std::net::SocketAddr) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..10 {
        match load::send(outbound, "web", "/").await {
            Ok((200, body)) => out.push(body.trim().to_string()),
            Ok((status, body)) => out.push(format!("{status} {body}")),
            Err(e) => out.push(format!("error {e:#}")),
        }
    }
    out
}

async fn split_routes_end_to_end(kind: ProxyKind) {
    let net = Subnet::claim().unwrap();
    let api = FakeKube::start().await.unwrap();
    let (_v1, _v2) = routed_mesh(&api, &net).await.unwrap();
    let control = control(&api, net.ip(250)).await.unwrap();
    let config = ProxyConfig::new("client-1", "pay", "client", net.ip(2), control.xds_addr, AdsMode::Delta);
    let proxy = Proxy::start(kind, &config).await.unwrap();
    let outbound = std::net::SocketAddr::new(net.ip(2), weft_control::translate::OUTBOUND_PORT);

    eventually("all of web to web-v1", || async {
        let seen = answers(outbound).await;
        anyhow::ensure!(seen.iter().all(|s| s == "web-v1"), "{seen:?}");
        anyhow::Ok(true)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", proxy.log_tail(30)));

    // The canary flips through the API; the proxy follows.
    api.apply(split("web", &[("web-v1", 0), ("web-v2", 100)])).await.unwrap();
    eventually("all of web to web-v2", || async {
        let seen = answers(outbound).await;
        anyhow::ensure!(seen.iter().all(|s| s == "web-v2"), "{seen:?}");
        anyhow::Ok(true)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", proxy.log_tail(30)));

    // A dropped watch and a 410 re-list while the split moves back: the proxy follows.
    api.fail_requests("watch=true", 500).await;
    api.drop_watches().await;
    api.apply(split("web", &[("web-v1", 100), ("web-v2", 0)])).await.unwrap();
    api.compact().await;
    api.clear_failures().await;
    eventually("all of web back to web-v1 after the re-list", || async {
        let seen = answers(outbound).await;
        anyhow::ensure!(seen.iter().all(|s| s == "web-v1"), "{seen:?}");
        anyhow::Ok(true)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", proxy.log_tail(30)));
}

#[tokio::test]
async fn kube_split_created_through_the_api_routes_weft_proxy() {
    split_routes_end_to_end(ProxyKind::Weft).await;
}

#[tokio::test]
async fn kube_split_created_through_the_api_routes_envoy() {
    split_routes_end_to_end(ProxyKind::Envoy).await;
}

#[tokio::test]
async fn kube_state_reaches_the_xds_a_proxy_is_sent() {
    use weft_integration::xds_client::{ScriptedAdsClient, decode_all, node, request};
    use weft_xds_protos::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use weft_xds_protos::type_url;

    let net = Subnet::claim().unwrap();
    let api = FakeKube::start().await.unwrap();
    let _backends = routed_mesh(&api, &net).await.unwrap();
    let control = control(&api, net.ip(250)).await.unwrap();
    let mut ads =
        ScriptedAdsClient::connect_sotw(control.xds_addr, node("c", "pay", "client", &net.ip(2).to_string()))
            .await
            .unwrap();
    let cluster = "outbound|80||web-v2.pay.svc.cluster.local";
    ads.send(request(type_url::ENDPOINT, &[cluster], "", "", None)).unwrap();
    let first = ads.next_response(weft_integration::patience()).await.unwrap();
    let cla: Vec<ClusterLoadAssignment> = decode_all(&first.resources).unwrap();
    let hosts = |cla: &[ClusterLoadAssignment]| {
        cla.iter().flat_map(|c| &c.endpoints).map(|e| e.lb_endpoints.len()).sum::<usize>()
    };
    assert_eq!(hosts(&cla), 1, "{cla:?}");
    ads.ack(&first).unwrap();

    // web-v2 scales out through its EndpointSlice: EDS follows.
    let ips = [net.ip(12).to_string(), net.ip(13).to_string()];
    api.apply(slice("web-v2", &[&ips[0], &ips[1]])).await.unwrap();
    let next = ads.next_response(weft_integration::patience()).await.unwrap();
    let cla: Vec<ClusterLoadAssignment> = decode_all(&next.resources).unwrap();
    assert_eq!(hosts(&cla), 2, "{cla:?}");
}
