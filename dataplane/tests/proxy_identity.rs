//! The `weft-proxy` binary's start-up under mTLS, against the real control
//! plane in-process with identity on: it certifies with its token over TLS,
//! runs ADS over TLS with its workload certificate, reports ready only then,
//! shows its certificate on `/identity` and in metrics, and renews it. A
//! refused token stops it with the server's message. (`--help` and the
//! identity flags: `cli.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft_control::server::{ControlConfig, IdentityConfig, RunningControl, SourceConfig};
use weft_proxy::tls::SpiffeId;

const PATIENCE: Duration = Duration::from_secs(30);

/// A loopback address for this test process alone (listeners bind there).
fn pod_ip(host: u8) -> IpAddr {
    let pid = std::process::id();
    IpAddr::from([127, 100 + (pid % 100) as u8, (pid / 100 % 250) as u8, host])
}

fn manifests(dir: &Path, ip: IpAddr) {
    std::fs::create_dir_all(dir).unwrap();
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  annotations:\n    weft.io/inject: enabled\n\
         ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  selector:\n    app: web\n  ports:\n    - name: http\n      port: 8080\n      targetPort: 8080\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n  labels:\n    app: web\nspec:\n  serviceAccountName: web\nstatus:\n  podIP: {ip}\n"
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

/// A `weft-proxy` child, killed on drop; its output goes to a file.
struct Proxy {
    child: Child,
    log: std::path::PathBuf,
    admin: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- weft-proxy log ----\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

fn weft_proxy(dir: &Path, ip: IpAddr, args: &[&str]) -> Proxy {
    let log = dir.join(format!("weft-proxy-{}.log", args.len()));
    let admin = SocketAddr::new(ip, 4191);
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft-proxy"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WEFT_") {
            command.env_remove(key);
        }
    }
    let file = std::fs::File::create(&log).unwrap();
    let child = command
        .args(["--pod-ip", &ip.to_string(), "--namespace", "shop", "--service-account", "web"])
        .args(["--admin-addr", &admin.to_string(), "--log", "info,weft_proxy=debug"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    Proxy { child, log, admin }
}

/// `GET` on the admin server: (status, body), `None` if unreachable.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

/// Polls `path` until `done` accepts its answer.
async fn wait_for(proxy: &mut Proxy, path: &str, what: &str, done: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            panic!("weft-proxy exited ({status}) while waiting for {what}");
        }
        if let Some((status, body)) = get(proxy.admin, path).await {
            if done(status, &body) {
                return body;
            }
            last = Some((status, body));
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}; {path} said {last:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn weft_proxy_certifies_then_runs_ads_over_tls_and_renews() {
    let dir = tempfile::tempdir().unwrap();
    let ip = pod_ip(1);
    manifests(&dir.path().join("manifests"), ip);
    // 30 s leaves, backdated a minute by the CA: renewed every few seconds.
    let control = control_plane(dir.path(), Duration::from_secs(30)).await;
    let ca_dir = dir.path().join("ca");
    let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/web".parse().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, weft_control::identity::token_for(&ca_dir, &id).unwrap()).unwrap();
    let ca_file = ca_dir.join("root-cert.pem");
    let mut proxy = weft_proxy(
        dir.path(),
        ip,
        &[
            "--xds-addr",
            &control.xds_addr.to_string(),
            "--ca-file",
            ca_file.to_str().unwrap(),
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );

    wait_for(&mut proxy, "/ready", "ready", |s, _| s == 200).await;
    let body = wait_for(&mut proxy, "/identity", "an identity", |s, _| s == 200).await;
    let first: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(first["identity"], id.to_string());
    assert!(first["renew_at"].as_str().unwrap() < first["not_after"].as_str().unwrap());
    assert_eq!(first["trust_anchors"].as_array().unwrap().len(), 1, "{first}");
    assert!(first["trust_anchors"][0]["subject"].as_str().unwrap().contains("weft root CA"), "{first}");
    let dump = get(proxy.admin, "/config_dump").await.unwrap().1;
    assert!(dump.contains("\"connected\":true"), "ADS is up over TLS: {dump}");

    // Renewals: a new certificate, counted, while the proxy stays ready.
    let serial = first["chain"][0]["serial"].as_str().unwrap().to_owned();
    wait_for(&mut proxy, "/identity", "a renewed certificate", |s, b| {
        s == 200
            && serde_json::from_str::<serde_json::Value>(b).unwrap()["chain"][0]["serial"] != serial.as_str()
    })
    .await;
    let metrics = get(proxy.admin, "/metrics").await.unwrap().1;
    assert!(metric(&metrics, "identity_cert_refresh_total").unwrap() >= 2.0, "{metrics}");
    let left = metric(&metrics, "identity_cert_expiry_seconds").unwrap();
    assert!(left > 0.0 && left <= 30.0, "{metrics}");
    assert!(metric(&metrics, "identity_cert_expiration_timestamp_seconds").is_some());
    assert_eq!(get(proxy.admin, "/ready").await.unwrap().0, 200);
    control.shutdown().await;
}

#[tokio::test]
async fn weft_proxy_waits_for_a_certificate_and_stops_on_a_refused_token() {
    let dir = tempfile::tempdir().unwrap();
    let ip = pod_ip(2);
    manifests(&dir.path().join("manifests"), ip);
    let control = control_plane(dir.path(), Duration::from_secs(3600)).await;
    let ca_dir = dir.path().join("ca");
    let ca_file = ca_dir.join("root-cert.pem");
    // A token for another ServiceAccount.
    let other: SpiffeId = "spiffe://cluster.local/ns/shop/sa/admin".parse().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, weft_control::identity::token_for(&ca_dir, &other).unwrap()).unwrap();
    let xds = control.xds_addr.to_string();
    let args = [
        "--xds-addr",
        &xds,
        "--ca-file",
        ca_file.to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
    ];
    let mut proxy = weft_proxy(dir.path(), ip, &args);
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "weft-proxy kept running with a refused token");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(
        log.contains("certification refused") && log.contains("spiffe://cluster.local/ns/shop/sa/web"),
        "{log}"
    );

    // A control plane that does not carry the expected identity is never trusted:
    // the proxy keeps trying (and says why) but is not ready.
    let token_file = dir.path().join("token-web");
    let web: SpiffeId = "spiffe://cluster.local/ns/shop/sa/web".parse().unwrap();
    std::fs::write(&token_file, weft_control::identity::token_for(&ca_dir, &web).unwrap()).unwrap();
    let args = [
        "--xds-addr",
        &xds,
        "--ca-file",
        ca_file.to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
        "--control-identity",
        "spiffe://cluster.local/ns/weft-system/sa/impostor",
    ];
    let mut proxy = weft_proxy(dir.path(), ip, &args);
    let body = wait_for(&mut proxy, "/ready", "an answer", |s, _| s == 503).await;
    assert!(body.contains("certificate"), "{body}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(proxy.admin, "/ready").await.unwrap().0, 503);
    assert_eq!(get(proxy.admin, "/identity").await.unwrap().0, 503);
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(log.contains("impostor"), "the log says which identity was expected: {log}");
    control.shutdown().await;
}

#[test]
fn weft_proxy_without_identity_files_says_what_is_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .args(["--pod-ip", "127.0.0.1"])
        .env_remove("WEFT_CA_FILE")
        .env_remove("WEFT_TOKEN_FILE")
        .env_remove("WEFT_INSECURE_PLAINTEXT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca-file") && err.contains("--token-file"), "{err}");
}

#[tokio::test]
async fn weft_proxy_insecure_plaintext_runs_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ip = pod_ip(3);
    manifests(&dir.path().join("manifests"), ip);
    let control = weft_control::server::start(ControlConfig {
        source: SourceConfig::Manifests(dir.path().join("manifests")),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        reload_interval: Duration::from_millis(100),
        mesh: weft_control::translate::MeshOptions::plaintext(),
        identity: None,
    })
    .await
    .unwrap();
    let xds = control.xds_addr.to_string();
    let mut proxy = weft_proxy(dir.path(), ip, &["--xds-addr", &xds, "--insecure-plaintext"]);
    wait_for(&mut proxy, "/ready", "ready", |s, _| s == 200).await;
    let (status, body) = get(proxy.admin, "/identity").await.unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("insecure-plaintext"), "{body}");
    let metrics = get(proxy.admin, "/metrics").await.unwrap().1;
    assert!(!metrics.contains("identity_cert_expiry_seconds"), "{metrics}");
    control.shutdown().await;
}
