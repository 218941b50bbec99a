//! Envoy bootstraps that point stock Envoy at weft's control plane over ADS.
//!
//! By default ([`envoy_bootstrap_with`] and [`XdsTransport::Tls`]) Envoy
//! speaks ADS over TLS: the static cluster `weft-xds` presents the workload
//! certificate (SDS secret `default`) and accepts only a control plane whose
//! certificate chains to the mesh's trust bundle (SDS secret `ROOTCA`) and
//! names the control plane's SPIFFE ID. Both secrets come from the
//! `weft-agent` beside Envoy, over the static cluster `weft-sds` (its Unix
//! socket, HTTP/2). The same `weft-sds` cluster serves the `default` and
//! `ROOTCA` secrets that the mesh's listeners and clusters name.
//! [`envoy_bootstrap`] (and [`XdsTransport::Plaintext`]) is the
//! `--insecure-plaintext` bootstrap: ADS without TLS.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::identity::SpiffeId;

/// The static cluster of the control plane's xDS (ADS) server.
pub const XDS_CLUSTER: &str = "weft-xds";
/// The static cluster of the weft-agent's SDS socket.
pub const SDS_CLUSTER: &str = "weft-sds";
/// The TLS server name Envoy sends to the control plane (its certificate carries it).
pub const CONTROL_SNI: &str = "weft-control.weft-system.svc";
/// The SDS secret of the workload certificate and key.
pub const DEFAULT_SECRET: &str = "default";
/// The SDS secret of the trust bundle.
pub const ROOTCA_SECRET: &str = "ROOTCA";

/// How Envoy reaches the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XdsTransport {
    /// ADS in plaintext, no workload certificate (`--insecure-plaintext`).
    Plaintext,
    /// ADS over TLS with the workload certificate from the weft-agent.
    Tls(BootstrapTls),
}

/// What a TLS bootstrap needs besides [`BootstrapConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapTls {
    /// The weft-agent's SDS socket (best absolute: Envoy resolves a relative
    /// path from its own working directory).
    pub sds_socket: PathBuf,
    /// The SPIFFE ID the control plane's certificate must carry.
    pub control_identity: SpiffeId,
}

/// Which ADS flavour Envoy should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdsMode {
    /// Incremental xDS (`DELTA_GRPC`).
    Delta,
    /// State of the World (`GRPC`).
    Sotw,
}

/// What a bootstrap needs to know.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// `node.id`, unique per proxy.
    pub node_id: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's ServiceAccount.
    pub service_account: String,
    /// The workload's pod IP: Envoy's listeners bind there.
    pub pod_ip: IpAddr,
    /// The control plane's xDS address (`host:port`).
    pub xds_addr: String,
    /// Envoy's admin address.
    pub admin_addr: SocketAddr,
    /// SotW or Delta.
    pub mode: AdsMode,
}

/// Why a bootstrap cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The xDS address is not `host:port`.
    #[error("--xds-addr {0:?} must be host:port")]
    XdsAddr(String),
    /// The SDS socket path cannot be written into the bootstrap.
    #[error("--sds-socket {0:?} must be valid UTF-8")]
    SdsSocket(PathBuf),
}

/// The `--insecure-plaintext` bootstrap (ADS without TLS), as JSON (which
/// Envoy reads as YAML too).
pub fn envoy_bootstrap(cfg: &BootstrapConfig) -> Result<String, BootstrapError> {
    envoy_bootstrap_with(cfg, &XdsTransport::Plaintext)
}

/// The SDS config source of a secret served by the weft-agent (`weft-sds`).
pub fn sds_config_source() -> Value {
    json!({
        "resource_api_version": "V3",
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{ "envoy_grpc": { "cluster_name": SDS_CLUSTER } }],
        },
    })
}

/// HTTP/2 upstream options (gRPC).
fn http2_options() -> Value {
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": { "http2_protocol_options": {} },
        },
    })
}

/// The `weft-sds` cluster: the agent's Unix socket.
fn sds_cluster(socket: &str) -> Value {
    json!({
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": http2_options(),
        "load_assignment": {
            "cluster_name": SDS_CLUSTER,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": { "pipe": { "path": socket } } } }] }],
        },
    })
}

/// TLS to the control plane: the workload certificate from SDS, and a
/// server that chains to the SDS trust bundle and names `control_identity`.
fn xds_transport_socket(control_identity: &SpiffeId) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": CONTROL_SNI,
            "common_tls_context": {
                "tls_params": {
                    "tls_minimum_protocol_version": "TLSv1_2",
                    "tls_maximum_protocol_version": "TLSv1_3",
                },
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [
                    { "name": DEFAULT_SECRET, "sds_config": sds_config_source() },
                ],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_typed_subject_alt_names": [{
                            "san_type": "URI",
                            "matcher": { "exact": control_identity.to_string() },
                        }],
                    },
                    "validation_context_sds_secret_config": {
                        "name": ROOTCA_SECRET,
                        "sds_config": sds_config_source(),
                    },
                },
            },
        },
    })
}

/// The bootstrap for `transport`, as JSON (which Envoy reads as YAML too).
pub fn envoy_bootstrap_with(
    cfg: &BootstrapConfig,
    transport: &XdsTransport,
) -> Result<String, BootstrapError> {
    let (host, port) = cfg
        .xds_addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .ok_or_else(|| BootstrapError::XdsAddr(cfg.xds_addr.clone()))?;
    let discovery = if host.parse::<IpAddr>().is_ok() { "STATIC" } else { "STRICT_DNS" };
    let api_type = match cfg.mode {
        AdsMode::Delta => "DELTA_GRPC",
        AdsMode::Sotw => "GRPC",
    };
    let ads = json!({ "ads": {}, "resource_api_version": "V3" });
    let mut xds_cluster = json!({
        "name": XDS_CLUSTER,
        "type": discovery,
        "connect_timeout": "1s",
        "typed_extension_protocol_options": http2_options(),
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "socket_address": { "address": host, "port_value": port },
            } } }] }],
        },
    });
    // The SDS cluster comes first: the xDS cluster's TLS refers to it.
    let mut clusters = Vec::new();
    if let XdsTransport::Tls(tls) = transport {
        let socket =
            tls.sds_socket.to_str().ok_or_else(|| BootstrapError::SdsSocket(tls.sds_socket.clone()))?;
        xds_cluster["transport_socket"] = xds_transport_socket(&tls.control_identity);
        clusters.push(sds_cluster(socket));
    }
    clusters.push(xds_cluster);
    let doc = json!({
        "node": {
            "id": cfg.node_id,
            "cluster": cfg.namespace,
            "metadata": {
                "NAMESPACE": cfg.namespace,
                "SERVICE_ACCOUNT": cfg.service_account,
                "POD_IP": cfg.pod_ip.to_string(),
            },
        },
        "admin": {
            "address": { "socket_address": { "address": cfg.admin_addr.ip().to_string(), "port_value": cfg.admin_addr.port() } },
        },
        // Envoy's histograms (latency) reach its admin endpoint at each flush; flushing
        // every second instead of every 5 s keeps `weft stat` windows close to exact.
        "stats_flush_interval": "1s",
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{ "envoy_grpc": { "cluster_name": XDS_CLUSTER } }],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "clusters": clusters,
        },
    });
    // JSON is YAML, and unlike a YAML emitter's plain scalars it cannot be
    // misread: Envoy's YAML 1.1 parser takes an unquoted `yes` or `n` for a bool.
    // Serialising a JSON value cannot fail.
    Ok(serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg(mode: AdsMode, xds: &str) -> BootstrapConfig {
        BootstrapConfig {
            node_id: "frontend".into(),
            namespace: "payments".into(),
            service_account: "frontend".into(),
            pod_ip: "127.0.10.1".parse().unwrap(),
            xds_addr: xds.into(),
            admin_addr: "127.0.10.1:4191".parse().unwrap(),
            mode,
        }
    }

    #[test]
    fn bootstrap_carries_node_metadata_and_ads_flavour() {
        let y: serde_json::Value =
            serde_yaml_ng::from_str(&envoy_bootstrap(&cfg(AdsMode::Delta, "127.0.0.1:8086")).unwrap())
                .unwrap();
        assert_eq!(y["node"]["metadata"]["POD_IP"], "127.0.10.1");
        assert_eq!(y["node"]["metadata"]["NAMESPACE"], "payments");
        assert_eq!(y["dynamic_resources"]["ads_config"]["api_type"], "DELTA_GRPC");
        assert_eq!(y["static_resources"]["clusters"][0]["type"], "STATIC");
        let y: serde_json::Value =
            serde_yaml_ng::from_str(&envoy_bootstrap(&cfg(AdsMode::Sotw, "weft.weft-system:8086")).unwrap())
                .unwrap();
        assert_eq!(y["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
        assert_eq!(y["static_resources"]["clusters"][0]["type"], "STRICT_DNS");
    }

    #[test]
    fn bootstrap_refuses_an_xds_address_without_port() {
        assert!(envoy_bootstrap(&cfg(AdsMode::Sotw, "localhost")).is_err());
    }

    fn tls() -> XdsTransport {
        XdsTransport::Tls(BootstrapTls {
            sds_socket: "/run/weft/sds/agent.sock".into(),
            control_identity: "spiffe://example.org/ns/weft-system/sa/weft-control".parse().unwrap(),
        })
    }

    #[test]
    fn tls_bootstrap_takes_the_xds_client_certificate_and_trust_from_the_agent() {
        let text = envoy_bootstrap_with(&cfg(AdsMode::Delta, "127.0.0.1:8086"), &tls()).unwrap();
        let y: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        let clusters = y["static_resources"]["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 2);
        let sds = &clusters[0];
        assert_eq!(sds["name"], SDS_CLUSTER);
        assert_eq!(
            sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]["path"],
            "/run/weft/sds/agent.sock"
        );
        assert!(sds["typed_extension_protocol_options"].to_string().contains("http2_protocol_options"));
        assert!(sds.get("transport_socket").is_none(), "the socket is local: no TLS");

        let xds = &clusters[1];
        assert_eq!(xds["name"], XDS_CLUSTER);
        let tls = &xds["transport_socket"]["typed_config"];
        assert_eq!(tls["sni"], CONTROL_SNI);
        let common = &tls["common_tls_context"];
        assert_eq!(common["tls_certificate_sds_secret_configs"][0]["name"], "default");
        let source = &common["tls_certificate_sds_secret_configs"][0]["sds_config"];
        assert_eq!(
            source["api_config_source"]["grpc_services"][0]["envoy_grpc"]["cluster_name"],
            SDS_CLUSTER
        );
        assert_eq!(source["api_config_source"]["api_type"], "GRPC");
        let validation = &common["combined_validation_context"];
        assert_eq!(validation["validation_context_sds_secret_config"]["name"], "ROOTCA");
        let san = &validation["default_validation_context"]["match_typed_subject_alt_names"][0];
        assert_eq!(san["san_type"], "URI");
        assert_eq!(san["matcher"]["exact"], "spiffe://example.org/ns/weft-system/sa/weft-control");
        // ADS itself is unchanged.
        assert_eq!(
            y["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"],
            XDS_CLUSTER
        );
    }

    #[test]
    fn plaintext_bootstrap_is_the_insecure_one() {
        let plain = envoy_bootstrap(&cfg(AdsMode::Sotw, "127.0.0.1:8086")).unwrap();
        let y: serde_json::Value = serde_yaml_ng::from_str(&plain).unwrap();
        assert_eq!(y["static_resources"]["clusters"].as_array().unwrap().len(), 1);
        assert!(y["static_resources"]["clusters"][0].get("transport_socket").is_none());
        assert_eq!(
            envoy_bootstrap_with(&cfg(AdsMode::Sotw, "127.0.0.1:8086"), &XdsTransport::Plaintext).unwrap(),
            plain
        );
    }
}
