//! Certificate rotation under load: with 60-second workload certificates, proxies renew
//! theirs (at 70 % of their life) several times in three minutes of steady traffic, and
//! not one request may fail. A mesh runs the payments canary, split 50/50 so both
//! server-side proxies carry traffic, with the frontend's proxy as the client; every
//! proxy's certificate must really change at least twice: weft-proxy's `/identity`
//! (`not_after`), Envoy's `/certs` (`expiration_time` of its SVID).
//!
//! Three meshes run side by side, each on its own subnet: a weft-proxy pair, an Envoy
//! pair, and Envoy in front of weft-proxy. The test takes a little over three minutes
//! and runs in CI like every other test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use weft_control::bootstrap::AdsMode;
use weft_integration::{LocalMesh, Proxy, ProxyKind, SteadyLoad, eventually, load};

const HOST: &str = "payment-svc:8080";
/// Workload certificates' lifetime.
const LIFETIME: Duration = Duration::from_secs(60);
/// How long the steady load runs.
const LOAD_FOR: Duration = Duration::from_secs(180);
/// Requests per second.
const RATE: u32 = 50;
/// How often each proxy's certificate is looked at.
const SAMPLE_EVERY: Duration = Duration::from_secs(3);

const SPLIT_HALF: &str = "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata:\n  name: payment-split\n  namespace: payments\nspec:\n  service: payment-svc\n  backends:\n  - service: payment-v1\n    weight: 500m\n  - service: payment-v2\n    weight: 500m\n";

/// When the proxy's current workload certificate expires, as its admin API says.
async fn cert_expiry(proxy: &Proxy, spiffe_id: &str) -> anyhow::Result<String> {
    match proxy {
        Proxy::Weft(w) => {
            let identity: serde_json::Value = serde_json::from_str(&w.get_admin("/identity").await?)?;
            anyhow::ensure!(identity["identity"] == spiffe_id, "weft-proxy's /identity: {identity}");
            let not_after = &identity["not_after"];
            anyhow::ensure!(!not_after.is_null(), "no not_after in /identity: {identity}");
            Ok(not_after.to_string())
        }
        Proxy::Envoy(e) => {
            let certs: serde_json::Value = serde_json::from_str(&e.get_admin("/certs").await?)?;
            let latest = certs["certificates"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["cert_chain"].as_array().into_iter().flatten())
                .filter(|c| {
                    c["subject_alt_names"].as_array().into_iter().flatten().any(|san| san["uri"] == spiffe_id)
                })
                .filter_map(|c| c["expiration_time"].as_str())
                .max()
                .map(str::to_owned);
            latest.ok_or_else(|| {
                anyhow::anyhow!("Envoy's /certs shows no certificate for {spiffe_id}: {certs}")
            })
        }
    }
}

/// Runs one mesh through [`LOAD_FOR`] of load; what it saw, or why it failed.
async fn no_request_fails_across_rotations(client: ProxyKind, servers: ProxyKind) -> anyhow::Result<String> {
    let mesh = LocalMesh::example_builder("payments").cert_lifetime(LIFETIME).start().await?;
    mesh.write_manifest("split.yaml", SPLIT_HALF)?;
    let _apps = (mesh.backend(2, 8080, "payment-v1").await?, mesh.backend(3, 8080, "payment-v2").await?);
    let mode = AdsMode::Delta;
    let proxies = [
        ("payment", mesh.proxy(servers, "payment-v1", "payments", "payment", 2, mode).await?),
        ("payment", mesh.proxy(servers, "payment-v2", "payments", "payment", 3, mode).await?),
        ("frontend", mesh.proxy(client, "frontend", "payments", "frontend", 1, mode).await?),
    ];
    let outbound = mesh.subnet.addr(1, 4140);
    eventually("both payment versions to answer over mTLS", || async {
        let t = load::run(outbound, HOST, "/pay", 100, 4).await;
        anyhow::ensure!(t.failures == 0 && t.share("payment-v1") > 0.2 && t.share("payment-v2") > 0.2, "{t}");
        anyhow::Ok(true)
    })
    .await?;

    let id = |sa: &str| format!("spiffe://cluster.local/ns/payments/sa/{sa}");
    let mut seen: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (i, (sa, p)) in proxies.iter().enumerate() {
        seen.entry(i).or_default().insert(cert_expiry(p, &id(sa)).await?);
    }

    let load = SteadyLoad::start(outbound, HOST, "/pay", RATE);
    let started = Instant::now();
    while started.elapsed() < LOAD_FOR {
        tokio::time::sleep(SAMPLE_EVERY).await;
        for (i, (sa, p)) in proxies.iter().enumerate() {
            // An admin hiccup is not a failed request; a missing certificate shows at the end.
            if let Ok(expiry) = cert_expiry(p, &id(sa)).await {
                seen.entry(i).or_default().insert(expiry);
            }
        }
        if load.so_far().failures > 0 {
            break;
        }
    }
    let tally = load.stop().await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(tally.failures == 0, "requests failed across rotations: {tally}");
    let expected = f64::from(RATE) * elapsed.as_secs_f64();
    anyhow::ensure!(
        tally.total() as f64 >= expected * 0.9,
        "only {} of ~{expected:.0} requests were sent: {tally}",
        tally.total()
    );
    anyhow::ensure!(tally.share("payment-v1") > 0.3 && tally.share("payment-v2") > 0.3, "{tally}");
    let mut rotations = Vec::new();
    for (i, (_, p)) in proxies.iter().enumerate() {
        let expiries = &seen[&i];
        anyhow::ensure!(
            expiries.len() >= 3,
            "{} at {} rotated its certificate {} times in {elapsed:?}, want at least 2: {expiries:?}",
            p.kind(),
            p.admin_addr(),
            expiries.len() - 1
        );
        rotations.push(expiries.len() - 1);
    }
    Ok(format!("{} requests in {elapsed:.0?}, none failed; rotations per proxy {rotations:?}", tally.total()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_of_60s_rotate_under_load_without_a_failed_request() {
    use ProxyKind::{Envoy, Weft};
    let pairs = [(Weft, Weft), (Envoy, Envoy), (Envoy, Weft)];
    let (a, b, c) = tokio::join!(
        no_request_fails_across_rotations(pairs[0].0, pairs[0].1),
        no_request_fails_across_rotations(pairs[1].0, pairs[1].1),
        no_request_fails_across_rotations(pairs[2].0, pairs[2].1),
    );
    let mut failed = Vec::new();
    for ((client, server), result) in pairs.iter().zip([a, b, c]) {
        match result {
            Ok(summary) => eprintln!("{client} -> {server}: {summary}"),
            Err(e) => failed.push(format!("{client} -> {server}: {e:#}")),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
