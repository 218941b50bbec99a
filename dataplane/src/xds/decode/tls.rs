//! Transport sockets: plaintext (`raw_buffer`) or Envoy's TLS socket, with a
//! `DownstreamTlsContext` on a filter chain and an `UpstreamTlsContext` on a
//! cluster. weft-proxy has one certificate and one trust bundle, its own:
//! a context must name them as the SDS secrets `default` and `ROOTCA`
//! (wherever its `sds_config` points, which only Envoy reads); inline
//! certificates, other secrets and settings rustls cannot honour are errors.

use prost::Name;
use rustls::pki_types::ServerName;
use weft_xds_protos::envoy::config::core::v3::{TransportSocket, transport_socket};
use weft_xds_protos::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, UpstreamTlsContext, certificate_validation_context::TrustChainVerification,
    common_tls_context, subject_alt_name_matcher::SanType, tls_parameters::TlsProtocol,
};
use weft_xds_protos::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use weft_xds_protos::google::protobuf::Any;
use weft_xds_protos::spiffe::SpiffeId;

use super::{Notes, ignored, type_name, unpack, unsupported};
use crate::config::{DownstreamTls, UpstreamTls};
use crate::xds::error::{At, FieldError};

/// The SDS secret of the workload certificate and key.
pub(crate) const CERT_SECRET: &str = "default";
/// The SDS secret of the trust bundle.
pub(crate) const ROOT_SECRET: &str = "ROOTCA";

const RAW_BUFFER: &str = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
const RAW_BUFFER_NAME: &str = "envoy.transport_sockets.raw_buffer";

/// The TLS context of a transport socket; `None` for plaintext.
fn context<'a>(socket: Option<&'a TransportSocket>, expected: &str) -> Result<Option<&'a Any>, FieldError> {
    let Some(socket) = socket else { return Ok(None) };
    match &socket.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) if type_name(&any.type_url) == RAW_BUFFER => {
            Ok(None)
        }
        Some(transport_socket::ConfigType::TypedConfig(any)) if type_name(&any.type_url) == expected => {
            Ok(Some(any))
        }
        Some(transport_socket::ConfigType::TypedConfig(any)) => Err(FieldError::new(
            "typed_config",
            format!(
                "unsupported transport socket {} (here weft-proxy supports raw_buffer, or tls with {})",
                any.type_url,
                expected.rsplit('.').next().unwrap_or(expected)
            ),
        )),
        None if socket.name == RAW_BUFFER_NAME => Ok(None),
        None => {
            Err(FieldError::new("typed_config", format!("required (transport socket {:?})", socket.name)))
        }
    }
}

/// A filter chain's transport socket: TLS termination, or `None` for plaintext.
pub(crate) fn downstream(
    socket: Option<&TransportSocket>,
    notes: &mut Notes,
) -> Result<Option<DownstreamTls>, FieldError> {
    let Some(any) = context(socket, &DownstreamTlsContext::full_name())? else { return Ok(None) };
    let ctx = unpack::<DownstreamTlsContext>(any).at("typed_config")?;
    downstream_context(&ctx, notes).at("typed_config").map(Some)
}

fn downstream_context(ctx: &DownstreamTlsContext, notes: &mut Notes) -> Result<DownstreamTls, FieldError> {
    if ctx.require_sni.as_ref().is_some_and(|b| b.value) {
        return Err(FieldError::unsupported("require_sni"));
    }
    ignored!(
        notes,
        ctx,
        "DownstreamTlsContext",
        [
            session_ticket_keys_type,
            disable_stateful_session_resumption,
            session_timeout,
            ocsp_staple_policy,
            prefer_client_ciphers,
            full_scan_certs_on_sni_mismatch,
        ]
    );
    let common = ctx.common_tls_context.as_ref().ok_or_else(|| FieldError::required("common_tls_context"))?;
    let sans = common_context(common, notes).at("common_tls_context")?;
    if !sans.is_empty() {
        return Err(FieldError::new(
            "common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names",
            "not supported by weft-proxy on a listener (authorize clients with an RBAC filter)",
        ));
    }
    Ok(DownstreamTls {
        require_client_certificate: ctx.require_client_certificate.as_ref().is_some_and(|b| b.value),
        alpn: common.alpn_protocols.clone(),
    })
}

/// A cluster's transport socket: TLS origination, or `None` for plaintext.
/// `all_endpoints` is left false; the caller says where the socket applies.
pub(crate) fn upstream(
    socket: Option<&TransportSocket>,
    notes: &mut Notes,
) -> Result<Option<UpstreamTls>, FieldError> {
    let Some(any) = context(socket, &UpstreamTlsContext::full_name())? else { return Ok(None) };
    let ctx = unpack::<UpstreamTlsContext>(any).at("typed_config")?;
    upstream_context(&ctx, notes).at("typed_config").map(Some)
}

fn upstream_context(ctx: &UpstreamTlsContext, notes: &mut Notes) -> Result<UpstreamTls, FieldError> {
    unsupported!(ctx, [auto_host_sni, auto_sni_san_validation]);
    ignored!(
        notes,
        ctx,
        "UpstreamTlsContext",
        [allow_renegotiation, max_session_keys, enforce_rsa_key_usage]
    );
    if !ctx.sni.is_empty() && ServerName::try_from(ctx.sni.as_str()).is_err() {
        return Err(FieldError::new("sni", format!("{:?} is not a valid server name", ctx.sni)));
    }
    let common = ctx.common_tls_context.as_ref().ok_or_else(|| FieldError::required("common_tls_context"))?;
    let allowed_identities = common_context(common, notes).at("common_tls_context")?;
    if !common.alpn_protocols.is_empty() {
        // Each connection offers exactly what its pool speaks (h2 or http/1.1).
        notes.ignore("UpstreamTlsContext.common_tls_context.alpn_protocols");
    }
    Ok(UpstreamTls { sni: ctx.sni.clone(), allowed_identities, all_endpoints: false })
}

/// Checks a CommonTlsContext; returns the SPIFFE IDs its URI SAN matchers allow.
fn common_context(c: &CommonTlsContext, notes: &mut Notes) -> Result<Vec<String>, FieldError> {
    if !c.tls_certificates.is_empty() {
        return Err(FieldError::new(
            "tls_certificates",
            format!(
                "inline certificates are not supported: weft-proxy presents its own workload certificate \
                 (SDS secret {CERT_SECRET:?})"
            ),
        ));
    }
    unsupported!(
        c,
        [
            tls_certificate_provider_instance,
            custom_tls_certificate_selector,
            tls_certificate_certificate_provider,
            tls_certificate_certificate_provider_instance,
            custom_handshaker,
            key_log,
        ]
    );
    if let Some(params) = &c.tls_params {
        (|| {
            unsupported!(params, [cipher_suites, ecdh_curves, signature_algorithms, compliance_policies]);
            protocol_range(params.tls_minimum_protocol_version, params.tls_maximum_protocol_version)
        })()
        .at("tls_params")?;
    }
    match c.tls_certificate_sds_secret_configs.as_slice() {
        [] => {
            return Err(FieldError::new(
                "tls_certificate_sds_secret_configs",
                format!(
                    "required: weft-proxy presents its workload certificate (SDS secret {CERT_SECRET:?})"
                ),
            ));
        }
        [one] => secret(one, CERT_SECRET, "workload certificate")
            .at_index("tls_certificate_sds_secret_configs", 0)?,
        _ => {
            return Err(FieldError::new(
                "tls_certificate_sds_secret_configs",
                "more than one certificate is not supported by weft-proxy",
            ));
        }
    }
    use common_tls_context::ValidationContextType as V;
    match &c.validation_context_type {
        Some(V::ValidationContextSdsSecretConfig(sds)) => {
            secret(sds, ROOT_SECRET, "trust bundle").at("validation_context_sds_secret_config")?;
            Ok(Vec::new())
        }
        Some(V::CombinedValidationContext(combined)) => {
            let field = "combined_validation_context";
            (|| {
                unsupported!(
                    combined,
                    [
                        validation_context_certificate_provider,
                        validation_context_certificate_provider_instance
                    ]
                );
                let sds = combined
                    .validation_context_sds_secret_config
                    .as_ref()
                    .ok_or_else(|| FieldError::required("validation_context_sds_secret_config"))?;
                secret(sds, ROOT_SECRET, "trust bundle").at("validation_context_sds_secret_config")?;
                match &combined.default_validation_context {
                    Some(v) => validation(v, notes).at("default_validation_context"),
                    None => Ok(Vec::new()),
                }
            })()
            .at(field)
        }
        Some(V::ValidationContext(_)) => Err(FieldError::new(
            "validation_context",
            format!(
                "inline trust is not supported: weft-proxy verifies peers against its own trust bundle \
                 (SDS secret {ROOT_SECRET:?}, in combined_validation_context)"
            ),
        )),
        Some(V::ValidationContextCertificateProvider(_)) => {
            Err(FieldError::unsupported("validation_context_certificate_provider"))
        }
        Some(V::ValidationContextCertificateProviderInstance(_)) => {
            Err(FieldError::unsupported("validation_context_certificate_provider_instance"))
        }
        None => Err(FieldError::new(
            "validation_context_type",
            format!(
                "required: weft-proxy always verifies peers against its trust bundle (SDS secret {ROOT_SECRET:?})"
            ),
        )),
    }
}

/// rustls speaks TLS 1.2 and 1.3, and weft-proxy always offers both.
fn protocol_range(min: i32, max: i32) -> Result<(), FieldError> {
    let version = |field: &str, v: i32| {
        TlsProtocol::try_from(v).map_err(|_| FieldError::new(field, format!("unknown TLS version {v}")))
    };
    match version("tls_minimum_protocol_version", min)? {
        TlsProtocol::TlsAuto | TlsProtocol::TlSv12 => {}
        other => {
            return Err(FieldError::new(
                "tls_minimum_protocol_version",
                format!("{} is not supported by weft-proxy (TLSv1_2 to TLSv1_3 only)", other.as_str_name()),
            ));
        }
    }
    match version("tls_maximum_protocol_version", max)? {
        TlsProtocol::TlsAuto | TlsProtocol::TlSv13 => Ok(()),
        other => Err(FieldError::new(
            "tls_maximum_protocol_version",
            format!("{} is not supported by weft-proxy (TLSv1_2 to TLSv1_3 only)", other.as_str_name()),
        )),
    }
}

/// An SDS secret reference, which must name the one secret weft-proxy has
/// for that purpose. Its `sds_config` is Envoy's business.
fn secret(s: &SdsSecretConfig, expected: &str, what: &str) -> Result<(), FieldError> {
    if s.name != expected {
        return Err(FieldError::new(
            "name",
            format!("{:?}: weft-proxy resolves only the SDS secret {expected:?} (its own {what})", s.name),
        ));
    }
    Ok(())
}

fn validation(v: &CertificateValidationContext, notes: &mut Notes) -> Result<Vec<String>, FieldError> {
    if v.trusted_ca.is_some() {
        return Err(FieldError::new(
            "trusted_ca",
            format!(
                "inline trust is not supported: weft-proxy uses its own trust bundle (SDS secret {ROOT_SECRET:?})"
            ),
        ));
    }
    unsupported!(
        v,
        [
            ca_certificate_provider_instance,
            system_root_certs,
            watched_directory,
            verify_certificate_spki,
            verify_certificate_hash,
            match_subject_alt_names,
            require_signed_certificate_timestamp,
            crl,
            allow_expired_certificate,
            custom_validator_config,
            only_verify_leaf_cert_crl,
            max_verify_depth,
        ]
    );
    if v.trust_chain_verification != TrustChainVerification::VerifyTrustChain as i32 {
        return Err(FieldError::unsupported("trust_chain_verification"));
    }
    ignored!(notes, v, "CertificateValidationContext", [suppress_client_ca_list]);
    v.match_typed_subject_alt_names
        .iter()
        .enumerate()
        .map(|(i, m)| san(m).at_index("match_typed_subject_alt_names", i))
        .collect()
}

/// A URI SAN matcher naming one SPIFFE ID exactly.
fn san(m: &SubjectAltNameMatcher) -> Result<String, FieldError> {
    if m.san_type != SanType::Uri as i32 {
        let name =
            SanType::try_from(m.san_type).map_or_else(|_| m.san_type.to_string(), |t| t.as_str_name().into());
        return Err(FieldError::new("san_type", format!("{name} is not supported by weft-proxy (only URI)")));
    }
    unsupported!(m, [oid]);
    let matcher = m.matcher.as_ref().ok_or_else(|| FieldError::required("matcher"))?;
    if matcher.ignore_case {
        return Err(FieldError::unsupported("matcher.ignore_case"));
    }
    match &matcher.match_pattern {
        Some(MatchPattern::Exact(id)) => match id.parse::<SpiffeId>() {
            Ok(_) => Ok(id.clone()),
            Err(e) => Err(FieldError::new("matcher.exact", format!("{id:?} is not a SPIFFE ID: {e}"))),
        },
        _ => Err(FieldError::new("matcher", "only exact is supported by weft-proxy")),
    }
}
