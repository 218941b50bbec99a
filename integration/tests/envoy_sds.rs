//! Stock Envoy with the weft-agent beside it, live: the control plane runs
//! in-process with identity on (TLS on the xDS port), `weft-agent` certifies
//! the workload and serves SDS on its Unix socket, and Envoy boots from the
//! bootstrap `weft envoy-bootstrap --sds-socket` prints. Envoy must reach
//! LIVE over TLS with the certificate from SDS, and follow its renewals.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use weft_control::bootstrap::AdsMode;
use weft_control::server::{ControlConfig, IdentityConfig, RunningControl, SourceConfig};
use weft_integration::identity::TRUST_DOMAIN;
use weft_integration::proxy::start_envoy;
use weft_integration::{Envoy, MeshIdentity, ProxyConfig, Subnet, envoy_bin, patience, weft_bin};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const CONTROL: &str = "spiffe://cluster.local/ns/weft-system/sa/weft-control";

/// One meshed pod, `shop/web` at `ip`.
fn manifests(dir: &Path, ip: std::net::IpAddr) {
    std::fs::create_dir_all(dir).unwrap();
    let yaml = format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
  annotations:
    weft.io/inject: enabled
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector:
    app: web
  ports:
    - name: http
      port: 8080
      targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels:
    app: web
spec:
  serviceAccountName: web
status:
  podIP: {ip}
"#
    );
    std::fs::write(dir.join("web.yaml"), yaml).unwrap();
}

async fn control_plane(dir: &Path, cert_lifetime: Duration) -> RunningControl {
    weft_control::server::start(ControlConfig {
        source: SourceConfig::Manifests(dir.join("manifests")),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        reload_interval: Duration::from_millis(100),
        mesh: weft_control::translate::MeshOptions::default(),
        identity: Some(IdentityConfig { ca_dir: dir.join("ca"), cert_lifetime }),
    })
    .await
    .unwrap()
}

/// The serial numbers of the certificates Envoy holds for `name`
/// (`/certs`: `default` shows as cert_chain, `ROOTCA` as ca_cert).
async fn envoy_certs(envoy: &Envoy) -> serde_json::Value {
    serde_json::from_str(&envoy.get_admin("/certs").await.unwrap()).unwrap()
}

/// The SPIFFE URI SANs and serials of Envoy's workload certificates.
fn workload_certs(certs: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for ctx in certs["certificates"].as_array().into_iter().flatten() {
        for cert in ctx["cert_chain"].as_array().into_iter().flatten() {
            for san in cert["subject_alt_names"].as_array().into_iter().flatten() {
                if let Some(uri) = san["uri"].as_str() {
                    out.push((uri.to_owned(), cert["serial_number"].as_str().unwrap_or_default().to_owned()));
                }
            }
        }
    }
    out
}

async fn envoy_goes_live_over_tls_with_its_sds_certificate(mode: AdsMode) {
    let subnet = Subnet::claim().unwrap();
    let dir = tempfile::tempdir().unwrap();
    manifests(&dir.path().join("manifests"), subnet.ip(1));
    // 40 s leaves (the CA backdates a minute): renewed every ~10 s.
    let control = control_plane(dir.path(), Duration::from_secs(40)).await;
    // Envoy with weft-agent beside it, as the harness runs a meshed Envoy.
    let identity = MeshIdentity { ca_dir: dir.path().join("ca"), trust_domain: TRUST_DOMAIN.to_owned() };
    let workload = ProxyConfig::new("web", "shop", "web", subnet.ip(1), control.xds_addr, mode)
        .with_identity(Some(identity));
    let envoy =
        start_envoy(&workload).await.unwrap_or_else(|e| panic!("Envoy did not go LIVE over TLS: {e:#}"));
    let agent = envoy.agent().expect("a meshed Envoy has its weft-agent");

    // ADS went over TLS, with a handshake and no failure.
    let handshakes = envoy.stat("cluster.weft-xds.ssl.handshake").await.unwrap().unwrap_or(0);
    assert!(handshakes >= 1, "no TLS handshake with the control plane");
    assert_eq!(envoy.stat("control_plane.connected_state").await.unwrap(), Some(1));
    // Envoy holds the agent's certificate for the workload and the mesh root.
    let certs = envoy_certs(&envoy).await;
    let held = workload_certs(&certs);
    assert!(held.iter().any(|(uri, _)| uri == WEB), "Envoy's /certs lacks {WEB}: {certs}");
    let agent_identity: serde_json::Value =
        serde_json::from_str(&agent.get_admin("/identity").await.unwrap()).unwrap();
    assert_eq!(agent_identity["identity"], WEB);
    // ROOTCA is the mesh root (Envoy shows serials in lowercase hex).
    let root = control.identity.as_ref().expect("identity is on").ca.root_der().to_vec();
    let root_serial = weft_control::identity::CertInfo::from_der(&root).unwrap().serial;
    let ca_serials: Vec<&str> = certs["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ca_cert"].as_array().into_iter().flatten())
        .filter_map(|c| c["serial_number"].as_str())
        .collect();
    assert!(
        !ca_serials.is_empty()
            && ca_serials.iter().all(|s| s.trim_start_matches('0') == root_serial.trim_start_matches('0')),
        "ROOTCA {ca_serials:?} is not the mesh root {root_serial}: {certs}"
    );
    // The mesh's config arrived: the inbound listener and the xDS-delivered clusters.
    let dump = envoy.get_admin("/config_dump").await.unwrap();
    assert!(dump.contains("\"dynamic_active_clusters\""), "{dump}");

    // A renewal reaches Envoy through SDS, and ADS stays up.
    let first_serials: Vec<String> = held.iter().filter(|(u, _)| u == WEB).map(|(_, s)| s.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(40).max(patience());
    loop {
        let now: Vec<String> = workload_certs(&envoy_certs(&envoy).await)
            .into_iter()
            .filter(|(u, _)| u == WEB)
            .map(|(_, s)| s)
            .collect();
        if !now.is_empty() && now.iter().all(|s| !first_serials.contains(s)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Envoy still holds {now:?} (first {first_serials:?}) after a renewal was due"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(envoy.server_state().await.unwrap(), "LIVE");
    assert!(envoy.stat("sds.default.update_success").await.unwrap().unwrap_or(0) >= 2);
    control.shutdown().await;
}

#[tokio::test]
async fn envoy_goes_live_over_tls_with_the_agents_certificate_delta() {
    envoy_goes_live_over_tls_with_its_sds_certificate(AdsMode::Delta).await;
}

#[tokio::test]
async fn envoy_goes_live_over_tls_with_the_agents_certificate_sotw() {
    envoy_goes_live_over_tls_with_its_sds_certificate(AdsMode::Sotw).await;
}

/// Prints a bootstrap with `weft envoy-bootstrap ARGS` and has Envoy validate it.
fn validate_printed_bootstrap(args: &[&str]) -> String {
    let out = Command::new(weft_bin().unwrap())
        .arg("envoy-bootstrap")
        .args(args)
        .args(["--node-id", "web", "--namespace", "shop", "--pod-ip", "127.0.10.1"])
        .env_remove("WEFT_SDS_SOCKET")
        .env_remove("WEFT_INSECURE_PLAINTEXT")
        .output()
        .unwrap();
    assert!(out.status.success(), "weft envoy-bootstrap {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), &out.stdout).unwrap();
    let check = Command::new(envoy_bin().unwrap())
        .args(["--mode", "validate", "-c"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "envoy --mode validate refused the bootstrap of {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn envoy_validates_the_tls_and_the_plaintext_bootstraps_weft_prints() {
    let tls = validate_printed_bootstrap(&["--sds-socket", "/run/weft/agent.sock", "--sotw"]);
    assert!(tls.contains("\"weft-sds\"") && tls.contains("UpstreamTlsContext"), "{tls}");
    assert!(tls.contains(CONTROL), "{tls}");
    let custom = validate_printed_bootstrap(&[
        "--sds-socket",
        "/run/weft/agent.sock",
        "--trust-domain",
        "example.org",
    ]);
    assert!(custom.contains("spiffe://example.org/ns/weft-system/sa/weft-control"), "{custom}");
    let plain = validate_printed_bootstrap(&["--insecure-plaintext"]);
    assert!(!plain.contains("weft-sds") && !plain.contains("transport_socket"), "{plain}");
}

#[test]
fn envoy_bootstrap_without_a_socket_says_what_is_missing() {
    let out = Command::new(weft_bin().unwrap())
        .args(["envoy-bootstrap", "--node-id", "web", "--pod-ip", "127.0.10.1"])
        .env_remove("WEFT_SDS_SOCKET")
        .env_remove("WEFT_INSECURE_PLAINTEXT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--sds-socket") && err.contains("--insecure-plaintext"), "{err}");
}
