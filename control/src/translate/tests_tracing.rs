//! Tracing in translation: with `--trace-collector`, every HTTP connection manager gets the
//! OpenTelemetry tracer and each proxy a static collector cluster; without, nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use prost::{Message, Name};
use weft_xds_protos::envoy::config::cluster::v3::Cluster;
use weft_xds_protos::envoy::config::core::v3::{TrafficDirection, grpc_service};
use weft_xds_protos::envoy::config::listener::v3::{Listener, filter};
use weft_xds_protos::envoy::config::trace::v3::{OpenTelemetryConfig, tracing::http::ConfigType};
use weft_xds_protos::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;

use weft_xds_protos::envoy::extensions::tracers::opentelemetry::samplers::v3::{
    ParentBasedSamplerConfig, TraceIdRatioBasedSamplerConfig,
};

use super::*;
use crate::source::ManifestDir;

fn node() -> ProxyNode {
    ProxyNode {
        id: "payment-v1".into(),
        namespace: "payments".into(),
        service_account: "payment-v1".into(),
        pod_ip: "127.0.10.3".parse().unwrap(),
        inbound_port: INBOUND_PORT,
        outbound_port: OUTBOUND_PORT,
        transparent: false,
    }
}

fn resources(opts: &MeshOptions) -> ProxyResources {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/payments");
    let report = ManifestDir::new(std::path::Path::new(example)).load();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mesh = translate_mesh(&report.state, opts);
    translate_proxy(&report.state, &mesh.splits, &node(), opts)
}

fn hcms(l: &Listener) -> Vec<HttpConnectionManager> {
    l.filter_chains
        .iter()
        .chain(l.default_filter_chain.as_ref())
        .flat_map(|c| c.filters.iter())
        .filter_map(|f| match &f.config_type {
            Some(filter::ConfigType::TypedConfig(a)) if a.type_url == HttpConnectionManager::type_url() => {
                Some(HttpConnectionManager::decode(a.value.as_slice()).unwrap())
            }
            _ => None,
        })
        .collect()
}

fn traced() -> MeshOptions {
    MeshOptions {
        tracing: Some(TraceOptions {
            collector: "127.0.0.9:4317".parse().unwrap(),
            sampling: "2.5".parse().unwrap(),
        }),
        ..MeshOptions::default()
    }
}

#[test]
fn every_http_manager_traces_to_the_collector_as_the_proxy() {
    let res = resources(&traced());
    let mut seen = 0;
    for l in &res.listeners {
        let managers = hcms(l);
        if managers.is_empty() {
            continue;
        }
        let direction =
            if l.name == "inbound" { TrafficDirection::Inbound } else { TrafficDirection::Outbound };
        assert_eq!(l.traffic_direction, direction as i32, "{}", l.name);
        for hcm in managers {
            let tracing = hcm.tracing.expect("traced");
            assert_eq!(tracing.random_sampling.unwrap().value, 100.0, "the sampler decides");
            let provider = tracing.provider.unwrap();
            assert_eq!(provider.name, "envoy.tracers.opentelemetry");
            let Some(ConfigType::TypedConfig(any)) = provider.config_type else { panic!() };
            let otel = OpenTelemetryConfig::decode(any.value.as_slice()).unwrap();
            assert_eq!(otel.service_name, "payment-v1");
            let sampler = otel.sampler.unwrap();
            assert_eq!(sampler.name, "envoy.tracers.opentelemetry.samplers.parent_based");
            let parent =
                ParentBasedSamplerConfig::decode(sampler.typed_config.unwrap().value.as_slice()).unwrap();
            let wrapped = parent.wrapped_sampler.unwrap();
            let ratio =
                TraceIdRatioBasedSamplerConfig::decode(wrapped.typed_config.unwrap().value.as_slice());
            let pct = ratio.unwrap().sampling_percentage.unwrap();
            assert_eq!((pct.numerator, pct.denominator), (25_000, 2), "2.5 % in parts per million");
            let Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc)) =
                otel.grpc_service.unwrap().target_specifier
            else {
                panic!()
            };
            assert_eq!(grpc.cluster_name, OTEL_COLLECTOR_CLUSTER);
            seen += 1;
        }
    }
    assert!(seen >= 2, "the outbound and inbound managers ({seen})");
    let collector: &Cluster = res.clusters.iter().find(|c| c.name == OTEL_COLLECTOR_CLUSTER).unwrap();
    let la = collector.load_assignment.as_ref().unwrap();
    let text = format!("{la:?}");
    assert!(text.contains("127.0.0.9") && text.contains("4317"), "{text}");
    assert!(
        collector
            .typed_extension_protocol_options
            .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    );
}

#[test]
fn without_a_collector_no_tracing_config_is_sent() {
    let res = resources(&MeshOptions::default());
    assert!(res.clusters.iter().all(|c| c.name != OTEL_COLLECTOR_CLUSTER));
    for l in &res.listeners {
        assert_eq!(l.traffic_direction, 0);
        assert!(hcms(l).iter().all(|h| h.tracing.is_none()));
    }
}

#[test]
fn sampling_rates_parse_as_percentages_and_bad_ones_say_why() {
    assert_eq!("100".parse::<Sampling>().unwrap().percent(), 100.0);
    assert_eq!("0.01%".parse::<Sampling>().unwrap().percent(), 0.01);
    assert_eq!(Sampling::default().percent(), Sampling::DEFAULT_PERCENT);
    assert!("150".parse::<Sampling>().unwrap_err().contains("between 0 and 100"));
    assert!("lots".parse::<Sampling>().unwrap_err().contains("not a number"));
}
