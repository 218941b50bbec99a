//! Distributed tracing end to end: a control plane with `--trace-collector` pointing at an
//! OTLP receiver on loopback, a client workload (`client`, pod .1) calling `web` (pod .3)
//! through two proxies over mTLS, with every pairing of weft-proxy and stock Envoy.
//!
//! - `<client>_to_<server>::one_trace_crosses_both_hops`: one request is one trace; the
//!   server-side hop's SERVER span is a child of the client-side hop's CLIENT span, which is
//!   a root (no trace headers) or the child of the `traceparent` the app sent; the app
//!   behind the server proxy sees a `traceparent` whose parent is the server-side span.
//! - `sampling_zero_...`: nothing is exported, yet the trace headers still go along.
//! - `b3_...`: a B3 request keeps its trace id across both hops.
//! - `an_unconfigured_mesh_...`: no tracing config reaches any proxy; headers pass untouched.
//! - `the_control_plane_...`: the control plane's own span per push per proxy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use weft_control::bootstrap::AdsMode;
use weft_control::server::RunningControl;
use weft_control::translate::{Sampling, TraceOptions};
use weft_integration::otlp::{OtlpReceiver, ReceivedSpan, traced_control};
use weft_integration::{Backend, LocalMesh, Proxy, ProxyConfig, ProxyKind, eventually};

const NS: &str = "shop";
const WEB: &str = "web:8080";
const MODE: AdsMode = AdsMode::Delta;

/// A W3C trace context the "app" starts with.
const APP_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const APP_SPAN: &str = "b7ad6b7169203331";

/// The identity scenario with a traced control plane, `client`'s proxy and `web` behind its own.
struct Traced {
    receiver: OtlpReceiver,
    mesh: LocalMesh,
    _control: RunningControl,
    web: Backend,
    _client_proxy: Proxy,
    _web_proxy: Proxy,
}

impl Traced {
    async fn start(client: ProxyKind, server: ProxyKind, sampling_percent: f64) -> anyhow::Result<Traced> {
        let mesh = LocalMesh::manifests("identity").await?;
        let receiver = OtlpReceiver::start(mesh.subnet.ip(252)).await?;
        let sampling = Sampling::from_percent(sampling_percent).map_err(anyhow::Error::msg)?;
        let control = traced_control(&mesh, TraceOptions { collector: receiver.addr(), sampling }).await?;
        let web = mesh.backend(3, 8080, "web").await?;
        let config = |node: &str, sa: &str, host: u8| {
            ProxyConfig::new(node, NS, sa, mesh.pod_ip(host), control.xds_addr, MODE)
                .with_identity(mesh.identity())
        };
        let web_proxy = Proxy::start(server, &config("web", "web", 3)).await?;
        let client_proxy = Proxy::start(client, &config("client", "client", 1)).await?;
        let traced = Traced {
            receiver,
            mesh,
            _control: control,
            web,
            _client_proxy: client_proxy,
            _web_proxy: web_proxy,
        };
        traced.wait_until_web_answers().await?;
        Ok(traced)
    }

    fn outbound(&self) -> SocketAddr {
        self.mesh.subnet.addr(1, 4140)
    }

    async fn wait_until_web_answers(&self) -> anyhow::Result<()> {
        eventually("the client to reach web through both proxies", || async {
            let (status, body) = get(self.outbound(), &[]).await?;
            anyhow::ensure!(status == 200 && body == "web", "{status} {body}");
            anyhow::Ok(true)
        })
        .await
    }

    /// Sends `GET /` with `headers` to web through both proxies; returns the headers web saw.
    async fn call(&self, headers: &[(&str, &str)]) -> anyhow::Result<http::HeaderMap> {
        let before = self.web.requests();
        let (status, body) = get(self.outbound(), headers).await?;
        anyhow::ensure!(status == 200 && body == "web", "{status} {body}");
        anyhow::ensure!(self.web.requests() == before + 1, "web saw no new request");
        Ok(self.web.last_request().context_free()?.headers)
    }

    /// The client-side and server-side spans of `trace_id`, once both have arrived.
    async fn hops(&self, trace_id: &str) -> anyhow::Result<(ReceivedSpan, ReceivedSpan)> {
        self.receiver
            .wait_for(&format!("both hops of trace {trace_id}"), |spans| {
                let of = |service: &str| {
                    spans.iter().find(|s| s.trace_id == trace_id && s.service == service).cloned()
                };
                Some((of("client")?, of("web")?))
            })
            .await
    }
}

trait ContextFree<T> {
    fn context_free(self) -> anyhow::Result<T>;
}

impl<T> ContextFree<T> for Option<T> {
    fn context_free(self) -> anyhow::Result<T> {
        self.ok_or_else(|| anyhow::anyhow!("web has seen no request"))
    }
}

/// `GET /` with `Host: web:8080` and `headers`, over HTTP/1.1 to the proxy at `proxy`.
async fn get(proxy: SocketAddr, headers: &[(&str, &str)]) -> anyhow::Result<(u16, String)> {
    let mut req = http::Request::builder().uri("/hello").header("host", WEB);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::<Bytes>::new())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(TcpStream::connect(proxy).await?)).await?;
    tokio::spawn(conn);
    let exchange = async {
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer in 10 s"))?
}

/// `traceparent`'s trace id, parent id and sampled flag.
fn traceparent(headers: &http::HeaderMap) -> (String, String, bool) {
    let v = headers.get("traceparent").expect("the app got a traceparent").to_str().unwrap().to_owned();
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    assert_eq!(parts[0], "00", "{v}");
    (parts[1].to_owned(), parts[2].to_owned(), parts[3] == "01")
}

/// The checks every pairing must pass: one trace per request, the server hop the child of
/// the client hop, the client hop a root or the child of the app's own context, the app
/// behind the server proxy a child of the server hop.
async fn one_trace_crosses_both_hops(client: ProxyKind, server: ProxyKind) {
    let t = Traced::start(client, server, 100.0).await.unwrap();

    // No trace headers: the client-side proxy starts the trace.
    let seen = t.call(&[]).await.unwrap();
    let (trace_id, app_parent, sampled) = traceparent(&seen);
    assert!(sampled, "sampling 100: the trace is sampled");
    let (client_hop, server_hop) = t.hops(&trace_id).await.unwrap();
    assert_eq!(client_hop.kind, "CLIENT", "{client_hop:#?}");
    assert_eq!(client_hop.parent_span_id, "", "a root span: {client_hop:#?}");
    assert_eq!(server_hop.kind, "SERVER", "{server_hop:#?}");
    assert_eq!(server_hop.parent_span_id, client_hop.span_id, "server hop is the client hop's child");
    assert_eq!(app_parent, server_hop.span_id, "the app is the server hop's child");
    assert_eq!(t.receiver.trace(&trace_id).len(), 2, "one span per hop: {:#?}", t.receiver.trace(&trace_id));

    // The app sent a traceparent: the client hop is its child, in the app's trace.
    let given = format!("00-{APP_TRACE}-{APP_SPAN}-01");
    let seen = t.call(&[("traceparent", &given)]).await.unwrap();
    let (trace_id, app_parent, _) = traceparent(&seen);
    assert_eq!(trace_id, APP_TRACE, "the trace goes on");
    let (client_hop, server_hop) = t.hops(APP_TRACE).await.unwrap();
    assert_eq!(client_hop.parent_span_id, APP_SPAN, "{client_hop:#?}");
    assert_eq!(server_hop.parent_span_id, client_hop.span_id);
    assert_eq!(app_parent, server_hop.span_id);
}

mod weft_to_weft {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn one_trace_crosses_both_hops() {
        super::one_trace_crosses_both_hops(ProxyKind::Weft, ProxyKind::Weft).await;
    }

    /// weft-proxy's spans say what happened: method, target, status, cluster, peer identity.
    #[tokio::test(flavor = "multi_thread")]
    async fn spans_carry_the_request_and_the_peer() {
        let t = Traced::start(ProxyKind::Weft, ProxyKind::Weft, 100.0).await.unwrap();
        let (trace_id, _, _) = traceparent(&t.call(&[]).await.unwrap());
        let (client_hop, server_hop) = t.hops(&trace_id).await.unwrap();
        for span in [&client_hop, &server_hop] {
            assert_eq!(span.attribute("http.method"), Some("GET"), "{span:#?}");
            assert_eq!(span.attribute("http.target"), Some("/hello"), "{span:#?}");
            assert_eq!(span.attribute("http.status_code"), Some("200"), "{span:#?}");
            assert!(!span.error);
        }
        assert_eq!(
            client_hop.attribute("upstream_cluster"),
            Some("outbound|8080||web.shop.svc.cluster.local")
        );
        assert_eq!(server_hop.attribute("upstream_cluster"), Some("inbound|8080||"));
        assert_eq!(server_hop.attribute("weft.tls"), Some("true"));
        assert_eq!(
            server_hop.attribute("weft.peer.identity"),
            Some("spiffe://cluster.local/ns/shop/sa/client")
        );
    }

    /// A B3 request (multi-header form) keeps its trace id; both B3 and `traceparent` reach the app.
    #[tokio::test(flavor = "multi_thread")]
    async fn b3_requests_continue_their_trace() {
        let t = Traced::start(ProxyKind::Weft, ProxyKind::Weft, 0.0).await.unwrap();
        let seen = t
            .call(&[("x-b3-traceid", APP_TRACE), ("x-b3-spanid", APP_SPAN), ("x-b3-sampled", "1")])
            .await
            .unwrap();
        let (client_hop, server_hop) = t.hops(APP_TRACE).await.unwrap();
        assert_eq!(client_hop.parent_span_id, APP_SPAN);
        assert_eq!(server_hop.parent_span_id, client_hop.span_id);
        assert_eq!(seen["x-b3-traceid"], APP_TRACE);
        assert_eq!(seen["x-b3-spanid"], server_hop.span_id.as_str());
        assert_eq!(seen["x-b3-parentspanid"], client_hop.span_id.as_str());
        assert_eq!(seen["x-b3-sampled"], "1");
        assert_eq!(traceparent(&seen), (APP_TRACE.to_owned(), server_hop.span_id.clone(), true));
    }

    /// A malformed `traceparent` is ignored: the request starts a new trace (sampled at 100 %).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_malformed_traceparent_starts_a_new_root() {
        let t = Traced::start(ProxyKind::Weft, ProxyKind::Weft, 100.0).await.unwrap();
        let seen = t.call(&[("traceparent", "00-not-a-trace-01")]).await.unwrap();
        let (trace_id, _, sampled) = traceparent(&seen);
        assert!(sampled);
        let (client_hop, _) = t.hops(&trace_id).await.unwrap();
        assert_eq!(client_hop.parent_span_id, "");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sampling_zero_exports_nothing_but_headers_still_propagate() {
        super::sampling_zero_exports_nothing_but_headers_still_propagate(ProxyKind::Weft).await;
    }
}

mod envoy_to_envoy {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn one_trace_crosses_both_hops() {
        super::one_trace_crosses_both_hops(ProxyKind::Envoy, ProxyKind::Envoy).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sampling_zero_exports_nothing_but_headers_still_propagate() {
        super::sampling_zero_exports_nothing_but_headers_still_propagate(ProxyKind::Envoy).await;
    }
}

mod weft_to_envoy {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn one_trace_crosses_both_hops() {
        super::one_trace_crosses_both_hops(ProxyKind::Weft, ProxyKind::Envoy).await;
    }
}

mod envoy_to_weft {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn one_trace_crosses_both_hops() {
        super::one_trace_crosses_both_hops(ProxyKind::Envoy, ProxyKind::Weft).await;
    }
}

/// With sampling 0, requests without a sampled parent export nothing, yet the app still gets
/// a `traceparent` (not sampled). A later request whose parent is sampled is exported: once
/// its spans arrive, anything the earlier requests had exported would have arrived too (each
/// proxy exports in order), so their absence is seen without a fixed sleep.
async fn sampling_zero_exports_nothing_but_headers_still_propagate(kind: ProxyKind) {
    let t = Traced::start(kind, kind, 0.0).await.unwrap();
    let mut unsampled = Vec::new();
    for _ in 0..5 {
        let (trace_id, _, sampled) = traceparent(&t.call(&[]).await.unwrap());
        assert!(!sampled, "sampling 0: not sampled");
        unsampled.push(trace_id);
    }
    let given = format!("00-{APP_TRACE}-{APP_SPAN}-01");
    let (trace_id, _, sampled) = traceparent(&t.call(&[("traceparent", &given)]).await.unwrap());
    assert_eq!((trace_id.as_str(), sampled), (APP_TRACE, true), "a sampled parent is followed");
    t.hops(APP_TRACE).await.unwrap();
    let spans = t.receiver.spans();
    let leaked: Vec<&ReceivedSpan> = spans.iter().filter(|s| unsampled.contains(&s.trace_id)).collect();
    assert!(leaked.is_empty(), "unsampled requests exported spans: {leaked:#?}");
    assert!(spans.iter().all(|s| s.trace_id == APP_TRACE || s.service == "weft-control"), "{spans:#?}");
}

/// Without `--trace-collector`, no proxy gets tracing config, and trace headers reach the
/// app exactly as sent (weft-proxy neither rewrites nor starts traces).
#[tokio::test(flavor = "multi_thread")]
async fn an_unconfigured_mesh_sends_no_tracing_config_and_leaves_headers_alone() {
    let mesh = LocalMesh::manifests("identity").await.unwrap();
    let web = mesh.backend(3, 8080, "web").await.unwrap();
    let web_proxy = mesh.proxy(ProxyKind::Weft, "web", NS, "web", 3, MODE).await.unwrap();
    let client_proxy = mesh.proxy(ProxyKind::Envoy, "client", NS, "client", 1, MODE).await.unwrap();
    let dump = web_proxy.as_weft().unwrap().config_dump().await.unwrap().to_string();
    assert!(!dump.contains("weft-otel-collector") && !dump.contains("opentelemetry"), "{dump}");
    let envoy_dump = client_proxy.get_admin("/config_dump").await.unwrap();
    assert!(!envoy_dump.contains("weft-otel-collector"));
    let listeners = client_proxy.get_admin("/config_dump?resource=dynamic_listeners").await.unwrap();
    assert!(listeners.contains("http_connection_manager") && !listeners.contains("tracing"), "{listeners}");
    let outbound = mesh.subnet.addr(1, 4140);
    eventually("the client to reach web", || async {
        anyhow::Ok(get(outbound, &[]).await.is_ok_and(|(status, _)| status == 200))
    })
    .await
    .unwrap();
    let given = format!("00-{APP_TRACE}-{APP_SPAN}-01");
    let (status, _) = get(outbound, &[("traceparent", &given)]).await.unwrap();
    assert_eq!(status, 200);
    let seen = web.last_request().unwrap().headers;
    assert_eq!(seen["traceparent"], given.as_str(), "passed through untouched");
}

/// The control plane exports one `xds.push` span per push to each proxy, ended when the
/// proxy ACKs, with the node, type, version, nonce and resource count.
#[tokio::test(flavor = "multi_thread")]
async fn the_control_plane_exports_a_span_per_push_per_proxy() {
    let mesh = LocalMesh::manifests("identity").await.unwrap();
    let receiver = OtlpReceiver::start(mesh.subnet.ip(252)).await.unwrap();
    let tracing = TraceOptions { collector: receiver.addr(), sampling: Sampling::default() };
    let control = traced_control(&mesh, tracing).await.unwrap();
    let config = ProxyConfig::new("web", NS, "web", mesh.pod_ip(3), control.xds_addr, MODE)
        .with_identity(mesh.identity());
    let _proxy = Proxy::start(ProxyKind::Weft, &config).await.unwrap();
    let pushes = receiver
        .wait_for("push spans for web's CDS and LDS", |spans| {
            let of = |t: &str| {
                spans.iter().find(|s| {
                    s.service == "weft-control" && s.name == "xds.push" && s.attribute("xds.type") == Some(t)
                })
            };
            Some([of("cds")?.clone(), of("lds")?.clone()])
        })
        .await
        .unwrap();
    for span in &pushes {
        assert_eq!(span.attribute("xds.node"), Some("web"), "{span:#?}");
        assert!(span.attribute("xds.version").is_some_and(|v| !v.is_empty()), "{span:#?}");
        assert!(span.attribute("xds.nonce").is_some_and(|v| !v.is_empty()), "{span:#?}");
        assert!(span.attribute("xds.resources").is_some_and(|v| v != "0"), "{span:#?}");
        assert_eq!(span.attribute("xds.outcome"), Some("ack"), "{span:#?}");
        assert!(!span.error);
        assert_eq!(span.parent_span_id, "");
    }
}

/// `envoy --mode validate` accepts what weft translates with tracing on: every listener with
/// its traced connection managers, and the collector cluster (plaintext mesh; the live pairs
/// above cover the mTLS chains).
#[test]
fn envoy_validates_the_tracing_config() {
    use weft_control::source::ManifestDir;
    use weft_control::translate::{
        INBOUND_PORT, MeshOptions, OTEL_COLLECTOR_CLUSTER, OUTBOUND_PORT, ProxyNode, translate_mesh,
        translate_proxy,
    };
    use weft_xds_protos::envoy::config::cluster::v3::cluster;

    let example = weft_integration::mesh::examples_dir().join("payments");
    let report = ManifestDir::new(&example).load();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let tracing =
        TraceOptions { collector: "127.0.0.1:4317".parse().unwrap(), sampling: Sampling::default() };
    let opts = MeshOptions { tracing: Some(tracing), ..MeshOptions::plaintext() };
    let mesh = translate_mesh(&report.state, &opts);
    let node = ProxyNode {
        id: "payment".into(),
        namespace: "payments".into(),
        service_account: "payment".into(),
        pod_ip: "127.0.10.2".parse().unwrap(),
        inbound_port: INBOUND_PORT,
        outbound_port: OUTBOUND_PORT,
        transparent: false,
    };
    let own = translate_proxy(&report.state, &mesh.splits, &node, &opts);
    assert!(own.listeners.iter().any(|l| l.traffic_direction != 0), "traced listeners say their direction");
    let mut clusters = own.clusters.clone();
    // The mesh's EDS clusters, made static with their endpoints inline.
    for (name, c) in &mesh.clusters {
        let mut c = c.clone();
        c.cluster_discovery_type =
            Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Static as i32));
        c.eds_cluster_config = None;
        c.load_assignment = mesh.endpoints.get(name).cloned();
        clusters.push(c);
    }
    // Routes come over ADS (not contacted in validate mode): a static HTTP/2 cluster like the collector's.
    let mut xds =
        own.clusters.iter().find(|c| c.name == OTEL_COLLECTOR_CLUSTER).expect("collector cluster").clone();
    xds.name = "xds".into();
    clusters.push(xds);
    let b = weft_integration::envoy::ads_bootstrap(&node.id, &node.namespace, own.listeners, clusters);
    weft_integration::envoy::validate("the traced config", &b).unwrap();
}
