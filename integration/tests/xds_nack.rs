//! A scripted xDS client that NACKs: the NACK is recorded with its detail and
//! the rejected version is not sent to that proxy again; the next one is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use weft_integration::eventually;
use weft_integration::mesh::LocalMesh;
use weft_integration::xds_client;
use weft_xds_protos::type_url::CLUSTER;

const DETAIL: &str = "cluster outbound|8080||payment-svc.payments.svc.cluster.local: unsupported field";

const UNSELECTED_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: idle\n  namespace: payments\n  labels:\n    app: idle\nstatus:\n  podIP: 127.0.10.9\n";
const NEW_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: ledger\n  namespace: payments\nspec:\n  selector:\n    app: ledger\n  ports:\n  - port: 8080\n";

/// Waits until the scripted proxy's stream has seen a snapshot newer than `after`, and its NACK is on record.
async fn nack_recorded(mesh: &LocalMesh, after: u64) -> anyhow::Result<u64> {
    eventually("the NACK to show in /debug/proxies", || async {
        let proxies = mesh.proxies().await?;
        let Some(p) = proxies.get("scripted") else { return anyhow::Ok(None) };
        let cds = &p["types"]["cds"];
        anyhow::ensure!(cds["nacks"] == 1, "{p}");
        anyhow::ensure!(cds["last_nack"]["detail"] == DETAIL, "{p}");
        let v = p["snapshot_version"].as_u64().unwrap_or(0);
        anyhow::ensure!(v > after, "stream still at snapshot {v}");
        anyhow::Ok(Some(v))
    })
    .await
}

#[tokio::test]
async fn sotw_nack_is_recorded_and_the_rejected_version_is_not_resent() -> anyhow::Result<()> {
    let mesh = LocalMesh::example("payments").await?;
    let node = xds_client::node("scripted", "payments", "frontend", &mesh.subnet.ip(1).to_string());
    let mut ads = mesh.connect_sotw(node).await?;
    ads.send(xds_client::request(CLUSTER, &[], "", "", None))?;
    let rejected = ads.next_response(Duration::from_secs(5)).await?;
    assert!(!rejected.resources.is_empty());
    ads.nack(&rejected, DETAIL)?;
    let v = nack_recorded(&mesh, 0).await?;

    // A change that leaves this proxy's clusters as they were: nothing is sent.
    mesh.write_manifest("idle.yaml", UNSELECTED_POD)?;
    nack_recorded(&mesh, v).await?;
    assert!(ads.recv(Duration::from_millis(500)).await.is_none(), "the rejected version was sent again");

    // A change to the clusters: the new version is sent.
    mesh.write_manifest("ledger.yaml", NEW_SERVICE)?;
    let next = ads.next_response(Duration::from_secs(10)).await?;
    assert_eq!(next.type_url, CLUSTER);
    assert_ne!(next.version_info, rejected.version_info);
    assert_eq!(next.resources.len(), rejected.resources.len() + 1);
    Ok(())
}

#[tokio::test]
async fn delta_nack_is_recorded_and_the_rejected_resources_are_not_resent() -> anyhow::Result<()> {
    let mesh = LocalMesh::example("payments").await?;
    let node = xds_client::node("scripted", "payments", "frontend", &mesh.subnet.ip(1).to_string());
    let mut ads = mesh.connect_delta(node).await?;
    ads.send(xds_client::delta_request(CLUSTER, &[], &[]))?;
    let rejected = ads.next_response(Duration::from_secs(5)).await?;
    assert!(!rejected.resources.is_empty());
    ads.nack(&rejected, DETAIL)?;
    let v = nack_recorded(&mesh, 0).await?;

    mesh.write_manifest("idle.yaml", UNSELECTED_POD)?;
    nack_recorded(&mesh, v).await?;
    assert!(ads.recv(Duration::from_millis(500)).await.is_none(), "rejected resources were sent again");

    mesh.write_manifest("ledger.yaml", NEW_SERVICE)?;
    let next = ads.next_response(Duration::from_secs(10)).await?;
    let names: Vec<&str> = next.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["outbound|8080||ledger.payments.svc.cluster.local"], "only the new cluster");
    Ok(())
}
