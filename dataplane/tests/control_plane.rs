//! The xDS client against the real control plane (`weft control`, in
//! process) on the payments example: both ADS flavours reach a full,
//! accepted config, and an edit to the TrafficSplit reaches the routes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weft_control::server::{ControlConfig, RunningControl, SourceConfig};
use weft_proxy::config::{Action, Config, WeightedCluster};
use weft_proxy::metrics::Metrics;
use weft_proxy::xds::{Backoff, ClientConfig, Mode, NodeInfo, XdsClient, XdsHandle};

const PATIENCE: Duration = Duration::from_secs(10);
const PAYMENT_SVC_VH: &str = "payment-svc.payments.svc.cluster.local:8080";

async fn control(manifests: &Path) -> RunningControl {
    weft_control::server::start(ControlConfig {
        source: SourceConfig::Manifests(manifests.to_path_buf()),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        reload_interval: Duration::from_millis(50),
        mesh: weft_control::translate::MeshOptions::plaintext(),
        identity: None,
    })
    .await
    .unwrap()
}

fn copy_example(to: &Path) {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/payments");
    for entry in std::fs::read_dir(example).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// The frontend's proxy (xDS client only; no listeners are bound).
fn frontend(server: std::net::SocketAddr, mode: Mode) -> (XdsHandle, watch::Sender<bool>) {
    let node = NodeInfo {
        id: format!("frontend-{mode:?}"),
        namespace: "payments".into(),
        service_account: "frontend".into(),
        pod_ip: "127.0.10.1".parse().unwrap(),
        inbound_port: 4143,
        outbound_port: 4140,
        app_port: Some(8080),
        transparent: false,
    };
    let mut config = ClientConfig::new(server.to_string(), node);
    config.mode = mode;
    config.backoff = Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(100) };
    let (client, handle) = XdsClient::new(config, Arc::new(Metrics::new()));
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(client.run(shutdown));
    (handle, stop)
}

fn split(config: &Config) -> Vec<WeightedCluster> {
    let vh = config.routes["outbound"].virtual_hosts.iter().find(|v| v.name == PAYMENT_SVC_VH).unwrap();
    match &vh.routes[0].action {
        Action::Forward(f) => f.clusters.clone(),
        other => panic!("{other:?}"),
    }
}

fn weights(config: &Config) -> Vec<u32> {
    split(config).iter().map(|c| c.weight).collect()
}

async fn full_config_then_a_split_edit(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path());
    let control = control(dir.path()).await;
    let (handle, _stop) = frontend(control.xds_addr, mode);

    let mut status = handle.status.clone();
    tokio::time::timeout(PATIENCE, status.wait_for(|s| s.ready)).await.expect("ready in time").unwrap();
    {
        let config = handle.config.borrow();
        assert_eq!(config.listeners.keys().collect::<Vec<_>>(), ["inbound", "outbound"]);
        assert!(config.clusters.contains_key("inbound|8080||"));
        for svc in ["payment-svc", "payment-v1", "payment-v2", "fraud-detect"] {
            let name = format!("outbound|8080||{svc}.payments.svc.cluster.local");
            assert!(config.clusters.contains_key(&name), "{name}");
            assert!(!config.endpoints[&name].endpoints.is_empty(), "{name} has endpoints");
        }
        assert_eq!(weights(&config), [950, 50]);
        let st = handle.status.borrow();
        assert!(st.types.values().all(|t| t.nacks == 0 && t.acks >= 1), "{st:?}");
    }

    let file = dir.path().join("split.yaml");
    let text = std::fs::read_to_string(&file).unwrap().replace("950m", "500m").replace("50m\n", "500m\n");
    std::fs::write(&file, text).unwrap();
    let mut config = handle.config.clone();
    tokio::time::timeout(PATIENCE, config.wait_for(|c| weights(c) == [500, 500]))
        .await
        .unwrap_or_else(|_| panic!("the new split within {PATIENCE:?}: {:?}", split(&handle.config.borrow())))
        .unwrap();
    control.shutdown().await;
}

#[tokio::test]
async fn delta_client_gets_a_full_accepted_config_from_weft_control_and_follows_edits() {
    full_config_then_a_split_edit(Mode::Delta).await;
}

#[tokio::test]
async fn sotw_client_gets_a_full_accepted_config_from_weft_control_and_follows_edits() {
    full_config_then_a_split_edit(Mode::Sotw).await;
}
