//! The mutation itself, on a pod or pod template as JSON: pure, shared by the webhook and
//! `weft inject`.
//!
//! It works on the raw object (not a typed round trip), so fields this version of
//! k8s-openapi does not know are kept exactly as they were.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value};

use super::{
    IDENTITY_DIR, IDENTITY_VOLUME, INIT_CONTAINER, InjectConfig, InjectError, PROXY_CONTAINER,
    PROXY_VERSION_ANNOTATION, SKIP_INBOUND_ANNOTATION, SKIP_OUTBOUND_ANNOTATION, TOKEN_AUDIENCE,
    TRUST_BUNDLE_CONFIG_MAP, TRUST_BUNDLE_KEY, XTABLES_VOLUME,
};
use crate::model::INJECT_ANNOTATION;

/// Whether a pod is to be injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Inject; says which annotation asked for it.
    Inject(&'static str),
    /// Leave the pod alone, for this reason (not an error: nothing asked for a proxy, or the pod
    /// opted out).
    Skip(String),
}

/// What injecting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pod now has a proxy; the warnings are worth telling the user (not errors).
    Injected {
        /// E.g. "a Job with a regular sidecar container never completes".
        warnings: Vec<String>,
    },
    /// The pod already had weft's proxy: nothing changed.
    AlreadyInjected,
    /// Not injected, for this reason.
    Skipped(String),
}

/// Reads `weft.io/inject` from labels and annotations: `Some(true)` for `enabled`,
/// `Some(false)` for `disabled`, an error for anything else.
fn inject_setting(meta: &Value, whose: &str) -> Result<Option<bool>, InjectError> {
    let mut found = None;
    for field in ["annotations", "labels"] {
        let Some(value) = meta.get(field).and_then(|m| m.get(INJECT_ANNOTATION)) else { continue };
        let setting = match value.as_str() {
            Some("enabled") => true,
            Some("disabled") => false,
            _ => {
                return Err(InjectError::InvalidAnnotation {
                    annotation: INJECT_ANNOTATION,
                    value: value.to_string(),
                    reason: format!("on the {whose}, it must be `enabled` or `disabled`"),
                });
            }
        };
        // A `disabled` anywhere wins.
        found = Some(found.unwrap_or(true) && setting);
    }
    Ok(found)
}

/// Decides from the pod's and its namespace's `weft.io/inject`: `disabled` on the pod wins,
/// then `enabled` on the pod, then the namespace. `namespace` is `None` when it is unknown
/// (`weft inject` on a file): the pod is then injected unless it opts out, since the user
/// asked for it.
pub fn decide(pod_metadata: &Value, namespace: Option<&ObjectMeta>) -> Result<Decision, InjectError> {
    match inject_setting(pod_metadata, "pod")? {
        Some(false) => return Ok(Decision::Skip(format!("the pod has {INJECT_ANNOTATION}: disabled"))),
        Some(true) => return Ok(Decision::Inject("the pod's weft.io/inject: enabled")),
        None => {}
    }
    let Some(namespace) = namespace else {
        return Ok(Decision::Inject("weft inject"));
    };
    let ns_meta = serde_json::json!({
        "annotations": namespace.annotations.clone().unwrap_or_default(),
        "labels": namespace.labels.clone().unwrap_or_default(),
    });
    let name = namespace.name.as_deref().unwrap_or_default();
    match inject_setting(&ns_meta, &format!("namespace {name}"))? {
        Some(true) => Ok(Decision::Inject("the namespace's weft.io/inject: enabled")),
        Some(false) => Ok(Decision::Skip(format!("namespace {name} has {INJECT_ANNOTATION}: disabled"))),
        None => Ok(Decision::Skip(format!(
            "neither the pod nor namespace {name} has {INJECT_ANNOTATION}: enabled"
        ))),
    }
}

/// Parses a skip-ports annotation (`25,587,6000-6010`) into the form `weft-proxy init` takes.
fn skip_ports(meta: &Value, annotation: &'static str) -> Result<Option<String>, InjectError> {
    let Some(value) = meta.get("annotations").and_then(|a| a.get(annotation)) else { return Ok(None) };
    let bad = |reason: &str| InjectError::InvalidAnnotation {
        annotation,
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let text = value.as_str().ok_or_else(|| bad("must be a string such as \"25,6000-6010\""))?;
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p != 0);
        let ok = match part.split_once('-') {
            Some((a, b)) => matches!((port(a), port(b)), (Some(a), Some(b)) if a <= b),
            None => port(part).is_some(),
        };
        if !ok {
            return Err(bad(&format!("{part:?} is not a port (1-65535) or a range such as 6000-6010")));
        }
        out.push(part.to_string());
    }
    Ok((!out.is_empty()).then(|| out.join(",")))
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.to_string(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value.into()), ..Default::default() }
}

fn http_probe(path: &str, port: u16, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), Quantity(memory_limit.to_string()))])),
        ..Default::default()
    }
}

/// The first port of the first app container: sent to the control plane as APP_PORT.
fn app_port(spec: &Value) -> Option<i64> {
    spec.get("containers")?.get(0)?.get("ports")?.get(0)?.get("containerPort")?.as_i64()
}

/// The proxy container.
fn proxy_container(cfg: &InjectConfig, native: bool, app_port: Option<i64>) -> Container {
    let mut env_vars = vec![
        env("WEFT_XDS_ADDR", cfg.control_addr.clone()),
        field_env("WEFT_POD_IP", "status.podIP"),
        field_env("WEFT_POD_NAME", "metadata.name"),
        field_env("WEFT_NAMESPACE", "metadata.namespace"),
        field_env("WEFT_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        // Kubernetes expands $(VAR) from the variables above.
        env("WEFT_NODE_ID", "$(WEFT_POD_NAME).$(WEFT_NAMESPACE)"),
        env("WEFT_TRANSPARENT", "true"),
        env("WEFT_INBOUND_PORT", cfg.inbound_port.to_string()),
        env("WEFT_OUTBOUND_PORT", cfg.outbound_port.to_string()),
        // On every address, so `kubectl port-forward` (which dials localhost) reaches it too.
        env("WEFT_ADMIN_ADDR", format!("0.0.0.0:{}", cfg.admin_port)),
        env("WEFT_TRUST_DOMAIN", cfg.trust_domain.clone()),
        env("WEFT_CA_FILE", format!("{IDENTITY_DIR}/{TRUST_BUNDLE_KEY}")),
        env("WEFT_TOKEN_FILE", format!("{IDENTITY_DIR}/token")),
        env("WEFT_LOG", cfg.log.clone()),
    ];
    if let Some(port) = app_port {
        env_vars.push(env("WEFT_APP_PORT", port.to_string()));
    }
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.to_string()),
        container_port: i32::from(port),
        ..Default::default()
    };
    Container {
        name: PROXY_CONTAINER.to_string(),
        image: Some(cfg.proxy_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        // Named, so one image can hold both binaries whatever its entrypoint.
        command: Some(vec!["weft-proxy".to_string()]),
        // A native sidecar: an init container that keeps running. Kubernetes starts the rest of
        // the pod once its startup probe passes, and does not wait for it to end a Job.
        restart_policy: native.then(|| "Always".to_string()),
        env: Some(env_vars),
        ports: Some(vec![port("weft-inbound", cfg.inbound_port), port("weft-admin", cfg.admin_port)]),
        startup_probe: native.then(|| http_probe("/ready", cfg.admin_port, 1, 120)),
        readiness_probe: Some(http_probe("/ready", cfg.admin_port, 5, 3)),
        liveness_probe: Some(http_probe("/live", cfg.admin_port, 10, 6)),
        resources: Some(resources("10m", "32Mi", "256Mi")),
        security_context: Some(SecurityContext {
            run_as_user: Some(cfg.proxy_uid),
            run_as_group: Some(cfg.proxy_uid),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_string()]), ..Default::default() }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: IDENTITY_VOLUME.to_string(),
            mount_path: IDENTITY_DIR.to_string(),
            read_only: Some(true),
            ..Default::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    }
}

/// The `weft-proxy init` container: sets up the redirect and exits.
fn init_container(
    cfg: &InjectConfig,
    skip_inbound: Option<String>,
    skip_outbound: Option<String>,
) -> Container {
    let mut args = vec![
        "init".to_string(),
        "--inbound-port".to_string(),
        cfg.inbound_port.to_string(),
        "--outbound-port".to_string(),
        cfg.outbound_port.to_string(),
        "--proxy-admin-port".to_string(),
        cfg.admin_port.to_string(),
        "--proxy-uid".to_string(),
        cfg.proxy_uid.to_string(),
    ];
    if let Some(ports) = skip_inbound {
        args.extend(["--skip-inbound-ports".to_string(), ports]);
    }
    if let Some(ports) = skip_outbound {
        args.extend(["--skip-outbound-ports".to_string(), ports]);
    }
    Container {
        name: INIT_CONTAINER.to_string(),
        image: Some(cfg.proxy_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: Some(vec!["weft-proxy".to_string()]),
        args: Some(args),
        resources: Some(resources("10m", "10Mi", "64Mi")),
        security_context: Some(SecurityContext {
            // iptables needs root in the pod's network namespace, and nothing more.
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".to_string(), "NET_RAW".to_string()]),
                drop: Some(vec!["ALL".to_string()]),
            }),
            ..Default::default()
        }),
        // iptables takes its lock under /run, which a read-only root would refuse.
        volume_mounts: Some(vec![VolumeMount {
            name: XTABLES_VOLUME.to_string(),
            mount_path: "/run".to_string(),
            ..Default::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    }
}

/// The volumes the injected containers mount: the projected ServiceAccount token (audience
/// `weft`, which the control plane checks with a TokenReview) with the trust bundle beside it,
/// and the init step's scratch `/run`.
fn volumes() -> [Volume; 2] {
    let identity = Volume {
        name: IDENTITY_VOLUME.to_string(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(TOKEN_AUDIENCE.to_string()),
                        expiration_seconds: Some(3600),
                        path: "token".to_string(),
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: TRUST_BUNDLE_CONFIG_MAP.to_string(),
                        items: Some(vec![KeyToPath {
                            key: TRUST_BUNDLE_KEY.to_string(),
                            path: TRUST_BUNDLE_KEY.to_string(),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let xtables = Volume {
        name: XTABLES_VOLUME.to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    [identity, xtables]
}

fn to_json<T: serde::Serialize>(t: &T) -> Result<Value, InjectError> {
    serde_json::to_value(t).map_err(|e| InjectError::Malformed(format!("serialising a container: {e}")))
}

/// The list at `spec[field]`, created empty if absent; an error if it is not a list.
fn list<'a>(spec: &'a mut Map<String, Value>, field: &str) -> Result<&'a mut Vec<Value>, InjectError> {
    spec.entry(field.to_string())
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| InjectError::Malformed(format!("spec.{field} is not a list")))
}

fn has_container(spec: &Value, name: &str) -> bool {
    ["containers", "initContainers"].iter().any(|field| {
        spec.get(field)
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c.get("name").and_then(Value::as_str) == Some(name)))
    })
}

/// Injects the proxy into `template` (`{metadata, spec}` of a pod or pod template) if
/// [`decide`] says so. `is_job`: the pod belongs to a Job, which a regular (not native) sidecar
/// would keep from completing; that earns a warning.
pub fn inject(
    template: &mut Value,
    namespace: Option<&ObjectMeta>,
    cfg: &InjectConfig,
    is_job: bool,
) -> Result<Outcome, InjectError> {
    let empty = Value::Object(Map::new());
    let metadata = template.get("metadata").unwrap_or(&empty);
    let decision = decide(metadata, namespace)?;
    let Some(spec) = template.get("spec") else {
        return Err(InjectError::Malformed("the pod has no spec".into()));
    };
    if has_container(spec, PROXY_CONTAINER) {
        return Ok(Outcome::AlreadyInjected);
    }
    if let Decision::Skip(reason) = decision {
        return Ok(Outcome::Skipped(reason));
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Err(InjectError::HostNetwork);
    }
    if has_container(spec, INIT_CONTAINER) {
        return Err(InjectError::Malformed(format!("a container is already named {INIT_CONTAINER}")));
    }
    let skip_inbound = skip_ports(metadata, SKIP_INBOUND_ANNOTATION)?;
    let skip_outbound = skip_ports(metadata, SKIP_OUTBOUND_ANNOTATION)?;
    let port = app_port(spec);
    let first_app = spec
        .get("containers")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);

    let native = cfg.native_sidecar;
    let mut warnings = Vec::new();
    if is_job && !native {
        warnings.push(
            "this cluster has no native sidecars (Kubernetes < 1.29): the proxy runs as a regular \
             container and the Job will not complete while it runs"
                .to_string(),
        );
    }
    let init = to_json(&init_container(cfg, skip_inbound, skip_outbound))?;
    let proxy = to_json(&proxy_container(cfg, native, port))?;
    let new_volumes = volumes().iter().map(to_json).collect::<Result<Vec<_>, _>>()?;

    let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) else {
        return Err(InjectError::Malformed("spec is not an object".into()));
    };
    if native {
        // The init step first (the redirect must exist before anything talks), then the proxy,
        // which Kubernetes keeps running; the pod's own init containers run behind it.
        let inits = list(spec, "initContainers")?;
        inits.insert(0, proxy);
        inits.insert(0, init);
    } else {
        // Without native sidecars, other init containers run before the proxy exists: their
        // outbound connections would be redirected to nobody, so they must skip ports.
        if spec.get("initContainers").and_then(Value::as_array).is_some_and(|i| !i.is_empty()) {
            warnings.push(
                "the pod's init containers run before the proxy starts: their outbound TCP is \
                 redirected to it and fails unless its ports are in weft.io/skip-outbound-ports"
                    .to_string(),
            );
        }
        list(spec, "initContainers")?.insert(0, init);
        list(spec, "containers")?.insert(0, proxy);
    }
    list(spec, "volumes")?.extend(new_volumes);

    let metadata = template
        .as_object_mut()
        .ok_or_else(|| InjectError::Malformed("the pod is not an object".into()))?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| InjectError::Malformed("metadata is not an object".into()))?;
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| InjectError::Malformed("metadata.annotations is not an object".into()))?;
    annotations.insert(PROXY_VERSION_ANNOTATION.to_string(), Value::String(env!("CARGO_PKG_VERSION").into()));
    // `kubectl logs` and `exec` keep going to the app, not to the proxy placed before it.
    if let Some(app) = first_app {
        annotations.entry("kubectl.kubernetes.io/default-container").or_insert(Value::String(app));
    }
    Ok(Outcome::Injected { warnings })
}
