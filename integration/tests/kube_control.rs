//! `weft control --source kubernetes`, the real binary, against the fake API server.
//!
//! The control plane reads the cluster through a kubeconfig (plain HTTP), makes its CA and
//! stores it in the `weft-ca` Secret, publishes the trust bundle into meshed namespaces,
//! certifies proxies whose ServiceAccount tokens TokenReview accepts, serves the split
//! created through the API to weft-proxy and to stock Envoy (with its weft-agent), writes
//! the TrafficSplit's status from the replica holding the Lease, and serves the sidecar
//! injector over TLS with a certificate the Secret's CA issued, whose root it patched into
//! the webhook configuration's caBundle.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Secret;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use weft_control::bootstrap::AdsMode;
use weft_control::install::{CA_SECRET, InstallOptions, NAMESPACE, STATUS_LEASE, WEBHOOK_CONFIGURATION};
use weft_control::translate::OUTBOUND_PORT;
use weft_integration::child::LoggedChild;
use weft_integration::fake_kube::FakeKube;
use weft_integration::fake_kube::extras::KubeFront;
use weft_integration::identity::{
    CONTROL_SERVER_NAME, MeshIdentity, client_config, pem_certificates, tls_channel,
};
use weft_integration::{Backend, Proxy, ProxyConfig, ProxyKind, Subnet, eventually, load};
use weft_xds_protos::identity::CertifyRequest;
use weft_xds_protos::identity::identity_client::IdentityClient;
use weft_xds_protos::spiffe::SpiffeId;

const TRUST_DOMAIN: &str = "cluster.local";
const ADMISSION_FIXTURE: &str = include_str!("fixtures/admission/pod-create.json");
const WEBHOOK_HOST: &str = "weft-webhook.weft-system.svc";

// ----- the cluster -----

mod objects {
    //! `pay/web`, split 95/5 between `web-v1` and `web-v2`, whose pods are meshed.

    use super::*;

    pub(crate) fn namespace(name: &str, inject: Option<&str>) -> Value {
        let annotations = match inject {
            Some(value) => json!({"weft.io/inject": value}),
            None => json!({}),
        };
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "annotations": annotations}})
    }

    pub(crate) fn service(name: &str, cluster_ip: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "pay"},
            "spec": {
                "type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
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

    pub(crate) fn slice(service: &str, pod: &str, ip: &str) -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-abcde"), "namespace": "pay",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{
                "addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": "pay", "name": pod},
            }],
        })
    }

    /// A v1alpha1 TrafficSplit of `web`: weights are quantities.
    pub(crate) fn split(v1: &str, v2: &str) -> Value {
        json!({
            "apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
            "metadata": {"name": "web-split", "namespace": "pay"},
            "spec": {"service": "web.pay.svc.cluster.local", "backends": [
                {"service": "web-v1", "weight": v1}, {"service": "web-v2", "weight": v2},
            ]},
        })
    }

    /// The ServiceAccount token TokenReview accepts for `pay/<sa>` (audience `weft`).
    pub(crate) fn token(sa: &str) -> String {
        format!("sa-token-pay-{sa}")
    }

    /// The mesh of the scenario, created through the API, on the subnet whose pod IPs
    /// `ip(host)` gives; the webhook configuration as `weft install` makes it; the tokens.
    pub(crate) async fn create(api: &FakeKube, ip: impl Fn(u8) -> String) -> anyhow::Result<()> {
        let webhook = InstallOptions::default()
            .documents()?
            .into_iter()
            .find(|d| d.kind == "MutatingWebhookConfiguration")
            .expect("weft install makes a webhook configuration");
        api.create(serde_json::to_value(&webhook.value)?).await?;
        api.create(namespace(NAMESPACE, Some("disabled"))).await?;
        api.create(namespace("pay", Some("enabled"))).await?;
        api.create(service("web", "10.96.0.10")).await?;
        for (app, host, cluster_ip) in [("web-v1", 11, "10.96.0.11"), ("web-v2", 12, "10.96.0.12")] {
            api.create(service(app, cluster_ip)).await?;
            api.create_with_status(pod(&format!("{app}-0"), app, &ip(host))).await?;
            api.create(slice(app, &format!("{app}-0"), &ip(host))).await?;
        }
        api.create(split("950m", "50m")).await?;
        for sa in ["web-v1", "web-v2", "client"] {
            api.register_token(&token(sa), &format!("system:serviceaccount:pay:{sa}"), &["weft"]).await;
        }
        Ok(())
    }
}

/// The fake API server with the kinds `weft install` creates (the webhook configuration).
async fn fake_cluster(net: &Subnet) -> FakeKube {
    let api = FakeKube::start_with(KubeFront::types()).await.unwrap();
    objects::create(&api, |host| net.ip(host).to_string()).await.unwrap();
    api
}

// ----- the control plane -----

/// `weft control --source kubernetes` as a child process, on `.host` of the subnet.
struct Control {
    process: LoggedChild,
    xds: SocketAddr,
    admin: SocketAddr,
    webhook: SocketAddr,
    _files: tempfile::TempDir,
}

impl Control {
    /// Starts a replica named `pod_name` and waits until it serves (`/ready`).
    async fn start(api: &FakeKube, net: &Subnet, host: u8, pod_name: &str) -> Control {
        let files = tempfile::Builder::new().prefix("weft-kube-control-").tempdir().unwrap();
        let kubeconfig = files.path().join("kubeconfig");
        std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
        let (xds, admin, webhook) = (net.addr(host, 8086), net.addr(host, 8085), net.addr(host, 8443));
        let mut command = Command::new(weft_integration::weft_bin().unwrap());
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("WEFT_") || key.starts_with("POD_") {
                command.env_remove(key);
            }
        }
        command
            .env("XDG_STATE_HOME", files.path().join("state"))
            .args(["control", "--source", "kubernetes", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--xds-addr", &xds.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--webhook-addr", &webhook.to_string()])
            .args(["--pod-name", pod_name])
            .args(["--log", "info,weft_control=debug"]);
        let process = LoggedChild::spawn(pod_name, command).unwrap();
        process.wait_control_ready(admin).await;
        Control { process, xds, admin, webhook, _files: files }
    }

    /// `GET` on the admin API, as JSON.
    async fn admin_json(&self, path: &str) -> Value {
        let (status, body) = load::send(self.admin, "admin", path).await.unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// SIGTERM, as the kubelet stops a pod, and waits for a clean exit.
    async fn terminate(self) {
        let sent = Command::new("kill").args(["-TERM", &self.process.pid().to_string()]).status().unwrap();
        assert!(sent.success());
        let status = eventually("weft control to exit", || async { self.process.exited() }).await.unwrap();
        assert!(status.success(), "weft control exited with {status}\n{}", self.process.log_tail(40));
    }
}

// ----- what the control plane wrote into the cluster -----

/// The CA root (PEM) in the `weft-ca` Secret.
async fn secret_root(api: &FakeKube) -> Option<String> {
    let secret: Secret = serde_json::from_value(api.get("v1", "Secret", NAMESPACE, CA_SECRET).await?).ok()?;
    let cert = secret.data?.remove("tls.crt")?;
    String::from_utf8(cert.0).ok()
}

/// The `ca.pem` of the `weft-trust-bundle` ConfigMap in `namespace`.
async fn trust_bundle(api: &FakeKube, namespace: &str) -> Option<String> {
    let cm = api.get("v1", "ConfigMap", namespace, "weft-trust-bundle").await?;
    cm["data"]["ca.pem"].as_str().map(str::to_string)
}

/// What a pod of `pay` is handed: the trust bundle as its `--ca-file` (in a directory laid out
/// as a CA directory, as the harness expects), the trust domain.
async fn pod_identity(api: &FakeKube, dir: &Path) -> MeshIdentity {
    let bundle =
        eventually("the trust bundle in pay", || async { trust_bundle(api, "pay").await }).await.unwrap();
    std::fs::write(dir.join(weft_integration::identity::ROOT_CERT_FILE), bundle).unwrap();
    MeshIdentity { ca_dir: dir.to_path_buf(), trust_domain: TRUST_DOMAIN.to_string() }
}

fn condition(object: &Value, type_: &str) -> Option<(String, String, String)> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).map(|c| {
        (
            c["status"].as_str().unwrap_or("").to_string(),
            c["reason"].as_str().unwrap_or("").to_string(),
            c["message"].as_str().unwrap_or("").to_string(),
        )
    })
}

/// Waits for the split's condition `type_` to be `status`; returns its reason and message.
async fn split_condition(api: &FakeKube, type_: &str, status: &str) -> (String, String) {
    eventually(&format!("web-split: {type_}={status}"), || async {
        let split = api.get("split.smi-spec.io/v1alpha1", "TrafficSplit", "pay", "web-split").await;
        match split.as_ref().and_then(|s| condition(s, type_)) {
            Some((s, reason, message)) if s == status => anyhow::Ok(Some((reason, message))),
            other => Err(anyhow::anyhow!("{other:?}")),
        }
    })
    .await
    .unwrap()
}

async fn lease_holder(api: &FakeKube) -> Option<String> {
    let lease = api.get("coordination.k8s.io/v1", "Lease", NAMESPACE, STATUS_LEASE).await?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

// ----- the data path -----

/// A meshed proxy of `pay/<sa>` at `.host`, certified with its ServiceAccount token.
async fn proxy(
    kind: ProxyKind,
    control: &Control,
    identity: &MeshIdentity,
    net: &Subnet,
    sa: &str,
    host: u8,
) -> Proxy {
    let config =
        ProxyConfig::new(&format!("{sa}-{kind}"), "pay", sa, net.ip(host), control.xds, AdsMode::Delta)
            .with_identity(Some(identity.clone()))
            .with_token(objects::token(sa));
    Proxy::start(kind, &config).await.unwrap()
}

/// Waits until requests for `web` through the proxy at `.host` split as `want_v2` (a share of
/// web-v2) within `tolerance`, with no failures.
async fn splits(net: &Subnet, host: u8, want_v2: f64, tolerance: f64) -> anyhow::Result<()> {
    let outbound = net.addr(host, OUTBOUND_PORT);
    eventually(&format!("web-v2's share through .{host} to be {want_v2}"), || async {
        let tally = load::run(outbound, "web", "/", 400, 8).await;
        anyhow::ensure!(tally.failures == 0, "failures: {tally:?}");
        let share = tally.share("web-v2");
        anyhow::ensure!(tally.share("web-v1") + share > 0.999, "others answered: {tally:?}");
        anyhow::ensure!((share - want_v2).abs() <= tolerance, "web-v2 share {share}: {tally:?}");
        anyhow::Ok(true)
    })
    .await
}

#[tokio::test]
async fn kube_control_serves_the_split_to_weft_proxy_and_envoy_certified_by_tokenreview() {
    let net = Subnet::claim().unwrap();
    let api = fake_cluster(&net).await;
    let control = Control::start(&api, &net, 250, "weft-control-a").await;
    let files = tempfile::tempdir().unwrap();
    let identity = pod_identity(&api, files.path()).await;
    assert_eq!(Some(std::fs::read_to_string(identity.ca_file()).unwrap()), secret_root(&api).await);

    // The backends and their (server-side) proxies: meshed pods are dialled over mTLS.
    let _v1 = Backend::start(net.addr(11, 8080), "web-v1").await.unwrap();
    let _v2 = Backend::start(net.addr(12, 8080), "web-v2").await.unwrap();
    let _v1_proxy = proxy(ProxyKind::Weft, &control, &identity, &net, "web-v1", 11).await;
    let _v2_proxy = proxy(ProxyKind::Envoy, &control, &identity, &net, "web-v2", 12).await;
    // The clients: weft-proxy, and stock Envoy with its weft-agent.
    let weft_client = proxy(ProxyKind::Weft, &control, &identity, &net, "client", 2).await;
    let envoy_client = proxy(ProxyKind::Envoy, &control, &identity, &net, "client", 3).await;

    splits(&net, 2, 0.05, 0.035).await.unwrap_or_else(|e| panic!("{e:#}\n{}", weft_client.log_tail(30)));
    splits(&net, 3, 0.05, 0.035).await.unwrap_or_else(|e| panic!("{e:#}\n{}", envoy_client.log_tail(30)));

    // Every certificate came through TokenReview, for the identity of its token.
    let report = control.admin_json("/debug/identity").await;
    assert_eq!(report["ca_dir"], format!("secret {NAMESPACE}/{CA_SECRET}"));
    let mut issued: Vec<&str> =
        report["issued"].as_array().unwrap().iter().filter_map(|i| i["identity"].as_str()).collect();
    issued.sort_unstable();
    issued.dedup();
    assert_eq!(
        issued,
        [
            "spiffe://cluster.local/ns/pay/sa/client",
            "spiffe://cluster.local/ns/pay/sa/web-v1",
            "spiffe://cluster.local/ns/pay/sa/web-v2"
        ]
    );
    let reviews = api.requests().await.iter().filter(|r| r.contains("tokenreviews")).count();
    assert!(reviews >= 4, "{reviews} TokenReviews for two weft-proxies and two weft-agents");

    // The lease holder wrote the split's status.
    let (reason, message) = split_condition(&api, "Accepted", "True").await;
    assert_eq!((reason.as_str(), message.as_str()), ("Accepted", "splits traffic to web"));
    split_condition(&api, "Programmed", "True").await;
    assert_eq!(lease_holder(&api).await.as_deref(), Some("weft-control-a"));

    // The canary moves through the API; both clients follow.
    api.apply(objects::split("500m", "500m")).await.unwrap();
    splits(&net, 2, 0.5, 0.12).await.unwrap();
    splits(&net, 3, 0.5, 0.12).await.unwrap();
}

// ----- identity, injection, the Lease -----

/// A workload certificate request for `pay/<sa>` with `token`, as a proxy makes it.
async fn certify(control: &Control, root_pem: &str, sa: &str, token: &str) -> Result<(), tonic::Status> {
    let id = SpiffeId::new(TRUST_DOMAIN, "pay", sa).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap();
    let roots = pem_certificates(root_pem).unwrap();
    let control_id = SpiffeId::new(TRUST_DOMAIN, "weft-system", "weft-control").unwrap();
    let config = client_config(None, &roots, Some(control_id), &[b"h2"]).unwrap();
    let channel = tls_channel(control.xds, CONTROL_SERVER_NAME, config).await.unwrap();
    let request = CertifyRequest {
        identity: id.to_string(),
        token: token.to_string(),
        certificate_signing_request: csr.der().to_vec(),
    };
    IdentityClient::new(channel).certify(request).await.map(drop)
}

/// POSTs an AdmissionReview to the injector over TLS, trusting only `root_pem` for the
/// webhook Service's name, as the API server does with the caBundle.
async fn admission(webhook: SocketAddr, root_pem: &str, review: &Value) -> anyhow::Result<Value> {
    let mut roots = rustls::RootCertStore::empty();
    for root in pem_certificates(root_pem)? {
        roots.add(root)?;
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(webhook).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(WEBHOOK_HOST)?, tcp)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let request = http::Request::post("/inject")
        .header(http::header::HOST, WEBHOOK_HOST)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(review.to_string())))?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(response.status() == 200, "status {}", response.status());
    Ok(serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?)
}

/// The fixture's pod, created in `namespace`.
fn review_in(namespace: &str) -> Value {
    let mut review: Value = serde_json::from_str(ADMISSION_FIXTURE).unwrap();
    review["request"]["namespace"] = json!(namespace);
    review["request"]["object"]["metadata"]["namespace"] = json!(namespace);
    review
}

/// The containers an admission answer's JSONPatch adds (init containers included).
fn added_containers(answer: &Value) -> Vec<String> {
    let patch = &answer["response"]["patch"];
    let bytes: Vec<u8> = match patch {
        Value::String(_) => serde_json::from_value::<k8s_openapi::ByteString>(patch.clone()).unwrap().0,
        Value::Array(b) => b.iter().map(|b| u8::try_from(b.as_u64().unwrap()).unwrap()).collect(),
        _ => return Vec::new(),
    };
    let ops: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
    let mut names = Vec::new();
    for op in ops.iter().filter(|op| op["op"] == "add") {
        let values = match &op["value"] {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        names.extend(values.iter().filter_map(|v| v["name"].as_str().map(str::to_string)));
    }
    names
}

#[tokio::test]
async fn kube_control_keeps_its_ca_in_a_secret_injects_pods_and_hands_over_the_lease() {
    let net = Subnet::claim().unwrap();
    let api = fake_cluster(&net).await;
    api.create(objects::namespace("plain", None)).await.unwrap();
    assert_eq!(secret_root(&api).await, None);

    // The first replica makes the CA and stores it in the Secret; the second loads it.
    let a = Control::start(&api, &net, 250, "weft-control-a").await;
    let root = secret_root(&api).await.expect("the first replica created the CA Secret");
    let b = Control::start(&api, &net, 251, "weft-control-b").await;
    for replica in [&a, &b] {
        let report = replica.admin_json("/debug/identity").await;
        let roots = report["roots"].as_array().unwrap();
        assert_eq!(roots.len(), 1, "{report}");
        assert_eq!(report["ca_dir"], format!("secret {NAMESPACE}/{CA_SECRET}"));
    }
    assert_eq!(secret_root(&api).await.as_deref(), Some(root.as_str()), "one CA for both replicas");
    let posts = api
        .requests()
        .await
        .iter()
        .filter(|r| r.starts_with("POST /api/v1/namespaces/weft-system/secrets"))
        .count();
    assert_eq!(posts, 1, "only the first replica creates the Secret");

    // The trust bundle goes where pods are injected, also into namespaces meshed later.
    eventually("the trust bundle in pay", || async {
        trust_bundle(&api, "pay").await.as_deref() == Some(root.as_str())
    })
    .await
    .unwrap();
    api.create(objects::namespace("shop", Some("enabled"))).await.unwrap();
    eventually("the trust bundle in shop", || async {
        trust_bundle(&api, "shop").await.as_deref() == Some(root.as_str())
    })
    .await
    .unwrap();
    assert_eq!(trust_bundle(&api, "plain").await, None);
    assert_eq!(trust_bundle(&api, NAMESPACE).await, None);

    // TokenReview: a token TokenReview refuses, and one for another ServiceAccount, are refused.
    certify(&a, &root, "client", &objects::token("client")).await.unwrap();
    let refused = certify(&a, &root, "client", "not-a-token").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let refused = certify(&b, &root, "client", &objects::token("web-v1")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("web-v1"), "{refused:?}");

    // The injector: its caBundle is the Secret's root, which verifies the certificate it serves.
    let bundle = eventually("the webhook's caBundle", || async {
        let config = api
            .get("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "", WEBHOOK_CONFIGURATION)
            .await?;
        let bundle = config["webhooks"][0]["clientConfig"]["caBundle"].clone();
        serde_json::from_value::<k8s_openapi::ByteString>(bundle).ok().filter(|b| !b.0.is_empty())
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8(bundle.0).unwrap(), root);
    let answer = admission(a.webhook, &root, &review_in("pay")).await.unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let added = added_containers(&answer);
    assert!(
        added.contains(&"weft-proxy".to_string()) && added.contains(&"weft-init".to_string()),
        "{added:?}"
    );
    let answer = admission(b.webhook, &root, &review_in("plain")).await.unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(answer["response"]["patch"].is_null(), "a pod of an unmeshed namespace is left alone: {answer}");

    // The apply API refuses: the cluster is the source.
    let manifest = files_with_split();
    let out = tokio::process::Command::new(weft_integration::weft_bin().unwrap())
        .args(["apply", "-f"])
        .arg(manifest.path())
        .args(["--admin-addr", &a.admin.to_string()])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("this control plane reads Kubernetes: use kubectl apply"), "{stderr}");

    // One replica holds the Lease; stopped, it hands it over at once and the other writes status.
    let first = eventually("a lease holder", || async { lease_holder(&api).await }).await.unwrap();
    let (leader, follower, follower_name) =
        if first == "weft-control-a" { (a, b, "weft-control-b") } else { (b, a, "weft-control-a") };
    split_condition(&api, "Accepted", "True").await;
    leader.terminate().await;
    eventually("the other replica to hold the lease", || async {
        lease_holder(&api).await.as_deref() == Some(follower_name)
    })
    .await
    .unwrap();
    api.apply(objects::split("-1", "50m")).await.unwrap();
    let (reason, message) = split_condition(&api, "Accepted", "False").await;
    assert_eq!(reason, "InvalidWeight", "{message}");
    follower.terminate().await;
    assert_eq!(lease_holder(&api).await, None, "released on shutdown");
}

/// A manifest file `weft apply` would send.
fn files_with_split() -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        file.path(),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: extra\n  namespace: pay\nspec:\n  ports:\n  - port: 80\n",
    )
    .unwrap();
    file
}
