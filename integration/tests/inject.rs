//! The sidecar injector over the wire, and `weft inject` on files.
//!
//! The webhook runs as the control plane would run it (TLS with a certificate from the mesh CA,
//! for the `weft-webhook` Service's names) and is sent AdmissionReviews as the API server
//! sends them (`fixtures/admission/pod-create.json` is a ReplicaSet's pod, with the fields
//! the API server fills in). It injects pods of annotated namespaces, leaves alone pods that
//! opt out or were injected already, and admits unchanged, with a warning, a pod it cannot
//! handle. The API server's view is checked by applying the returned JSONPatch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use weft_control::identity::{CaConfig, CertificateAuthority};
use weft_control::inject::InjectConfig;
use weft_control::inject::webhook::{self, RunningWebhook};

const FIXTURE: &str = include_str!("fixtures/admission/pod-create.json");
const WEBHOOK_HOST: &str = "weft-webhook.weft-system.svc";

fn namespace(name: &str, inject: Option<&str>) -> (String, ObjectMeta) {
    let annotations = inject.map(|v| BTreeMap::from([("weft.io/inject".to_string(), v.to_string())]));
    (name.to_string(), ObjectMeta { name: Some(name.to_string()), annotations, ..Default::default() })
}

async fn start_webhook(ca: Arc<CertificateAuthority>) -> RunningWebhook {
    let namespaces: BTreeMap<String, ObjectMeta> =
        [namespace("payments", Some("enabled")), namespace("plain", None)].into_iter().collect();
    webhook::start("127.0.0.1:0".parse().unwrap(), ca, InjectConfig::default(), namespaces).await.unwrap()
}

/// A TLS client trusting `root` (DER), as the API server trusts the caBundle.
fn tls_client(root: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(root.to_vec())).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// POSTs `review` to `/inject` and returns the answer, with the certificate the server showed.
async fn post(hook: &RunningWebhook, root: &[u8], review: &Value) -> anyhow::Result<(Value, Vec<u8>)> {
    let tcp = tokio::net::TcpStream::connect(hook.addr).await?;
    let tls = tls_client(root).connect(ServerName::try_from(WEBHOOK_HOST)?, tcp).await?;
    let served =
        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let request = http::Request::post("/inject")
        .header(http::header::HOST, WEBHOOK_HOST)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(review.to_string())))?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(response.status() == 200, "status {}", response.status());
    let body = response.into_body().collect().await?.to_bytes();
    Ok((serde_json::from_slice(&body)?, served))
}

/// The pod after the API server applied the answer's patch.
fn admitted(review: &Value, answer: &Value) -> Value {
    let response = &answer["response"];
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true, "{answer}");
    let mut pod = review["request"]["object"].clone();
    if let Some(patch) = response.get("patch") {
        assert_eq!(response["patchType"], "JSONPatch");
        let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes(patch)).unwrap();
        json_patch::patch(&mut pod, &patch).unwrap();
    }
    pod
}

/// The patch is a Go `[]byte`: the API server reads it as a base64 string or, as kube-rs sends
/// it, an array of byte values.
fn patch_bytes(patch: &Value) -> Vec<u8> {
    match patch {
        Value::String(text) => {
            serde_json::from_value::<k8s_openapi::ByteString>(Value::String(text.clone())).unwrap().0
        }
        Value::Array(bytes) => bytes.iter().map(|b| u8::try_from(b.as_u64().unwrap()).unwrap()).collect(),
        other => panic!("patch is neither base64 nor bytes: {other}"),
    }
}

fn container_names(list: &Value) -> Vec<String> {
    list.as_array().into_iter().flatten().map(|c| c["name"].as_str().unwrap().to_string()).collect()
}

fn review_in(namespace: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut review: Value = serde_json::from_str(FIXTURE).unwrap();
    review["request"]["namespace"] = json!(namespace);
    review["request"]["object"]["metadata"]["namespace"] = json!(namespace);
    edit(&mut review["request"]["object"]);
    review
}

#[tokio::test]
async fn the_webhook_injects_annotated_namespaces_over_tls_and_leaves_the_rest() {
    let ca = Arc::new(CertificateAuthority::generate(CaConfig::default()).unwrap());
    let root = ca.root_der().to_vec();
    let hook = start_webhook(ca).await;

    // Injected: the patch gives the pod the redirect, the native sidecar and its identity volume,
    // and keeps everything the API server had filled in.
    let review = review_in("payments", |_| {});
    let (answer, _) = post(&hook, &root, &review).await.unwrap();
    let pod = admitted(&review, &answer);
    assert_eq!(container_names(&pod["spec"]["initContainers"]), ["weft-init", "weft-proxy"], "{answer}");
    assert_eq!(container_names(&pod["spec"]["containers"]), ["app"]);
    assert_eq!(
        container_names(&pod["spec"]["volumes"]),
        ["kube-api-access-x7k2p", "weft-identity", "weft-xtables"]
    );
    assert_eq!(pod["spec"]["initContainers"][1]["restartPolicy"], "Always");
    assert_eq!(pod["spec"]["tolerations"], review["request"]["object"]["spec"]["tolerations"]);
    assert_eq!(pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"], "app");
    let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
    assert_eq!(typed.spec.unwrap().init_containers.unwrap()[0].args.as_ref().unwrap()[0], "init");

    // Re-injecting the injected pod (a reinvocation, or a pod re-created from it): no patch.
    let mut again = review.clone();
    again["request"]["object"] = pod;
    let (answer, _) = post(&hook, &root, &again).await.unwrap();
    assert!(answer["response"].get("patch").is_none(), "{answer}");
    assert_eq!(answer["response"]["allowed"], true);

    // Opted out, and a namespace that does not ask for injection: admitted untouched.
    let opted_out = review_in("payments", |pod| {
        pod["metadata"]["annotations"] = json!({"weft.io/inject": "disabled"});
    });
    for review in [opted_out, review_in("plain", |_| {})] {
        let (answer, _) = post(&hook, &root, &review).await.unwrap();
        assert!(answer["response"].get("patch").is_none(), "{answer}");
        assert!(answer["response"].get("warnings").is_none(), "{answer}");
        assert_eq!(admitted(&review, &answer), review["request"]["object"]);
    }

    // A pod annotated in a namespace that is not: injected.
    let annotated = review_in("plain", |pod| {
        pod["metadata"]["annotations"] = json!({"weft.io/inject": "enabled"});
    });
    let (answer, _) = post(&hook, &root, &annotated).await.unwrap();
    assert_eq!(
        container_names(&admitted(&annotated, &answer)["spec"]["initContainers"]),
        ["weft-init", "weft-proxy"]
    );

    // One it cannot inject (host network): admitted unchanged, with a warning that says why.
    let host = review_in("payments", |pod| pod["spec"]["hostNetwork"] = json!(true));
    let (answer, _) = post(&hook, &root, &host).await.unwrap();
    assert_eq!(admitted(&host, &answer), host["request"]["object"]);
    let warning = answer["response"]["warnings"][0].as_str().unwrap();
    assert!(
        warning.starts_with("weft: the pod was admitted without a proxy: pods with hostNetwork"),
        "{warning}"
    );

    hook.shutdown().await;
}

#[tokio::test]
async fn the_webhook_certificate_chains_to_the_mesh_ca_and_is_renewed_in_place() {
    let ca = Arc::new(CertificateAuthority::generate(CaConfig::default()).unwrap());
    let root = ca.root_der().to_vec();
    let hook = start_webhook(ca.clone()).await;
    assert_eq!(hook.tls.ca_bundle_pem(), ca.root_pem(), "caBundle is the CA root");

    let review = review_in("payments", |_| {});
    let (_, first) = post(&hook, &root, &review).await.unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&first).unwrap();
    let names: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    assert!(names.contains(&WEBHOOK_HOST.to_string()), "{names:?}");
    assert!(hook.tls.renew_at() < hook.tls.not_after());

    // A renewal swaps the certificate without a restart.
    hook.tls.renew().unwrap();
    let (_, second) = post(&hook, &root, &review).await.unwrap();
    assert_ne!(first, second, "the renewed certificate is served");

    // A client that trusts another CA (a stale caBundle) is refused.
    let stranger = CertificateAuthority::generate(CaConfig::default()).unwrap();
    assert!(post(&hook, stranger.root_der(), &review).await.is_err());
    hook.shutdown().await;
}

async fn weft_inject(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let bin = weft_integration::weft_bin().unwrap();
    let mut child = tokio::process::Command::new(bin)
        .arg("inject")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        tokio::io::AsyncWriteExt::write_all(&mut input, text.as_bytes()).await.unwrap();
    }
    drop(input);
    child.wait_with_output().await.unwrap()
}

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: payment-v2
  namespace: payments
spec:
  replicas: 1
  selector:
    matchLabels: {app: payment, version: v2}
  template:
    metadata:
      labels: {app: payment, version: v2}
    spec:
      serviceAccountName: payment
      containers:
      - name: app
        image: weft/demo-app:0.1.0
        ports:
        - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: payment-v2, namespace: payments}
spec:
  selector: {app: payment, version: v2}
  ports: [{name: http, port: 8080, targetPort: http}]
";

#[tokio::test]
async fn weft_inject_rewrites_workloads_in_a_file_and_on_stdin() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(DEPLOYMENT.as_bytes()).unwrap();
    let out =
        weft_inject(&["-f", file.path().to_str().unwrap(), "--proxy-image", "registry.test/weft:dev"], None)
            .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "deployment/payment-v2 injected");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(std::str::from_utf8(&out.stdout).unwrap())
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let spec = &docs[0]["spec"]["template"]["spec"];
    assert_eq!(container_names(&spec["initContainers"]), ["weft-init", "weft-proxy"]);
    assert_eq!(spec["initContainers"][1]["image"], "registry.test/weft:dev");
    let original: Value = serde_yaml_ng::Deserializer::from_str(DEPLOYMENT)
        .nth(1)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .unwrap();
    assert_eq!(docs[1], original, "the Service passes through unchanged");

    // The same from standard input, and again on its own output: nothing more to do.
    let first = weft_inject(&["-f", "-"], Some(DEPLOYMENT)).await;
    assert!(first.status.success());
    let injected = String::from_utf8(first.stdout).unwrap();
    let second = weft_inject(&["-f", "-", "--sidecar", "container"], Some(&injected)).await;
    assert!(second.status.success());
    assert_eq!(String::from_utf8(second.stdout).unwrap(), injected);
    assert!(String::from_utf8_lossy(&second.stderr).contains("already injected"));

    // Regular containers when asked (clusters older than 1.29).
    let old = weft_inject(&["-f", "-", "--sidecar", "container"], Some(DEPLOYMENT)).await;
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(std::str::from_utf8(&old.stdout).unwrap())
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(container_names(&docs[0]["spec"]["template"]["spec"]["containers"]), ["weft-proxy", "app"]);

    // A workload it cannot inject: reported, exit status 1, the document printed unchanged.
    let host = DEPLOYMENT.replace("      serviceAccountName: payment\n", "      hostNetwork: true\n");
    let out = weft_inject(&["-f", "-"], Some(&host)).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("deployment/payment-v2 not injected: pods with hostNetwork")
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("weft-proxy"));
}

#[test]
fn the_kubernetes_example_parses_and_every_workload_is_injected() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kubernetes/payments");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut injected = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc: Value = serde::Deserialize::deserialize(doc).unwrap();
            let what = format!("{}: {} {}", file.display(), doc["kind"], doc["metadata"]["name"]);
            match doc["kind"].as_str().unwrap() {
                "Deployment" => {
                    drop(serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(doc).expect(&what))
                }
                "Service" => {
                    drop(serde_json::from_value::<k8s_openapi::api::core::v1::Service>(doc).expect(&what))
                }
                "ServiceAccount" | "Namespace" | "TrafficSplit" => {}
                other => panic!("{what}: unexpected {other}"),
            }
        }
        let (_, reports) = weft_control::inject::inject_yaml(&text, &InjectConfig::default()).unwrap();
        injected.extend(reports.into_iter().map(|r| r.to_string()));
    }
    injected.sort();
    assert_eq!(
        injected,
        [
            "deployment/fraud-detect injected",
            "deployment/frontend injected",
            "deployment/payment-v1 injected",
            "deployment/payment-v2 injected"
        ]
    );
}
