//! Envoy bootstraps that point stock Envoy at weft's control plane over ADS.

use std::net::{IpAddr, SocketAddr};

use serde_json::json;

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
}

/// The bootstrap, as JSON (which Envoy reads as YAML too).
pub fn envoy_bootstrap(cfg: &BootstrapConfig) -> Result<String, BootstrapError> {
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
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{ "envoy_grpc": { "cluster_name": "weft-xds" } }],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "clusters": [{
                "name": "weft-xds",
                "type": discovery,
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} },
                    },
                },
                "load_assignment": {
                    "cluster_name": "weft-xds",
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                        "socket_address": { "address": host, "port_value": port },
                    } } }] }],
                },
            }],
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
}
