//! An HTTP connection manager's `tracing`: the OpenTelemetry tracer exporting over gRPC to a
//! cluster (Envoy's `envoy.tracers.opentelemetry`), with its sampling rate.

use weft_xds_protos::envoy::config::core::v3::TypedExtensionConfig;
use weft_xds_protos::envoy::config::core::v3::grpc_service::TargetSpecifier;
use weft_xds_protos::envoy::config::trace::v3::OpenTelemetryConfig;
use weft_xds_protos::envoy::config::trace::v3::tracing::http::ConfigType;
use weft_xds_protos::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use weft_xds_protos::envoy::extensions::tracers::opentelemetry::samplers::v3::{
    ParentBasedSamplerConfig, TraceIdRatioBasedSamplerConfig,
};
use weft_xds_protos::envoy::r#type::v3::fractional_percent::DenominatorType;

use super::{Notes, holds, ignored, unpack, unsupported};
use crate::config::HttpTracing;
use crate::xds::error::{At, FieldError};

/// The tracer's name in Envoy's extension registry.
const OPENTELEMETRY: &str = "envoy.tracers.opentelemetry";

/// Validates `tracing`. `None` when it names no provider (Envoy would fall back to a bootstrap
/// tracer, which weft-proxy does not have: nothing is traced, and the note says so).
pub(crate) fn http_tracing(t: &Tracing, notes: &mut Notes) -> Result<Option<HttpTracing>, FieldError> {
    ignored!(
        notes,
        t,
        "Tracing",
        [client_sampling, overall_sampling, verbose, max_path_tag_length, custom_tags]
    );
    ignored!(notes, t, "Tracing", [operation, upstream_operation]);
    // weft-proxy makes one span per hop, the connection manager's: Envoy's default.
    if t.spawn_upstream_span.as_ref().is_some_and(|b| b.value) {
        notes.ignore("Tracing.spawn_upstream_span");
    }
    let Some(provider) = &t.provider else {
        notes.ignore("Tracing without a provider");
        return Ok(None);
    };
    let any = match &provider.config_type {
        Some(ConfigType::TypedConfig(any)) if holds::<OpenTelemetryConfig>(any) => any,
        Some(ConfigType::TypedConfig(any)) => {
            return Err(FieldError::new(
                "provider.typed_config",
                format!("unsupported tracer {} (weft-proxy exports OpenTelemetry only)", any.type_url),
            ));
        }
        None => {
            return Err(FieldError::new(
                "provider",
                format!("tracer {:?} has no typed_config (weft-proxy needs {OPENTELEMETRY})", provider.name),
            ));
        }
    };
    let otel = unpack::<OpenTelemetryConfig>(any).at("provider.typed_config")?;
    let collector_cluster = collector(&otel, notes).at("provider.typed_config")?;
    // With a sampler, the sampler decides (as in Envoy), and weft-proxy follows parents anyway.
    if let Some(sampler) = &otel.sampler {
        let sampling_percent = parent_based(sampler).at("provider.typed_config.sampler")?;
        let service_name = service_name(otel.service_name);
        return Ok(Some(HttpTracing { collector_cluster, service_name, sampling_percent }));
    }
    let sampling_percent = match &t.random_sampling {
        None => 100.0,
        Some(p) if (0.0..=100.0).contains(&p.value) => p.value,
        Some(p) => {
            return Err(FieldError::new(
                "random_sampling",
                format!("{} is not a percentage between 0 and 100", p.value),
            ));
        }
    };
    let service_name = service_name(otel.service_name);
    Ok(Some(HttpTracing { collector_cluster, service_name, sampling_percent }))
}

/// Envoy's default service name when none is given.
fn service_name(configured: String) -> String {
    if configured.is_empty() { "unknown_service:envoy".to_owned() } else { configured }
}

/// The rate of OpenTelemetry's `ParentBased(TraceIdRatioBased(rate))`, the sampler weft-proxy
/// implements (a parent's decision is kept; new traces are sampled at the rate).
fn parent_based(sampler: &TypedExtensionConfig) -> Result<f64, FieldError> {
    let Some(any) = &sampler.typed_config else { return Err(FieldError::required("typed_config")) };
    if !holds::<ParentBasedSamplerConfig>(any) {
        return Err(FieldError::new(
            "typed_config",
            format!(
                "unsupported sampler {} (weft-proxy supports parent_based(trace_id_ratio_based))",
                any.type_url
            ),
        ));
    }
    let parent = unpack::<ParentBasedSamplerConfig>(any).at("typed_config")?;
    let wrapped = parent
        .wrapped_sampler
        .and_then(|w| w.typed_config)
        .ok_or_else(|| FieldError::required("typed_config.wrapped_sampler.typed_config"))?;
    if !holds::<TraceIdRatioBasedSamplerConfig>(&wrapped) {
        return Err(FieldError::new(
            "typed_config.wrapped_sampler",
            format!("unsupported sampler {} (weft-proxy supports trace_id_ratio_based)", wrapped.type_url),
        ));
    }
    let ratio = unpack::<TraceIdRatioBasedSamplerConfig>(&wrapped).at("typed_config.wrapped_sampler")?;
    let pct = ratio
        .sampling_percentage
        .ok_or_else(|| FieldError::required("typed_config.wrapped_sampler.sampling_percentage"))?;
    let denominator = match DenominatorType::try_from(pct.denominator) {
        Ok(DenominatorType::Hundred) => 100.0,
        Ok(DenominatorType::TenThousand) => 10_000.0,
        Ok(DenominatorType::Million) => 1_000_000.0,
        Err(_) => {
            return Err(FieldError::new(
                "typed_config.wrapped_sampler.sampling_percentage.denominator",
                format!("unknown denominator {}", pct.denominator),
            ));
        }
    };
    // Envoy caps a fraction above 1 at 1.
    Ok((f64::from(pct.numerator) / denominator * 100.0).min(100.0))
}

/// The collector cluster of an OpenTelemetry tracer: Envoy's own gRPC client to a cluster.
fn collector(otel: &OpenTelemetryConfig, notes: &mut Notes) -> Result<String, FieldError> {
    unsupported!(otel, [http_service, exporter, resource_detectors]);
    ignored!(
        notes,
        otel,
        "OpenTelemetryConfig",
        [max_cache_size, set_telemetry_sdk_resource_attributes, set_service_name_resource_attribute]
    );
    ignored!(notes, otel, "OpenTelemetryConfig", [set_instrumentation_scope]);
    let Some(grpc) = &otel.grpc_service else {
        return Err(FieldError::required("grpc_service"));
    };
    ignored!(notes, grpc, "GrpcService", [timeout, initial_metadata, retry_policy]);
    match &grpc.target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(e)) if !e.cluster_name.is_empty() => Ok(e.cluster_name.clone()),
        Some(TargetSpecifier::EnvoyGrpc(_)) => {
            Err(FieldError::required("grpc_service.envoy_grpc.cluster_name"))
        }
        Some(TargetSpecifier::GoogleGrpc(_)) => Err(FieldError::unsupported("grpc_service.google_grpc")),
        None => Err(FieldError::required("grpc_service.envoy_grpc")),
    }
}
