//! `weft tap` in Kubernetes mode, end to end: the real `weft control --source kubernetes`
//! against the fake API server, meshed weft-proxies certified through TokenReview, and the real
//! `weft tap` CLI presenting the operator's Kubernetes bearer token.
//!
//! The control plane authenticates the operator with TokenReview and authorizes the session
//! with a SubjectAccessReview (`watch` on `deployments.tap.weft.io` in the namespace, granted
//! by the test's RBAC policy), then resolves `deploy/payment-v1` to the pods its ReplicaSet
//! owns and taps their proxies over mTLS.
//!
//! - `kube_tap_shows_a_deployments_live_requests_with_tls_and_the_clients_identity`: `req` and
//!   `rsp` events with `tls=true`, the client's SPIFFE ID and `:status=200`; filters; the token
//!   from the kubeconfig when no flag picks the mode (the control plane's 401 challenge does).
//! - `kube_tap_refuses_missing_bad_and_unauthorized_tokens_and_workload_tokens`: 401 without a
//!   token or with one TokenReview refuses (a proxy's `weft`-audience token included), 403 for
//!   a user RBAC does not grant and for a workload's ServiceAccount token, and an unknown
//!   Deployment lists the ones that exist.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use weft_control::bootstrap::AdsMode;
use weft_control::install::NAMESPACE;
use weft_control::tap::TapLine;
use weft_integration::child::LoggedChild;
use weft_integration::fake_kube::extras::KubeFront;
use weft_integration::fake_kube::{API_AUDIENCE, FakeKube, apps_types};
use weft_integration::{Backend, MeshIdentity, Proxy, ProxyConfig, ProxyKind, Subnet, eventually, load};

const NS: &str = "payments";
const TRUST_DOMAIN: &str = "cluster.local";
const CONTROL_HOST: u8 = 250;
/// The payment-v1 pod's proxy and app.
const PAYMENT_HOST: u8 = 11;
/// The client pod's proxy.
const CLIENT_HOST: u8 = 2;
/// payment-v2's pod is not meshed (no proxy).
const UNMESHED_HOST: u8 = 12;
const PAYMENT: &str = "payment-v1";

/// The operator RBAC lets tap Deployments in `payments`; one it does not; a workload's own
/// ServiceAccount token (API audience, as mounted by default).
const ALICE_TOKEN: &str = "alice-token";
const MALLORY_TOKEN: &str = "mallory-token";
const WORKLOAD_API_TOKEN: &str = "sa-api-token-payments-payment-v1";

fn spiffe(sa: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NS}/sa/{sa}")
}

/// The token a proxy of `payments/<sa>` certifies with (audience `weft`).
fn proxy_token(sa: &str) -> String {
    format!("sa-token-{NS}-{sa}")
}

// ----- the cluster -----

mod objects {
    use super::*;

    pub(crate) fn namespace(name: &str, inject: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "annotations": {"weft.io/inject": inject}}})
    }

    pub(crate) fn service(name: &str, cluster_ip: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        })
    }

    fn owner(api_version: &str, kind: &str, name: &str) -> Value {
        json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": format!("uid-{name}"),
                "controller": true, "blockOwnerDeletion": true}])
    }

    /// Deployment `app`, its ReplicaSet `app-<hash>` and one pod `app-<hash>-x2k4p` at `ip`,
    /// owned as the Deployment controller owns them.
    pub(crate) fn deployment(app: &str, hash: &str, ip: &str) -> [Value; 3] {
        let labels = json!({"app": app, "pod-template-hash": hash});
        let set = format!("{app}-{hash}");
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": app, "namespace": NS, "uid": format!("uid-{app}")},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": app}},
                     "template": {"metadata": {"labels": {"app": app}},
                                  "spec": {"containers": [{"name": "app", "image": "app:1"}]}}},
        });
        let replica_set = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": set, "namespace": NS, "labels": labels, "uid": format!("uid-{set}"),
                         "ownerReferences": owner("apps/v1", "Deployment", app)},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": "app:1"}]}}},
        });
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{set}-x2k4p"), "namespace": NS, "labels": labels,
                         "ownerReferences": owner("apps/v1", "ReplicaSet", &set)},
            "spec": {"serviceAccountName": app, "containers": [
                {"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]},
            ]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        });
        [deployment, replica_set, pod]
    }

    pub(crate) fn slice(service: &str, pod: &str, ip: &str) -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-abcde"), "namespace": NS,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{
                "addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": NS, "name": pod},
            }],
        })
    }
}

/// The fake cluster: `payments` with Deployments `payment-v1` (meshed, at .11), `payment-v2`
/// (at .12, no proxy) and `client` (meshed, at .2); the tokens and the RBAC policy.
async fn fake_cluster(net: &Subnet) -> FakeKube {
    let mut types = KubeFront::types();
    types.extend(apps_types());
    let api = FakeKube::start_with(types).await.unwrap();
    api.create(objects::namespace(NAMESPACE, "disabled")).await.unwrap();
    api.create(objects::namespace(NS, "enabled")).await.unwrap();
    for (app, hash, host, cluster_ip) in [
        (PAYMENT, "5d9f7c", PAYMENT_HOST, "10.96.0.11"),
        ("payment-v2", "84b6d5", UNMESHED_HOST, "10.96.0.12"),
        ("client", "7b9d8c", CLIENT_HOST, "10.96.0.2"),
    ] {
        let ip = net.ip(host).to_string();
        let [deployment, replica_set, pod] = objects::deployment(app, hash, &ip);
        let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
        api.create(deployment).await.unwrap();
        api.create(replica_set).await.unwrap();
        api.create_with_status(pod).await.unwrap();
        api.create(objects::service(app, cluster_ip)).await.unwrap();
        api.create(objects::slice(app, &pod_name, &ip)).await.unwrap();
    }
    for sa in [PAYMENT, "client"] {
        api.register_token(&proxy_token(sa), &format!("system:serviceaccount:{NS}:{sa}"), &["weft"]).await;
    }
    api.register_token(ALICE_TOKEN, "alice", &[API_AUDIENCE]).await;
    api.register_token(MALLORY_TOKEN, "mallory", &[API_AUDIENCE]).await;
    api.register_token(WORKLOAD_API_TOKEN, &format!("system:serviceaccount:{NS}:{PAYMENT}"), &[API_AUDIENCE])
        .await;
    // As `kubectl -n payments create rolebinding ... --clusterrole=weft-tap --user=alice` would,
    // narrowed to Deployments.
    api.allow("alice", "watch", "tap.weft.io", "deployments", Some(NS)).await;
    api
}

// ----- the control plane and the mesh -----

/// `weft control --source kubernetes` as a child process.
struct Control {
    process: LoggedChild,
    xds: SocketAddr,
    admin: SocketAddr,
    _files: tempfile::TempDir,
}

impl Control {
    async fn start(api: &FakeKube, net: &Subnet) -> Control {
        let files = tempfile::Builder::new().prefix("weft-kube-tap-").tempdir().unwrap();
        let kubeconfig = files.path().join("kubeconfig");
        std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
        let (xds, admin) = (net.addr(CONTROL_HOST, 8086), net.addr(CONTROL_HOST, 8085));
        let mut command = Command::new(weft_integration::weft_bin().unwrap());
        clean_env(&mut command);
        command
            .env("XDG_STATE_HOME", files.path().join("state"))
            .args(["control", "--source", "kubernetes", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--xds-addr", &xds.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--no-webhook", "--pod-name", "weft-control-tap"])
            .args(["--log", "info,weft_control=debug"]);
        let process = LoggedChild::spawn("weft-control", command).unwrap();
        process.wait_control_ready(admin).await;
        Control { process, xds, admin, _files: files }
    }
}

/// Removes the variables that would change what `weft` reads.
fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("WEFT_") || key.starts_with("POD_") || key == "KUBECONFIG" {
            command.env_remove(key);
        }
    }
}

/// The control plane, payment-v1's pod (app and proxy) and the client's proxy, with
/// requests from the client reaching payment-v1 over mTLS.
struct Scene {
    net: Subnet,
    api: FakeKube,
    control: Control,
    files: tempfile::TempDir,
    _backend: Backend,
    proxies: Vec<Proxy>,
}

impl Scene {
    async fn start() -> Scene {
        let net = Subnet::claim().unwrap();
        let api = fake_cluster(&net).await;
        let control = Control::start(&api, &net).await;
        let files = tempfile::tempdir().unwrap();
        let bundle = eventually("the trust bundle in payments", || async {
            let cm = api.get("v1", "ConfigMap", NS, "weft-trust-bundle").await?;
            cm["data"]["ca.pem"].as_str().map(str::to_string)
        })
        .await
        .unwrap();
        std::fs::write(files.path().join(weft_integration::identity::ROOT_CERT_FILE), bundle).unwrap();
        let identity = MeshIdentity { ca_dir: files.path().to_path_buf(), trust_domain: TRUST_DOMAIN.into() };
        let backend = Backend::start(net.addr(PAYMENT_HOST, 8080), PAYMENT).await.unwrap();
        let mut proxies = Vec::new();
        for (sa, host) in [(PAYMENT, PAYMENT_HOST), ("client", CLIENT_HOST)] {
            // The node id the injector gives: <pod>.<namespace>.
            let pod = api.list("v1", "Pod").await.into_iter().find(|p| p["spec"]["serviceAccountName"] == sa);
            let node_id = format!("{}.{NS}", pod.unwrap()["metadata"]["name"].as_str().unwrap());
            let config = ProxyConfig::new(&node_id, NS, sa, net.ip(host), control.xds, AdsMode::Delta)
                .with_identity(Some(identity.clone()))
                .with_token(proxy_token(sa));
            proxies.push(Proxy::start(ProxyKind::Weft, &config).await.unwrap());
        }
        let scene = Scene { net, api, control, files, _backend: backend, proxies };
        let outbound = scene.outbound();
        let reached = eventually("the client to reach payment-v1 through the mesh", || async {
            let answer = load::send(outbound, PAYMENT, "/pay").await?;
            anyhow::ensure!(answer == (200, PAYMENT.to_owned()), "{answer:?}");
            anyhow::Ok(true)
        })
        .await;
        if let Err(e) = reached {
            let logs: Vec<String> = scene.proxies.iter().map(|p| p.log_tail(30)).collect();
            panic!("{e:#}\n{}\n{}", logs.join("\n"), scene.control.process.log_tail(40));
        }
        scene
    }

    fn outbound(&self) -> SocketAddr {
        self.net.addr(CLIENT_HOST, 4140)
    }

    /// A file in the scene's directory holding `text`.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `weft tap ARGS --admin ADDR` with `env`, in a clean environment (no kubeconfig, HOME
    /// in the scene's directory), while `traffic` requests go from the client to payment-v1
    /// every 50 ms; returns exit code, stdout, stderr.
    async fn tap(
        &self,
        args: &[&str],
        env: &[(&str, &Path)],
        traffic: &[(&str, &str)],
    ) -> (i32, String, String) {
        let mut command = Command::new(weft_integration::weft_bin().unwrap());
        clean_env(&mut command);
        command.env("HOME", self.files.path()).arg("tap").args(args);
        command.arg("--admin").arg(self.control.admin.to_string());
        for (key, value) in env {
            command.env(key, value);
        }
        let command = tokio::process::Command::from(command);
        load::run_under_traffic(command, self.outbound(), PAYMENT, traffic)
            .await
            .unwrap_or_else(|e| panic!("weft tap: {e:#}"))
    }
}

fn lines(stdout: &str) -> Vec<TapLine> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"))).collect()
}

/// The SubjectAccessReviews the control plane sent so far.
async fn access_reviews(api: &FakeKube) -> usize {
    api.requests()
        .await
        .iter()
        .filter(|r| r.starts_with("POST /apis/authorization.k8s.io/v1/subjectaccessreviews"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_tap_shows_a_deployments_live_requests_with_tls_and_the_clients_identity() {
    let scene = Scene::start().await;
    let token = scene.file("operator.token", &format!("{ALICE_TOKEN}\n"));
    let token = token.to_str().unwrap();

    // JSON: the inbound events at payment-v1's proxy, as the command asks for them.
    let (code, stdout, stderr) = scene
        .tap(
            &["-n", NS, "deploy/payment-v1", "--token-file", token, "--duration", "4s", "-o", "json"],
            &[],
            &[("GET", "/pay"), ("GET", "/refund")],
        )
        .await;
    assert_eq!(code, 0, "weft tap failed: {stderr}\n{stdout}\n{}", scene.control.process.log_tail(30));
    let events = lines(&stdout);
    let rsp = events
        .iter()
        .find(|e| e.kind == "rsp" && e.path == "/pay" && e.direction == "inbound")
        .unwrap_or_else(|| panic!("no inbound rsp for /pay:\n{stdout}\n{stderr}"));
    assert!(rsp.proxy.starts_with("payment-v1-5d9f7c-"), "{rsp:?}");
    assert!(rsp.tls, "{rsp:?}");
    assert_eq!(rsp.src.identity, spiffe("client"), "{rsp:?}");
    assert_eq!(rsp.dst.identity, spiffe(PAYMENT), "{rsp:?}");
    assert_eq!(rsp.status, Some(200), "{rsp:?}");
    let req = events.iter().find(|e| e.kind == "req" && e.id == rsp.id).expect("the rsp's req");
    assert_eq!(
        (req.path.as_str(), req.tls, req.src.identity.as_str()),
        ("/pay", true, spiffe("client").as_str())
    );
    assert!(events.iter().any(|e| e.path == "/refund"), "unfiltered tap shows every path");
    assert!(
        events.iter().all(|e| e.proxy.starts_with("payment-v1-")),
        "only payment-v1's pods are tapped: {stdout}"
    );
    assert!(access_reviews(&scene.api).await >= 1, "the session was authorized by a SubjectAccessReview");

    // Text, filtered.
    let (code, stdout, stderr) = scene
        .tap(
            &[
                "-n",
                NS,
                "deploy/payment-v1",
                "--token-file",
                token,
                "--path",
                "/pay",
                "--method",
                "POST",
                "--duration",
                "3s",
            ],
            &[],
            &[("GET", "/pay"), ("POST", "/pay"), ("POST", "/refund")],
        )
        .await;
    assert_eq!(code, 0, "weft tap failed: {stderr}\n{stdout}");
    let text: Vec<&str> = stdout.lines().collect();
    assert!(!text.is_empty(), "no events: {stderr}");
    for line in &text {
        assert!(line.contains(":method=POST") && line.contains(":path=/pay"), "filtered out: {line}");
        assert!(line.contains("tls=true"), "{line}");
        assert!(line.contains(&format!("[{}]", spiffe("client"))), "{line}");
    }
    assert!(text.iter().any(|l| l.starts_with("req id=")), "{stdout}");
    assert!(text.iter().any(|l| l.starts_with("rsp id=") && l.contains(":status=200")), "{stdout}");

    // No flag picks the mode: the control plane's challenge asks for a Kubernetes token, taken
    // from the kubeconfig's user; the namespace from its context.
    let kubeconfig = scene.file(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: ops\nclusters:\n- name: c\n  cluster: {{server: {}}}\n\
             contexts:\n- name: ops\n  context: {{cluster: c, user: alice, namespace: {NS}}}\n\
             users:\n- name: alice\n  user: {{token: {ALICE_TOKEN}}}\n",
            scene.api.url()
        ),
    );
    let (code, stdout, stderr) = scene
        .tap(&["deploy/payment-v1", "--duration", "3s"], &[("KUBECONFIG", &kubeconfig)], &[("GET", "/pay")])
        .await;
    assert_eq!(code, 0, "weft tap failed: {stderr}\n{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("rsp id=") && l.contains("tls=true") && l.contains(":status=200")),
        "{stdout}\n{stderr}"
    );

    // The proxies serve on.
    assert_eq!(load::request(scene.outbound(), "GET", PAYMENT, "/after").await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_tap_refuses_missing_bad_and_unauthorized_tokens_and_workload_tokens() {
    let scene = Scene::start().await;

    // No token: 401, with the challenge naming the Kubernetes realm.
    let (status, body, realm) = raw_tap(scene.control.admin, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(realm.as_deref(), Some("Bearer realm=\"kubernetes\""), "{body}");
    assert!(body.contains("not authorized"), "{body}");

    let run = |token: &str, target: &str| {
        let file = scene.file(&format!("{token}.token"), token);
        let target = target.to_owned();
        let scene = &scene;
        async move {
            let file = file.to_str().unwrap().to_owned();
            scene.tap(&["-n", NS, &target, "--token-file", &file, "--duration", "2s"], &[], &[]).await
        }
    };

    // A token the API server does not know, and a proxy's token (audience weft): 401.
    for bad in ["not-a-token", proxy_token(PAYMENT).as_str()] {
        let (code, stdout, stderr) = run(bad, "deploy/payment-v1").await;
        assert_ne!(code, 0, "{stdout}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains("not authorized") && stderr.contains("TokenReview"), "{bad}: {stderr}");
        assert!(stderr.contains("--token-file"), "names the credential sent: {stderr}");
    }

    // Authenticated, but RBAC grants nothing: 403 naming the verb, resource and namespace.
    let (code, stdout, stderr) = run(MALLORY_TOKEN, "deploy/payment-v1").await;
    assert_ne!(code, 0, "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(
            "forbidden: user \"mallory\" cannot watch resource \"deployments\" in API group \"tap.weft.io\" \
             in the namespace \"payments\""
        ),
        "{stderr}"
    );
    assert!(stderr.contains("weft-tap"), "says what grants it: {stderr}");

    // A workload's own ServiceAccount token: a user like any other, refused by RBAC.
    let (code, stdout, stderr) = run(WORKLOAD_API_TOKEN, "deploy/payment-v1").await;
    assert_ne!(code, 0, "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("forbidden: user \"system:serviceaccount:payments:payment-v1\" cannot watch"),
        "{stderr}"
    );

    // The grant is per resource and per namespace.
    let (code, _, stderr) = run(ALICE_TOKEN, "pod/payment-v1-5d9f7c-x2k4p").await;
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot watch resource \"pods\""), "{stderr}");
    let file = scene.file("alice.token", ALICE_TOKEN);
    let (code, _, stderr) = scene
        .tap(&["-n", "default", "deploy/payment-v1", "--token-file", file.to_str().unwrap()], &[], &[])
        .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("in the namespace \"default\""), "{stderr}");

    // Allowed, but the target is unknown or has no proxy: the error says what exists.
    let (code, _, stderr) = run(ALICE_TOKEN, "deploy/nope").await;
    assert_ne!(code, 0);
    assert!(stderr.contains("unknown target deploy/nope in namespace payments"), "{stderr}");
    assert!(stderr.contains("Deployments with pods: client, payment-v1, payment-v2"), "{stderr}");
    let (code, _, stderr) = run(ALICE_TOKEN, "deploy/payment-v2").await;
    assert_ne!(code, 0);
    assert!(stderr.contains("payment-v2-84b6d5-x2k4p") && stderr.contains("no connected proxy"), "{stderr}");

    // A kubeconfig user with a client certificate cannot be forwarded: a clear error.
    let kubeconfig = scene.file(
        "cert-kubeconfig",
        "apiVersion: v1\nkind: Config\ncurrent-context: kind\ncontexts:\n- name: kind\n  context: {cluster: c, user: admin}\n\
         users:\n- name: admin\n  user: {client-certificate-data: eA==, client-key-data: eA==}\n",
    );
    let (code, _, stderr) = scene
        .tap(&["-n", NS, "deploy/payment-v1", "--kubeconfig", kubeconfig.to_str().unwrap()], &[], &[])
        .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("a client certificate") && stderr.contains("--token-file"), "{stderr}");

    // Refused sessions never reached a proxy: it serves on.
    assert_eq!(load::request(scene.outbound(), "GET", PAYMENT, "/after").await.unwrap(), 200);
}

/// `GET /tap` on the admin API with `token`: status, body and `WWW-Authenticate`.
async fn raw_tap(admin: SocketAddr, token: Option<&str>) -> (u16, String, Option<String>) {
    let stream = TcpStream::connect(admin).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(format!("/tap?target=deploy%2F{PAYMENT}&namespace={NS}"))
        .header("host", admin.to_string());
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let resp = sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let realm = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), realm)
}
