//! The Kubernetes kinds: `v1` Namespace, Service and Pod, `discovery.k8s.io/v1` EndpointSlice.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::fields::{self, FieldError, FieldResult, Node};
use super::{Envelope, inject_annotation};
use crate::model::{
    ContainerPort, EndpointSlice, Namespace, Pod, Protocol, SERVICE_NAME_LABEL, Service, ServicePort,
    SliceEndpoint, SlicePort, TargetPort,
};

pub(super) fn namespace(env: &Envelope<'_>) -> FieldResult<Namespace> {
    Ok(Namespace { name: env.key.name.clone(), inject: inject_annotation(&env.metadata)? })
}

pub(super) fn service(env: &Envelope<'_>) -> FieldResult<Service> {
    let spec = env.root.req("spec")?;
    if let Some(node) = spec.get("type")?
        && node.str()? == "ExternalName"
    {
        return Err(node.error("ExternalName Services are not supported by weft"));
    }
    let cluster_ip = match spec.get("clusterIP")? {
        Some(node) if matches!(node.str()?, "None" | "") => None,
        Some(node) => Some(node.ip()?),
        None => None,
    };
    let ports_node = spec.req("ports")?;
    let port_nodes = ports_node.list()?;
    if port_nodes.is_empty() {
        return Err(ports_node.error("at least one port is required"));
    }
    let mut ports = Vec::new();
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    let mut numbers: BTreeMap<u16, String> = BTreeMap::new();
    for node in &port_nodes {
        let name = node.opt_str("name")?;
        let name_path = node.child_path("name");
        match name {
            Some(name) => {
                fields::dns_label(name).map_err(|reason| FieldError { field: name_path.clone(), reason })?;
                if let Some(first) = names.insert(name, node.path.clone()) {
                    return Err(FieldError {
                        field: name_path,
                        reason: format!("duplicate port name \"{name}\" (also {first})"),
                    });
                }
            }
            None if port_nodes.len() > 1 => {
                return Err(FieldError {
                    field: name_path,
                    reason: "is required when a Service has more than one port".into(),
                });
            }
            None => {}
        }
        if let Some(proto) = node.get("protocol")? {
            match proto.str()? {
                "TCP" => {}
                p @ ("UDP" | "SCTP") => {
                    return Err(proto.error(format!("{p} ports are not supported by weft (only TCP)")));
                }
                p => return Err(proto.error(format!("must be TCP, UDP or SCTP (got \"{p}\")"))),
            }
        }
        let port_node = node.req("port")?;
        let port = port_node.port()?;
        if let Some(first) = numbers.insert(port, node.path.clone()) {
            return Err(port_node.error(format!("duplicate port {port} (also {first})")));
        }
        let target_port = match node.get("targetPort")? {
            None => TargetPort::Number(port),
            Some(t) if t.value.is_number() => TargetPort::Number(t.port()?),
            Some(t) => TargetPort::Name(container_port_name(&t, t.str()?)?.to_string()),
        };
        let protocol = match node.opt_str("appProtocol")? {
            Some(app) => app_protocol(app),
            None => name.map_or(Protocol::Http, port_name_protocol),
        };
        ports.push(ServicePort { name: name.map(str::to_string), port, target_port, protocol });
    }
    let policy = super::policy::http_policy(&env.metadata)?;
    Ok(Service { key: env.key.clone(), selector: spec.string_map("selector")?, cluster_ip, ports, policy })
}

/// Checks a named port reference (an IANA service name, as Kubernetes requires).
fn container_port_name<'a>(node: &Node<'_>, name: &'a str) -> FieldResult<&'a str> {
    if name.parse::<u32>().is_ok() {
        return Err(
            node.error(format!("\"{name}\" is a string; write a port number without quotes, or a port name"))
        );
    }
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(name)
    } else {
        Err(node.error(format!(
            "must be a port number or a port name of at most 15 lowercase letters, digits \
             or '-' (got \"{name}\")"
        )))
    }
}

/// `appProtocol`: the HTTP family is routed per request; anything else, including
/// values weft does not know, is safest proxied as opaque TCP.
fn app_protocol(app: &str) -> Protocol {
    match app.to_ascii_lowercase().as_str() {
        "http" | "http2" | "h2c" | "grpc" | "grpc-web" | "kubernetes.io/h2c" | "kubernetes.io/ws" => {
            Protocol::Http
        }
        _ => Protocol::Tcp,
    }
}

/// The Istio-style port name convention (`tcp-db`, `http-web`, `grpc`); HTTP otherwise.
fn port_name_protocol(name: &str) -> Protocol {
    let prefix = name.split('-').next().unwrap_or(name);
    match prefix {
        "tcp" | "tls" | "https" | "mysql" | "redis" | "mongo" | "postgres" | "kafka" => Protocol::Tcp,
        _ => Protocol::Http,
    }
}

pub(super) fn pod(env: &Envelope<'_>) -> FieldResult<Pod> {
    let spec = env.root.get("spec")?;
    let mut service_account = "default";
    let mut ports = Vec::new();
    if let Some(spec) = &spec {
        for field in ["serviceAccount", "serviceAccountName"] {
            if let Some(node) = spec.get(field)? {
                service_account = node.str()?;
                fields::dns_subdomain(service_account).map_err(|r| node.error(r))?;
            }
        }
        for container in spec.opt_list("containers")? {
            for port in container.opt_list("ports")? {
                let number = port.req("containerPort")?.port()?;
                match port.opt_str("protocol")? {
                    None | Some("TCP") => {}
                    // A pod may well serve UDP (DNS); weft has no use for those ports.
                    Some("UDP" | "SCTP") => continue,
                    Some(p) => {
                        return Err(FieldError {
                            field: port.child_path("protocol"),
                            reason: format!("must be TCP, UDP or SCTP (got \"{p}\")"),
                        });
                    }
                }
                let name = port.opt_str("name")?.map(str::to_string);
                ports.push(ContainerPort { name, port: number });
            }
        }
    }
    let mut ip = None;
    let mut ready = env.metadata.get("deletionTimestamp")?.is_none();
    if let Some(status) = env.root.get("status")? {
        ip = match status.get("podIP")? {
            Some(node) => Some(node.ip()?),
            None => match status.opt_list("podIPs")?.first() {
                Some(first) => Some(first.req("ip")?.ip()?),
                None => None,
            },
        };
        if matches!(status.opt_str("phase")?, Some("Succeeded" | "Failed")) {
            ready = false;
        }
        for condition in status.opt_list("conditions")? {
            if condition.opt_str("type")? == Some("Ready") && condition.opt_str("status")? == Some("False") {
                ready = false;
            }
        }
    }
    Ok(Pod {
        key: env.key.clone(),
        labels: env.metadata.string_map("labels")?,
        ip,
        service_account: service_account.to_string(),
        ready,
        inject: inject_annotation(&env.metadata)?,
        ports,
    })
}

pub(super) fn endpoint_slice(env: &Envelope<'_>) -> FieldResult<EndpointSlice> {
    let labels = env.metadata.string_map("labels")?;
    let Some(service) = labels.get(SERVICE_NAME_LABEL) else {
        return Err(FieldError {
            field: format!("metadata.labels[{SERVICE_NAME_LABEL:?}]"),
            reason: "is required: it names the Service the slice belongs to".into(),
        });
    };
    let address_type = env.root.req("addressType")?;
    let want_v4 = match address_type.str()? {
        "IPv4" => true,
        "IPv6" => false,
        "FQDN" => return Err(address_type.error("FQDN EndpointSlices are not supported by weft")),
        other => return Err(address_type.error(format!("must be IPv4 or IPv6 (got \"{other}\")"))),
    };
    let mut ports = Vec::new();
    for port in env.root.opt_list("ports")? {
        let number = port.req("port")?.port()?;
        // UDP and SCTP ports cannot match a (TCP-only) weft Service port.
        if matches!(port.opt_str("protocol")?, Some("UDP" | "SCTP")) {
            continue;
        }
        ports.push(SlicePort { name: port.opt_str("name")?.map(str::to_string), port: number });
    }
    let mut endpoints = Vec::new();
    for endpoint in env.root.opt_list("endpoints")? {
        let addresses_node = endpoint.req("addresses")?;
        let mut addresses = Vec::new();
        for address in addresses_node.list()? {
            let ip = address.ip()?;
            if matches!(ip, IpAddr::V4(_)) != want_v4 {
                return Err(address.error(format!(
                    "{ip} does not match addressType {}",
                    if want_v4 { "IPv4" } else { "IPv6" }
                )));
            }
            addresses.push(ip);
        }
        if addresses.is_empty() {
            return Err(addresses_node.error("at least one address is required"));
        }
        let ready = match endpoint.get("conditions")? {
            Some(c) => c.get("ready")?.map(|r| r.bool()).transpose()?.unwrap_or(true),
            None => true,
        };
        let pod = match endpoint.get("targetRef")? {
            Some(target) if target.opt_str("kind")? == Some("Pod") => {
                Some(target.req_str("name")?.to_string())
            }
            _ => None,
        };
        endpoints.push(SliceEndpoint { addresses, ready, pod });
    }
    Ok(EndpointSlice { key: env.key.clone(), service: service.clone(), ports, endpoints })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::{Object, assert_refused, parse_one};
    use super::*;
    use crate::model::Key;

    fn svc(yaml_spec: &str) -> String {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec:\n{yaml_spec}")
    }

    fn parse_service(yaml: &str) -> Service {
        match parse_one(yaml) {
            Ok(Object::Service(s)) => s,
            other => panic!("not a service: {other:?}"),
        }
    }

    #[test]
    fn namespace_reads_the_inject_annotation() {
        let cases: &[(&str, Option<bool>)] = &[
            ("metadata: {name: shop}", None),
            ("metadata: {name: shop, annotations: {weft.io/inject: enabled}}", Some(true)),
            ("metadata: {name: shop, annotations: {weft.io/inject: disabled, other: x}}", Some(false)),
        ];
        for (meta, want) in cases {
            let got = parse_one(&format!("apiVersion: v1\nkind: Namespace\n{meta}")).unwrap();
            assert_eq!(got, Object::Namespace(Namespace { name: "shop".into(), inject: *want }), "{meta}");
            assert_eq!(got.key(), Key::new("", "shop"));
        }
        assert_refused(
            "bad inject value",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, annotations: {weft.io/inject: yes}}",
            "metadata.annotations[\"weft.io/inject\"]",
            "must be \"enabled\" or \"disabled\" (got \"yes\")",
        );
    }

    #[test]
    fn service_ports_protocols_and_cluster_ip() {
        let s = parse_service(&svc("  selector: {app: web}\n  clusterIP: 10.0.0.7\n  ports:\n\
             \x20 - {name: http, port: 80, targetPort: 8080}\n\
             \x20 - {name: tcp-db, port: 5432}\n\
             \x20 - {name: grpc-api, port: 9090, targetPort: grpc}\n\
             \x20 - {name: web, port: 81, appProtocol: kubernetes.io/h2c}\n\
             \x20 - {name: admin, port: 82, appProtocol: mysql}\n\
             \x20 - {name: https, port: 443}\n"));
        assert_eq!(s.key, Key::new("shop", "web"));
        assert_eq!(s.selector.get("app").map(String::as_str), Some("web"));
        assert_eq!(s.cluster_ip, Some("10.0.0.7".parse().unwrap()));
        let got: Vec<(Option<&str>, u16, TargetPort, Protocol)> =
            s.ports.iter().map(|p| (p.name.as_deref(), p.port, p.target_port.clone(), p.protocol)).collect();
        assert_eq!(
            got,
            vec![
                (Some("http"), 80, TargetPort::Number(8080), Protocol::Http),
                (Some("tcp-db"), 5432, TargetPort::Number(5432), Protocol::Tcp),
                (Some("grpc-api"), 9090, TargetPort::Name("grpc".into()), Protocol::Http),
                (Some("web"), 81, TargetPort::Number(81), Protocol::Http),
                (Some("admin"), 82, TargetPort::Number(82), Protocol::Tcp),
                (Some("https"), 443, TargetPort::Number(443), Protocol::Tcp),
            ]
        );
    }

    #[test]
    fn service_protocol_rules() {
        let cases: &[(&str, Protocol)] = &[
            ("{port: 80}", Protocol::Http),
            ("{name: tcp, port: 80}", Protocol::Tcp),
            ("{name: redis-cache, port: 80}", Protocol::Tcp),
            ("{name: http2, port: 80}", Protocol::Http),
            ("{name: tcp-x, port: 80, appProtocol: grpc}", Protocol::Http),
            ("{name: http, port: 80, appProtocol: something-new}", Protocol::Tcp),
            ("{port: 80, appProtocol: HTTP}", Protocol::Http),
        ];
        for (port, want) in cases {
            let s = parse_service(&svc(&format!("  ports: [{port}]\n")));
            assert_eq!(s.ports[0].protocol, *want, "{port}");
        }
    }

    #[test]
    fn headless_service_has_no_cluster_ip() {
        for ip in ["clusterIP: None", "clusterIP: ''", "type: ClusterIP"] {
            let s = parse_service(&svc(&format!("  {ip}\n  ports: [{{port: 80}}]\n")));
            assert_eq!(s.cluster_ip, None, "{ip}");
            assert!(s.selector.is_empty());
        }
    }

    #[test]
    fn service_errors() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("no spec", "", "spec", "is required"),
            ("no ports", "  selector: {app: web}\n", "spec.ports", "is required"),
            ("empty ports", "  ports: []\n", "spec.ports", "at least one port"),
            ("port zero", "  ports: [{port: 0}]\n", "spec.ports[0].port", "between 1 and 65535 (got 0)"),
            ("port too big", "  ports: [{port: 70000}]\n", "spec.ports[0].port", "between 1 and 65535"),
            (
                "port as string",
                "  ports: [{port: '80'}]\n",
                "spec.ports[0].port",
                "must be a number, not a string",
            ),
            (
                "udp",
                "  ports: [{port: 53, protocol: UDP}]\n",
                "spec.ports[0].protocol",
                "UDP ports are not supported",
            ),
            (
                "sctp",
                "  ports: [{port: 53, protocol: SCTP}]\n",
                "spec.ports[0].protocol",
                "SCTP ports are not supported",
            ),
            (
                "unnamed of two",
                "  ports: [{name: a, port: 80}, {port: 81}]\n",
                "spec.ports[1].name",
                "is required when a Service has more than one port",
            ),
            (
                "duplicate names",
                "  ports: [{name: a, port: 80}, {name: a, port: 81}]\n",
                "spec.ports[1].name",
                "duplicate port name \"a\" (also spec.ports[0])",
            ),
            (
                "duplicate numbers",
                "  ports: [{name: a, port: 80}, {name: b, port: 80}]\n",
                "spec.ports[1].port",
                "duplicate port 80",
            ),
            ("bad port name", "  ports: [{name: HTTP, port: 80}]\n", "spec.ports[0].name", "DNS label"),
            (
                "quoted target",
                "  ports: [{port: 80, targetPort: '8080'}]\n",
                "spec.ports[0].targetPort",
                "write a port number without quotes",
            ),
            (
                "bad target name",
                "  ports: [{port: 80, targetPort: Web_Port}]\n",
                "spec.ports[0].targetPort",
                "port name of at most 15",
            ),
            (
                "target zero",
                "  ports: [{port: 80, targetPort: 0}]\n",
                "spec.ports[0].targetPort",
                "between 1 and 65535",
            ),
            (
                "bad cluster ip",
                "  clusterIP: 10.0.0\n  ports: [{port: 80}]\n",
                "spec.clusterIP",
                "must be an IP address",
            ),
            (
                "external name",
                "  type: ExternalName\n  externalName: example.com\n",
                "spec.type",
                "ExternalName Services are not supported",
            ),
            (
                "numeric label",
                "  selector: {version: 2}\n  ports: [{port: 80}]\n",
                "spec.selector[\"version\"]",
                "must be a string (quote it: \"2\")",
            ),
        ];
        for (name, spec, field, reason) in cases {
            assert_refused(name, &svc(spec), field, reason);
        }
    }

    fn pod_yaml(body: &str) -> String {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: shop\n{body}")
    }

    fn parse_pod(yaml: &str) -> Pod {
        match parse_one(yaml) {
            Ok(Object::Pod(p)) => p,
            other => panic!("not a pod: {other:?}"),
        }
    }

    #[test]
    fn pod_fields() {
        let p = parse_pod(&pod_yaml(
            "  labels: {app: web}\n  annotations: {weft.io/inject: enabled}\n\
             spec:\n  serviceAccountName: web\n  containers:\n\
             \x20 - name: app\n    ports: [{name: http, containerPort: 8080}, {containerPort: 9090}, {name: dns, containerPort: 53, protocol: UDP}]\n\
             \x20 - name: side\n    ports: [{name: admin, containerPort: 9901, protocol: TCP}]\n\
             status:\n  podIP: 127.0.0.10\n  conditions: [{type: Ready, status: 'True'}]\n",
        ));
        assert_eq!(p.key, Key::new("shop", "web-1"));
        assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(p.ip, Some("127.0.0.10".parse().unwrap()));
        assert_eq!(p.service_account, "web");
        assert!(p.ready);
        assert_eq!(p.inject, Some(true));
        assert_eq!(
            p.ports,
            vec![
                ContainerPort { name: Some("http".into()), port: 8080 },
                ContainerPort { name: None, port: 9090 },
                ContainerPort { name: Some("admin".into()), port: 9901 },
            ]
        );
    }

    #[test]
    fn pod_defaults_and_readiness() {
        let cases: &[(&str, &str, bool, Option<&str>)] = &[
            ("minimal pod", "", true, None),
            (
                "not ready",
                "status: {podIP: 127.0.0.2, conditions: [{type: Ready, status: 'False'}]}\n",
                false,
                Some("127.0.0.2"),
            ),
            (
                "other condition false",
                "status: {conditions: [{type: PodScheduled, status: 'False'}]}\n",
                true,
                None,
            ),
            (
                "unknown readiness counts as ready",
                "status: {conditions: [{type: Ready, status: Unknown}]}\n",
                true,
                None,
            ),
            (
                "finished pods are not ready",
                "status: {phase: Succeeded, podIP: 127.0.0.3}\n",
                false,
                Some("127.0.0.3"),
            ),
            ("podIPs when podIP is absent", "status: {podIPs: [{ip: 'fd00::1'}]}\n", true, Some("fd00::1")),
        ];
        for (name, body, ready, ip) in cases {
            let p = parse_pod(&pod_yaml(body));
            assert_eq!(p.ready, *ready, "{name}");
            assert_eq!(p.ip, ip.map(|i| i.parse().unwrap()), "{name}");
            assert_eq!(p.service_account, "default", "{name}");
            assert_eq!(p.inject, None, "{name}");
        }
        let terminating = parse_pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, deletionTimestamp: '2024-01-01T00:00:00Z'}\n",
        );
        assert!(!terminating.ready);
        assert_eq!(terminating.key, Key::new("default", "a"));
    }

    #[test]
    fn pod_errors() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "bad ip",
                "status: {podIP: localhost}\n",
                "status.podIP",
                "must be an IP address (got \"localhost\")",
            ),
            (
                "bad inject",
                "  annotations: {weft.io/inject: 'true'}\n",
                "metadata.annotations[\"weft.io/inject\"]",
                "must be \"enabled\" or \"disabled\"",
            ),
            (
                "container port missing",
                "spec: {containers: [{name: a, ports: [{name: http}]}]}\n",
                "spec.containers[0].ports[0].containerPort",
                "is required",
            ),
            (
                "container port range",
                "spec: {containers: [{name: a, ports: [{containerPort: 0}]}]}\n",
                "spec.containers[0].ports[0].containerPort",
                "between 1 and 65535",
            ),
            (
                "bad service account",
                "spec: {serviceAccountName: Web}\n",
                "spec.serviceAccountName",
                "DNS subdomain",
            ),
            ("numeric label", "  labels: {version: 1}\n", "metadata.labels[\"version\"]", "must be a string"),
            (
                "containers not a list",
                "spec: {containers: {name: a}}\n",
                "spec.containers",
                "must be a list, not a mapping",
            ),
        ];
        for (name, body, field, reason) in cases {
            assert_refused(name, &pod_yaml(body), field, reason);
        }
    }

    fn slice_yaml(body: &str) -> String {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-abc\n  namespace: shop\n\
             \x20 labels: {{kubernetes.io/service-name: web}}\n{body}"
        )
    }

    #[test]
    fn endpoint_slice_fields() {
        let got = parse_one(&slice_yaml(
            "addressType: IPv4\nports: [{name: http, port: 8080}, {port: 9090}, {name: dns, port: 53, protocol: UDP}]\n\
             endpoints:\n\
             - addresses: [127.0.0.2, 127.0.0.3]\n  targetRef: {kind: Pod, name: web-1}\n\
             - addresses: [127.0.0.4]\n  conditions: {ready: false}\n\
             - addresses: [127.0.0.5]\n  conditions: {serving: true}\n  targetRef: {kind: Node, name: n1}\n",
        ))
        .unwrap();
        let want = EndpointSlice {
            key: Key::new("shop", "web-abc"),
            service: "web".into(),
            ports: vec![
                SlicePort { name: Some("http".into()), port: 8080 },
                SlicePort { name: None, port: 9090 },
            ],
            endpoints: vec![
                SliceEndpoint {
                    addresses: vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()],
                    ready: true,
                    pod: Some("web-1".into()),
                },
                SliceEndpoint { addresses: vec!["127.0.0.4".parse().unwrap()], ready: false, pod: None },
                SliceEndpoint { addresses: vec!["127.0.0.5".parse().unwrap()], ready: true, pod: None },
            ],
        };
        assert_eq!(got, Object::EndpointSlice(want));
        let v6 = parse_one(&slice_yaml("addressType: IPv6\nendpoints: [{addresses: ['::1']}]\n")).unwrap();
        assert!(matches!(v6, Object::EndpointSlice(s) if s.endpoints[0].addresses[0].is_ipv6()));
    }

    #[test]
    fn endpoint_slice_errors() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("fqdn", "addressType: FQDN\n", "addressType", "FQDN EndpointSlices are not supported"),
            ("no address type", "endpoints: []\n", "addressType", "is required"),
            ("odd address type", "addressType: ipv4\n", "addressType", "must be IPv4 or IPv6"),
            (
                "bad address",
                "addressType: IPv4\nendpoints: [{addresses: [web]}]\n",
                "endpoints[0].addresses[0]",
                "must be an IP address",
            ),
            (
                "family mismatch",
                "addressType: IPv4\nendpoints: [{addresses: ['::1']}]\n",
                "endpoints[0].addresses[0]",
                "does not match addressType IPv4",
            ),
            (
                "no addresses",
                "addressType: IPv4\nendpoints: [{addresses: []}]\n",
                "endpoints[0].addresses",
                "at least one address",
            ),
            (
                "ready not bool",
                "addressType: IPv4\nendpoints: [{addresses: [127.0.0.1], conditions: {ready: 'yes'}}]\n",
                "endpoints[0].conditions.ready",
                "must be true or false",
            ),
            ("port missing", "addressType: IPv4\nports: [{name: http}]\n", "ports[0].port", "is required"),
        ];
        for (name, body, field, reason) in cases {
            assert_refused(name, &slice_yaml(body), field, reason);
        }
        assert_refused(
            "no service label",
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\n",
            "metadata.labels[\"kubernetes.io/service-name\"]",
            "is required",
        );
    }
}
