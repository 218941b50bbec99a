//! Endpoint resolution: which pod addresses and ports serve a Service port.
//!
//! EndpointSlices win when any names the Service (as in a cluster, where the
//! endpoint controller writes them); otherwise endpoints are derived from the
//! Pods the Service selects, the way Kubernetes' own controller would.

use std::net::IpAddr;

use super::{Key, MeshState, Pod, Service, ServicePort, TargetPort};

/// One address that serves a Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEndpoint {
    /// The pod's address.
    pub ip: IpAddr,
    /// The target port on the pod (the Service port's `targetPort`, resolved).
    pub port: u16,
    /// The pod behind the address, when it is known to the state.
    pub pod: Option<Key>,
    /// Whether the pod runs a proxy (`weft.io/inject`), so it is dialled at its inbound port.
    pub meshed: bool,
    /// The pod's ServiceAccount, its mesh identity.
    pub service_account: Option<String>,
}

impl ResolvedEndpoint {
    fn new(ip: IpAddr, port: u16, pod: Option<&Pod>, state: &MeshState) -> Self {
        Self {
            ip,
            port,
            pod: pod.map(|p| p.key.clone()),
            meshed: pod.is_some_and(|p| state.is_meshed(p)),
            service_account: pod.map(|p| p.service_account.clone()),
        }
    }
}

/// The ready endpoints of one port of `svc`, sorted by (ip, port) and without duplicates.
///
/// When any EndpointSlice names the service (label `kubernetes.io/service-name`, same
/// namespace), endpoints come from slices only: the slice port named like the service port
/// (a lone unnamed slice port matches a single-port service), ready endpoints only, one entry
/// per address. Otherwise they are derived from the ready pods with an IP that the service
/// selects, with a named `targetPort` looked up among each pod's container ports (pods without
/// it are skipped).
pub fn resolve_endpoints(state: &MeshState, svc: &Service, port: &ServicePort) -> Vec<ResolvedEndpoint> {
    let mut slices = state.slices_of(&svc.key).peekable();

    let mut out = Vec::new();
    if slices.peek().is_some() {
        for slice in slices {
            let lone_unnamed = slice.ports.len() == 1 && slice.ports[0].name.is_none();
            let Some(slice_port) =
                slice.ports.iter().find(|p| p.name == port.name || (lone_unnamed && svc.ports.len() == 1))
            else {
                continue;
            };
            for endpoint in slice.endpoints.iter().filter(|e| e.ready) {
                let pod = endpoint
                    .pod
                    .as_ref()
                    .and_then(|name| state.pods.get(&Key::new(slice.key.namespace.clone(), name.clone())));
                for ip in &endpoint.addresses {
                    out.push(ResolvedEndpoint::new(*ip, slice_port.port, pod, state));
                }
            }
        }
    } else {
        for pod in state.selected_pods(svc).filter(|p| p.ready) {
            let Some(ip) = pod.ip else { continue };
            let target = match &port.target_port {
                TargetPort::Number(n) => Some(*n),
                TargetPort::Name(name) => {
                    pod.ports.iter().find(|cp| cp.name.as_deref() == Some(name.as_str())).map(|cp| cp.port)
                }
            };
            if let Some(target) = target {
                out.push(ResolvedEndpoint::new(ip, target, Some(pod), state));
            }
        }
    }

    // Stable sort keeps the first of duplicates in slice (key) order.
    out.sort_by_key(|e| (e.ip, e.port));
    out.dedup_by_key(|e| (e.ip, e.port));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{ContainerPort, EndpointSlice, Namespace, Protocol, SliceEndpoint, SlicePort};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn svc_port(name: Option<&str>, port: u16, target: TargetPort) -> ServicePort {
        ServicePort { name: name.map(str::to_string), port, target_port: target, protocol: Protocol::Http }
    }

    fn service(ports: Vec<ServicePort>) -> Service {
        Service {
            key: Key::new("shop", "web"),
            selector: labels(&[("app", "web")]),
            cluster_ip: None,
            ports,
            policy: Default::default(),
        }
    }

    fn pod(name: &str, addr: Option<&str>, ready: bool, ports: &[(&str, u16)]) -> Pod {
        Pod {
            key: Key::new("shop", name),
            labels: labels(&[("app", "web")]),
            ip: addr.map(ip),
            service_account: format!("{name}-sa"),
            ready,
            inject: None,
            ports: ports.iter().map(|(n, p)| ContainerPort { name: Some(n.to_string()), port: *p }).collect(),
        }
    }

    fn slice(
        name: &str,
        service: &str,
        ports: &[(Option<&str>, u16)],
        endpoints: &[(&[&str], bool, Option<&str>)],
    ) -> EndpointSlice {
        EndpointSlice {
            key: Key::new("shop", name),
            service: service.to_string(),
            ports: ports.iter().map(|(n, p)| SlicePort { name: n.map(str::to_string), port: *p }).collect(),
            endpoints: endpoints
                .iter()
                .map(|(addrs, ready, pod)| SliceEndpoint {
                    addresses: addrs.iter().map(|a| ip(a)).collect(),
                    ready: *ready,
                    pod: pod.map(str::to_string),
                })
                .collect(),
        }
    }

    fn state(pods: Vec<Pod>, slices: Vec<EndpointSlice>) -> MeshState {
        let mut state = MeshState::default();
        state.namespaces.insert("shop".into(), Namespace { name: "shop".into(), inject: Some(true) });
        for p in pods {
            state.pods.insert(p.key.clone(), p);
        }
        for s in slices {
            state.endpoint_slices.insert(s.key.clone(), s);
        }
        state
    }

    /// (ip, port, pod name): a compact expectation.
    type Row<'a> = (&'a str, u16, Option<&'a str>);

    /// (ip, port, pod name) for compact expectations.
    fn summary(eps: &[ResolvedEndpoint]) -> Vec<(String, u16, Option<String>)> {
        eps.iter().map(|e| (e.ip.to_string(), e.port, e.pod.as_ref().map(|k| k.name.clone()))).collect()
    }

    fn exp(rows: &[Row]) -> Vec<(String, u16, Option<String>)> {
        rows.iter().map(|(i, p, n)| (i.to_string(), *p, n.map(str::to_string))).collect()
    }

    #[test]
    fn pod_derived_endpoints_follow_the_endpoints_controller() {
        let named = svc_port(Some("http"), 80, TargetPort::Name("web".into()));
        let numbered = svc_port(Some("http"), 80, TargetPort::Number(8080));
        let cases: Vec<(&str, Vec<Pod>, ServicePort, Vec<Row>)> = vec![
            (
                "numeric targetPort, sorted by ip",
                vec![pod("b", Some("127.0.0.3"), true, &[]), pod("a", Some("127.0.0.2"), true, &[])],
                numbered.clone(),
                vec![("127.0.0.2", 8080, Some("a")), ("127.0.0.3", 8080, Some("b"))],
            ),
            (
                "unready pods and pods without an ip are left out",
                vec![
                    pod("a", Some("127.0.0.2"), false, &[]),
                    pod("b", None, true, &[]),
                    pod("c", Some("127.0.0.4"), true, &[]),
                ],
                numbered.clone(),
                vec![("127.0.0.4", 8080, Some("c"))],
            ),
            (
                "named targetPort resolves per pod; pods without the name are skipped",
                vec![
                    pod("a", Some("127.0.0.2"), true, &[("web", 9000)]),
                    pod("b", Some("127.0.0.3"), true, &[("web", 9001)]),
                    pod("c", Some("127.0.0.4"), true, &[("admin", 9002)]),
                ],
                named,
                vec![("127.0.0.2", 9000, Some("a")), ("127.0.0.3", 9001, Some("b"))],
            ),
            (
                "pods with the same address collapse into one endpoint",
                vec![pod("a", Some("127.0.0.2"), true, &[]), pod("b", Some("127.0.0.2"), true, &[])],
                numbered,
                vec![("127.0.0.2", 8080, Some("a"))],
            ),
        ];
        for (name, pods, port, want) in cases {
            let svc = service(vec![port.clone()]);
            let got = resolve_endpoints(&state(pods, vec![]), &svc, &port);
            assert_eq!(summary(&got), exp(&want), "{name}");
        }
    }

    #[test]
    fn pods_outside_the_selector_or_namespace_are_not_endpoints() {
        let port = svc_port(None, 80, TargetPort::Number(80));
        let mut other_ns = pod("a", Some("127.0.0.2"), true, &[]);
        other_ns.key.namespace = "other".into();
        let mut other_app = pod("b", Some("127.0.0.3"), true, &[]);
        other_app.labels = labels(&[("app", "db")]);
        let st = state(vec![other_ns, other_app], vec![]);
        assert!(resolve_endpoints(&st, &service(vec![port.clone()]), &port).is_empty());

        let mut no_selector = service(vec![port.clone()]);
        no_selector.selector.clear();
        let st = state(vec![pod("c", Some("127.0.0.4"), true, &[])], vec![]);
        assert!(resolve_endpoints(&st, &no_selector, &port).is_empty());
    }

    #[test]
    fn slice_endpoints_replace_pod_derived_ones() {
        type SlicePorts<'a> = &'a [(Option<&'a str>, u16)];
        let http = svc_port(Some("http"), 80, TargetPort::Number(8080));
        let admin = svc_port(Some("admin"), 81, TargetPort::Number(8081));
        let unnamed = svc_port(None, 80, TargetPort::Number(8080));
        let two: SlicePorts = &[(Some("http"), 7000), (Some("admin"), 7001)];
        let ready_a: &[(&[&str], bool, Option<&str>)] =
            &[(&["127.0.1.2", "127.0.1.1"], true, Some("a")), (&["127.0.1.9"], false, None)];
        type Case<'a> = (&'a str, Vec<ServicePort>, ServicePort, SlicePorts<'a>, Vec<Row<'a>>);
        let cases: Vec<Case> = vec![
            (
                "named port picks the slice port of the same name; unready left out",
                vec![http.clone(), admin.clone()],
                admin.clone(),
                two,
                vec![("127.0.1.1", 7001, Some("a")), ("127.0.1.2", 7001, Some("a"))],
            ),
            (
                "unnamed service port matches an unnamed slice port",
                vec![unnamed.clone()],
                unnamed.clone(),
                &[(None, 7000)],
                vec![("127.0.1.1", 7000, Some("a")), ("127.0.1.2", 7000, Some("a"))],
            ),
            (
                "a lone unnamed slice port matches a single named service port",
                vec![http.clone()],
                http.clone(),
                &[(None, 7000)],
                vec![("127.0.1.1", 7000, Some("a")), ("127.0.1.2", 7000, Some("a"))],
            ),
            (
                "a lone unnamed slice port does not match one of several service ports",
                vec![http.clone(), admin.clone()],
                http.clone(),
                &[(None, 7000)],
                vec![],
            ),
            (
                "no slice port of that name: no endpoints, even though pods match",
                vec![http.clone()],
                http.clone(),
                &[(Some("grpc"), 7000)],
                vec![],
            ),
        ];
        for (name, svc_ports, port, slice_ports, want) in cases {
            let st = state(
                vec![pod("a", Some("127.0.1.1"), true, &[])],
                vec![slice("web-1", "web", slice_ports, ready_a)],
            );
            let got = resolve_endpoints(&st, &service(svc_ports), &port);
            assert_eq!(summary(&got), exp(&want), "{name}");
        }
    }

    #[test]
    fn slice_endpoints_carry_pod_identity_only_for_known_pods() {
        let port = svc_port(None, 80, TargetPort::Number(80));
        let mut unmeshed = pod("b", Some("127.0.1.2"), true, &[]);
        unmeshed.inject = Some(false);
        let st = state(
            vec![pod("a", Some("127.0.1.1"), true, &[]), unmeshed],
            vec![slice(
                "web-1",
                "web",
                &[(None, 80)],
                &[
                    (&["127.0.1.1"], true, Some("a")),
                    (&["127.0.1.2"], true, Some("b")),
                    (&["127.0.1.3"], true, Some("gone")),
                    (&["127.0.1.4"], true, None),
                ],
            )],
        );
        let got = resolve_endpoints(&st, &service(vec![port.clone()]), &port);
        let rows: Vec<_> =
            got.iter().map(|e| (e.ip.to_string(), e.meshed, e.service_account.clone())).collect();
        assert_eq!(
            rows,
            vec![
                ("127.0.1.1".to_string(), true, Some("a-sa".to_string())),
                ("127.0.1.2".to_string(), false, Some("b-sa".to_string())),
                ("127.0.1.3".to_string(), false, None),
                ("127.0.1.4".to_string(), false, None),
            ]
        );
        assert_eq!(got[0].pod, Some(Key::new("shop", "a")));
        assert_eq!(got[2].pod, None);
    }

    #[test]
    fn slices_of_other_services_or_namespaces_are_ignored_and_duplicates_merge() {
        let port = svc_port(None, 80, TargetPort::Number(80));
        let mut foreign = slice("web-x", "web", &[(None, 80)], &[(&["127.0.9.9"], true, None)]);
        foreign.key.namespace = "other".into();
        let st = state(
            vec![pod("a", Some("127.0.0.5"), true, &[])],
            vec![
                slice("web-1", "web", &[(None, 80)], &[(&["127.0.1.1"], true, None)]),
                slice("web-2", "web", &[(None, 80)], &[(&["127.0.1.1", "127.0.1.0"], true, None)]),
                slice("db-1", "db", &[(None, 80)], &[(&["127.0.2.1"], true, None)]),
                foreign,
            ],
        );
        let got = resolve_endpoints(&st, &service(vec![port.clone()]), &port);
        assert_eq!(summary(&got), exp(&[("127.0.1.0", 80, None), ("127.0.1.1", 80, None)]));
    }

    #[test]
    fn only_slices_of_another_service_fall_back_to_pods() {
        let port = svc_port(None, 80, TargetPort::Number(80));
        let st = state(
            vec![pod("a", Some("127.0.0.5"), true, &[])],
            vec![slice("db-1", "db", &[(None, 80)], &[(&["127.0.2.1"], true, None)])],
        );
        let got = resolve_endpoints(&st, &service(vec![port.clone()]), &port);
        assert_eq!(summary(&got), exp(&[("127.0.0.5", 80, Some("a"))]));
        assert!(got[0].meshed);
    }
}
