//! Stock Envoy against weft's control plane, every scenario in both ADS
//! flavours: State of the World and Delta.
//!
//! The payments example runs with its pod IPs moved to the test's own loopback
//! subnet: frontend (.1), payment-v1 (.2), payment-v2 (.3). Each has stock Envoy
//! as its proxy; requests enter at the frontend's outbound port (4140), are
//! split by the TrafficSplit, and reach each version's app through that
//! version's Envoy inbound listener (4143).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use weft_control::bootstrap::AdsMode;
use weft_integration::load;
use weft_integration::mesh::LocalMesh;
use weft_integration::{Backend, Envoy, SteadyLoad, eventually};

const HOST: &str = "payment-svc:8080";

/// The payments canary with an Envoy per workload.
struct Canary {
    mesh: LocalMesh,
    frontend: Envoy,
    _v1: (Envoy, Backend),
    _v2: (Envoy, Backend),
}

impl Canary {
    async fn start(mode: AdsMode) -> anyhow::Result<Canary> {
        let mesh = LocalMesh::example("payments").await?;
        let v1 = (
            mesh.envoy("payment-v1", "payments", "payment", 2, mode).await?,
            mesh.backend(2, 8080, "payment-v1").await?,
        );
        let v2 = (
            mesh.envoy("payment-v2", "payments", "payment", 3, mode).await?,
            mesh.backend(3, 8080, "payment-v2").await?,
        );
        let frontend = mesh.envoy("frontend", "payments", "frontend", 1, mode).await?;
        Ok(Canary { mesh, frontend, _v1: v1, _v2: v2 })
    }

    fn outbound(&self) -> SocketAddr {
        self.mesh.subnet.addr(1, 4140)
    }

    /// Sends `n` requests to payment-svc and returns the tally.
    async fn traffic(&self, n: usize) -> load::Tally {
        load::run(self.outbound(), HOST, "/pay", n, 8).await
    }

    /// Waits until a window of requests splits as `want_v2` (a fraction) within `tolerance`.
    async fn converges_to(&self, want_v2: f64, tolerance: f64) -> anyhow::Result<()> {
        eventually(&format!("payment-v2's share to reach {want_v2}"), || async {
            let t = self.traffic(200).await;
            let share = t.share("payment-v2");
            anyhow::ensure!(t.failures == 0, "failures: {:?}", t);
            anyhow::ensure!((share - want_v2).abs() <= tolerance, "payment-v2 share {share}");
            anyhow::Ok(true)
        })
        .await
    }

    async fn apply_split(&self, v1: &str, v2: &str) -> anyhow::Result<(i32, String, String)> {
        let file = tempfile::Builder::new().prefix("split-").suffix(".yaml").tempfile()?;
        std::fs::write(file.path(), split_yaml(v1, v2))?;
        self.mesh.weft_apply(file.path()).await
    }
}

fn split_yaml(v1: &str, v2: &str) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata:\n  name: payment-split\n  namespace: payments\nspec:\n  service: payment-svc\n  backends:\n  - service: payment-v1\n    weight: {v1}\n  - service: payment-v2\n    weight: {v2}\n"
    )
}

async fn reaches_live_with_every_type_acked(mode: AdsMode) -> anyhow::Result<()> {
    let canary = Canary::start(mode).await?;
    assert_eq!(canary.frontend.server_state().await?, "LIVE");
    let proxies = eventually("every type ACKed by the frontend Envoy", || async {
        let proxies = canary.mesh.proxies().await?;
        let fe = proxies.get("frontend").cloned();
        let Some(fe) = fe else { return anyhow::Ok(None) };
        for t in ["cds", "eds", "lds", "rds"] {
            let tr = &fe["types"][t];
            anyhow::ensure!(tr["acks"].as_u64().unwrap_or(0) > 0, "{t} not ACKed: {fe}");
            anyhow::ensure!(tr["nacks"] == 0, "{t} NACKed: {fe}");
            anyhow::ensure!(tr["acked_version"] == tr["sent_version"], "{t} behind: {fe}");
        }
        anyhow::Ok(Some(proxies))
    })
    .await?;
    let stream = proxies["frontend"]["stream"].as_str().unwrap();
    assert_eq!(stream, if mode == AdsMode::Delta { "ads-delta" } else { "ads-sotw" });
    // Envoy's own view: the outbound and inbound listeners weft sent are active.
    let listeners = canary.frontend.get_admin("/listeners").await?;
    assert!(listeners.contains("outbound::") && listeners.contains("inbound::"), "{listeners}");
    // The control plane's view of the same proxy, as Envoy JSON.
    let dump: serde_json::Value =
        serde_json::from_str(&canary.mesh.admin_get("/debug/config?node=frontend").await?)?;
    let lds = dump["resources"]["lds"].as_array().expect("listeners");
    let outbound = lds.iter().find(|l| l["name"] == "outbound").expect("outbound listener");
    assert_eq!(outbound["resource"]["@type"], weft_xds_protos::type_url::LISTENER);
    let port = &outbound["resource"]["address"]["socketAddress"]["portValue"];
    assert_eq!(port, 4140, "{outbound}");
    let metrics = canary.mesh.admin_get("/metrics").await?;
    assert!(metrics.contains("weft_xds_connected_proxies{mode="), "{metrics}");
    Ok(())
}

#[tokio::test]
async fn envoy_accepts_the_bootstrap_weft_prints() -> anyhow::Result<()> {
    for flavour in ["--delta", "--sotw"] {
        let out = std::process::Command::new(weft_integration::weft_bin()?)
            .args([
                "envoy-bootstrap",
                "--node-id",
                "web",
                "--namespace",
                "shop",
                "--pod-ip",
                "127.0.10.1",
                flavour,
            ])
            .output()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
        std::fs::write(file.path(), &out.stdout)?;
        let check = std::process::Command::new(weft_integration::envoy_bin()?)
            .args(["--mode", "validate", "-c"])
            .arg(file.path())
            .output()?;
        assert!(
            check.status.success(),
            "envoy --mode validate refused the {flavour} bootstrap: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    Ok(())
}

async fn payments_canary_sends_five_percent_to_v2(mode: AdsMode) -> anyhow::Result<()> {
    let canary = Canary::start(mode).await?;
    canary.converges_to(0.05, 0.05).await?;
    let t = canary.traffic(2000).await;
    assert_eq!(t.failures, 0, "{t:?}");
    assert_eq!(t.ok(), 2000, "{t:?}");
    let share = t.share("payment-v2") * 100.0;
    assert!(
        (3.5..=6.5).contains(&share),
        "payment-v2 got {share:.2} % of 2,000 requests, want 5 +- 1.5: {t:?}"
    );
    Ok(())
}

async fn new_split_converges_without_failed_requests(mode: AdsMode) -> anyhow::Result<()> {
    let canary = Canary::start(mode).await?;
    canary.converges_to(0.05, 0.05).await?;
    let load = SteadyLoad::start(canary.outbound(), HOST, "/pay", 100);
    let served = |n: usize| {
        let load = &load;
        async move {
            eventually(&format!("{n} requests of steady load"), || async { load.so_far().total() >= n }).await
        }
    };
    served(20).await?;
    let (code, out, err) = canary.apply_split("500m", "500m").await?;
    assert_eq!(code, 0, "weft apply failed: {out}{err}");
    assert!(out.contains("TrafficSplit payments/payment-split"), "{out}");
    canary.converges_to(0.5, 0.12).await?;
    let (code, out, err) = canary.apply_split("0", "1").await?;
    assert_eq!(code, 0, "weft apply failed: {out}{err}");
    canary.converges_to(1.0, 0.0).await?;
    let so_far = load.so_far().total();
    served(so_far + 20).await?;
    let tally = load.stop().await?;
    assert!(
        tally.by_body.get("payment-v1").is_some_and(|n| *n > 0),
        "v1 served before the change: {tally:?}"
    );
    assert_eq!(tally.failures, 0, "requests failed during the change: {tally:?}");
    // The file on disk holds the applied split.
    let stored = canary.mesh.read_manifest("split.yaml")?;
    assert!(stored.contains("weight: 1") && !stored.contains("950m"), "{stored}");
    Ok(())
}

async fn removed_endpoint_stops_receiving_traffic(mode: AdsMode) -> anyhow::Result<()> {
    let canary = Canary::start(mode).await?;
    canary.mesh.write_manifest("split.yaml", &split_yaml("500m", "500m"))?;
    canary.converges_to(0.5, 0.12).await?;
    // Remove payment-v2's pod: its service has no endpoint left.
    let payment = canary.mesh.read_manifest("payment.yaml")?;
    let without_v2: Vec<&str> = payment
        .split("\n---\n")
        .filter(|doc| !doc.contains("name: payment-v2\n  namespace: payments\n  labels"))
        .collect();
    assert_eq!(without_v2.len(), 4, "the example's payment-v2 pod was found and removed");
    canary.mesh.write_manifest("payment.yaml", &without_v2.join("\n---\n"))?;
    canary.converges_to(0.0, 0.0).await?;
    let t = canary.traffic(300).await;
    assert_eq!(t.failures, 0, "{t:?}");
    assert_eq!(t.by_body.get("payment-v2"), None, "{t:?}");
    Ok(())
}

async fn invalid_manifest_is_refused_and_traffic_is_unchanged(mode: AdsMode) -> anyhow::Result<()> {
    let canary = Canary::start(mode).await?;
    canary.converges_to(0.05, 0.05).await?;
    let before = canary.mesh.read_manifest("split.yaml")?;
    let version_before = canary.mesh.proxies().await?["frontend"]["snapshot_version"].clone();
    let (code, out, err) = canary.apply_split("950m", "-5").await?;
    assert_eq!(code, 1, "weft apply must fail: {out}{err}");
    assert!(err.contains("TrafficSplit payments/payment-split"), "names the object: {err}");
    assert!(err.contains("spec.backends[1].weight"), "names the field: {err}");
    assert_eq!(canary.mesh.read_manifest("split.yaml")?, before, "nothing stored");
    assert_eq!(
        canary.mesh.proxies().await?["frontend"]["snapshot_version"],
        version_before,
        "nothing published"
    );
    let t = canary.traffic(1000).await;
    assert_eq!(t.failures, 0, "{t:?}");
    let share = t.share("payment-v2") * 100.0;
    assert!((2.0..=8.0).contains(&share), "split unchanged at 5 %: {share:.2} %");
    Ok(())
}

/// One test per scenario and ADS flavour.
macro_rules! both_modes {
    ($($scenario:ident),* $(,)?) => {
        mod sotw {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    super::$scenario(super::AdsMode::Sotw).await
                }
            )*
        }
        mod delta {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    super::$scenario(super::AdsMode::Delta).await
                }
            )*
        }
    };
}

both_modes!(
    reaches_live_with_every_type_acked,
    payments_canary_sends_five_percent_to_v2,
    new_split_converges_without_failed_requests,
    removed_endpoint_stops_receiving_traffic,
    invalid_manifest_is_refused_and_traffic_is_unchanged,
);
