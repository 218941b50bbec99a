//! What `weft check` asks of an API server beyond objects and watches: SelfSubjectAccessReviews,
//! the server's version, and its clock (the `Date` header). [`KubeFront`] answers those as the
//! test sets them and forwards every other request to a [`FakeKube`], whose objects and
//! watches it thus shares.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use weft_integration::fake_kube::{FakeKube, extras::KubeFront};
//!
//! let api = FakeKube::start_with(KubeFront::types()).await?;
//! let front = KubeFront::start(&api).await?;
//! front.deny_create("apiextensions.k8s.io", "customresourcedefinitions").await;
//! front.set_clock_skew(120).await;
//! let client = front.client()?; // talks to the front
//! # let _ = client; Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::{FakeKube, ResourceType, default_types};

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// What the front answers itself.
#[derive(Debug, Clone)]
struct Policy {
    /// `major`, `minor` of `/version`.
    version: (String, String),
    /// `(group, resource)` the user may not create.
    denied: BTreeSet<(String, String)>,
    /// Seconds the server's clock is ahead of the machine's (negative: behind).
    clock_skew: i64,
}

/// A front for a [`FakeKube`] with the knobs `weft check` needs.
#[derive(Debug)]
pub struct KubeFront {
    addr: SocketAddr,
    policy: Arc<Mutex<Policy>>,
    task: JoinHandle<()>,
}

impl KubeFront {
    /// The fake's default types plus what `weft install` creates and `weft check` reads
    /// (CRDs, MutatingWebhookConfigurations, Deployments).
    pub fn types() -> Vec<ResourceType> {
        let mut types = default_types();
        types.extend([
            ResourceType::new(
                "apiextensions.k8s.io",
                &["v1"],
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            ),
            ResourceType::new(
                "admissionregistration.k8s.io",
                &["v1"],
                "mutatingwebhookconfigurations",
                "MutatingWebhookConfiguration",
                false,
            )
            .without_status(),
            ResourceType::new("apps", &["v1"], "deployments", "Deployment", true),
        ]);
        types
    }

    /// Serves on 127.0.0.1, forwarding to `backend`. Everything is allowed, the version is
    /// 1.33 and the clock agrees until the test says otherwise.
    pub async fn start(backend: &FakeKube) -> anyhow::Result<KubeFront> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let policy = Arc::new(Mutex::new(Policy {
            version: ("1".into(), "33".into()),
            denied: BTreeSet::new(),
            clock_skew: 0,
        }));
        let upstream: Arc<str> = backend.url().into();
        let client: HttpClient<HttpConnector, Full<Bytes>> =
            HttpClient::builder(TokioExecutor::new()).build(HttpConnector::new());
        let shared = policy.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (policy, upstream, client) = (shared.clone(), upstream.clone(), client.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| handle(policy.clone(), upstream.clone(), client.clone(), req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(KubeFront { addr, policy, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for the front (no credentials, plain HTTP).
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        let config = kube::Config::new(self.url().parse()?);
        Ok(kube::Client::try_from(config)?)
    }

    /// A kubeconfig file pointing at the front (for the `weft` binary's `--kubeconfig`).
    pub fn kubeconfig(&self) -> String {
        super::kubeconfig_for(&self.url())
    }

    /// `/version` answers `major.minor`.
    pub async fn set_version(&self, major: &str, minor: &str) {
        self.policy.lock().await.version = (major.to_string(), minor.to_string());
    }

    /// SelfSubjectAccessReviews for `create` on `group`/`resource` answer "not allowed".
    pub async fn deny_create(&self, group: &str, resource: &str) {
        self.policy.lock().await.denied.insert((group.to_string(), resource.to_string()));
    }

    /// The `Date` header runs `seconds` ahead of this machine's clock (negative: behind).
    pub async fn set_clock_skew(&self, seconds: i64) {
        self.policy.lock().await.clock_skew = seconds;
    }
}

impl Drop for KubeFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    policy: Arc<Mutex<Policy>>,
    upstream: Arc<str>,
    client: HttpClient<HttpConnector, Full<Bytes>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let policy = policy.lock().await.clone();
    let path = req.uri().path().to_string();
    let mut response = match (req.method().as_str(), path.as_str()) {
        ("GET", "/version") => json_response(
            200,
            &json!({"major": policy.version.0, "minor": policy.version.1,
                    "gitVersion": format!("v{}.{}.0-fake", policy.version.0, policy.version.1),
                    "gitCommit": "0", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                    "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
        ),
        ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews") => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            access_review(&policy, &body)
        }
        _ => forward(&upstream, &client, req).await,
    };
    response.headers_mut().insert(
        http::header::DATE,
        http_date(policy.clock_skew)
            .parse()
            .unwrap_or_else(|_| http::HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT")),
    );
    Ok(response)
}

fn access_review(policy: &Policy, body: &[u8]) -> Response<Body> {
    let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
        return json_response(400, &json!({"kind": "Status", "code": 400, "message": "not JSON"}));
    };
    let attrs = &review["spec"]["resourceAttributes"];
    let key = (
        attrs["group"].as_str().unwrap_or_default().to_string(),
        attrs["resource"].as_str().unwrap_or_default().to_string(),
    );
    let allowed = !(attrs["verb"] == "create" && policy.denied.contains(&key));
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "the fake allows it"})
    } else {
        json!({"allowed": false, "reason": "the test denies it"})
    };
    json_response(201, &review)
}

async fn forward(
    upstream: &str,
    client: &HttpClient<HttpConnector, Full<Bytes>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return json_response(400, &json!({"kind": "Status", "code": 400, "message": "unreadable body"}));
    };
    let target = format!("{upstream}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut out = Request::builder().method(parts.method).uri(target);
    for (name, value) in &parts.headers {
        if name != http::header::HOST {
            out = out.header(name, value);
        }
    }
    let Ok(out) = out.body(Full::new(body)) else {
        return json_response(500, &json!({"kind": "Status", "code": 500, "message": "bad request"}));
    };
    match client.request(out).await {
        Ok(resp) => resp.map(BodyExt::boxed_unsync),
        Err(e) => json_response(502, &json!({"kind": "Status", "code": 502, "message": e.to_string()})),
    }
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let body = Full::new(Bytes::from(value.to_string())).map_err(|never| match never {}).boxed_unsync();
    let mut res = Response::new(body);
    *res.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    res
}

/// Now, shifted by `skew` seconds, as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(skew: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let secs = i64::try_from(now).unwrap_or_default() + skew;
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(secs) else {
        return "Thu, 01 Jan 1970 00:00:00 GMT".into();
    };
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[usize::from(t.weekday().number_days_from_monday())],
        t.day(),
        MONTHS[usize::from(u8::from(t.month()) - 1)],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates() {
        let d = http_date(0);
        assert!(d.ends_with(" GMT") && d.len() == 29, "{d}");
        assert_eq!(&d[3..5], ", ");
    }
}
