//! A fake Kubernetes API server, in memory, on 127.0.0.1 over plain HTTP, that keeps the
//! list/watch semantics kube-rs relies on.
//!
//! - One global `resourceVersion`, bumped by every write; lists carry it in their metadata.
//! - `?watch=true` streams ADDED / MODIFIED / DELETED events after the `resourceVersion`
//!   given (every current object as ADDED without one), BOOKMARKs when
//!   `allowWatchBookmarks=true`, and, once the history was [`compact`](FakeKube::compact)ed,
//!   an ERROR event carrying a 410 Status, as the real API server does.
//! - Create, get, replace (with `resourceVersion` preconditions), patch (every patch type is
//!   applied as a JSON merge patch; a server-side apply creates a missing object), delete;
//!   `status` subresources; `generation` bumped by spec changes; `managedFields` recording
//!   the version each write used; CRD versions served as views of one object.
//! - TokenReview answered from tokens the test [`register_token`](FakeKube::register_token)s.
//! - SubjectAccessReview answered from the grants the test [`allow`](FakeKube::allow)s
//!   (everything else is denied, as RBAC denies what no binding grants).
//!
//! The test holds the knobs: [`drop_watches`](FakeKube::drop_watches),
//! [`compact`](FakeKube::compact), [`restart`](FakeKube::restart),
//! [`fail_requests`](FakeKube::fail_requests).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use weft_integration::fake_kube::FakeKube;
//!
//! let api = FakeKube::start().await?;
//! api.create(serde_json::json!({
//!     "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pay"},
//! })).await?;
//! let client = api.client()?; // a kube::Client for the fake
//! # let _ = client; Ok(()) }
//! ```

pub mod extras;
mod selector;
mod server;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};

pub use server::{API_AUDIENCE, AccessRule};
pub use store::{ResourceType, apps_types, default_types};

use server::{State, TokenEntry};
use store::Store;

/// The field manager of writes the test makes directly.
const TEST_MANAGER: &str = "weft-test";

/// A running fake API server.
#[derive(Debug)]
pub struct FakeKube {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl FakeKube {
    /// Serves the standard types and the SMI CRDs at every version, on 127.0.0.1.
    pub async fn start() -> anyhow::Result<FakeKube> {
        FakeKube::start_with(default_types()).await
    }

    /// Serves `types` only.
    pub async fn start_with(types: Vec<ResourceType>) -> anyhow::Result<FakeKube> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            store: Store::new(types),
            tokens: Default::default(),
            access: Vec::new(),
            failures: Vec::new(),
            log: Vec::new(),
        }));
        let server = serve(listener, state.clone());
        Ok(FakeKube { addr, state, server: Mutex::new(Some(server)) })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server (no credentials, plain HTTP).
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        let config = kube::Config::new(self.url().parse()?);
        Ok(kube::Client::try_from(config)?)
    }

    /// A kubeconfig pointing at this server (for the `weft` binary's `--kubeconfig`).
    pub fn kubeconfig(&self) -> String {
        kubeconfig_for(&self.url())
    }

    /// Creates an object of any served `apiVersion` and `kind`, in `metadata.namespace` (or
    /// `default`), as `kubectl create` would.
    pub async fn create(&self, object: Value) -> anyhow::Result<Value> {
        let mut st = self.state.lock().await;
        let (ty, version, ns, _) = locate(&st.store, &object)?;
        st.store.create(&ty, &version, &ns, object, TEST_MANAGER).map_err(|f| anyhow!("{f:?}"))
    }

    /// Creates an object and then writes its `status` through the status subresource, as a
    /// controller (the kubelet, for a Pod) would: `create` drops `status` on such types.
    pub async fn create_with_status(&self, object: Value) -> anyhow::Result<Value> {
        let status = object.get("status").cloned();
        let created = self.create(object).await?;
        let mut st = self.state.lock().await;
        let (ty, version, ns, name) = locate(&st.store, &created)?;
        match status {
            Some(status) if ty.status_subresource => st
                .store
                .update(&ty, &version, (&ns, &name), true, TEST_MANAGER, |current| {
                    let mut with = current.clone();
                    with["status"] = status;
                    Ok(with)
                })
                .map_err(|f| anyhow!("{f:?}")),
            _ => Ok(created),
        }
    }

    /// Creates the object, or replaces it (keeping its status), as `kubectl apply` would.
    pub async fn apply(&self, object: Value) -> anyhow::Result<Value> {
        let mut st = self.state.lock().await;
        let (ty, version, ns, name) = locate(&st.store, &object)?;
        if st.store.get(&ty, &version, &ns, &name).is_none() {
            return st.store.create(&ty, &version, &ns, object, TEST_MANAGER).map_err(|f| anyhow!("{f:?}"));
        }
        let mut body = object;
        if let Some(meta) = body["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        st.store
            .update(&ty, &version, (&ns, &name), false, TEST_MANAGER, |_| Ok(body))
            .map_err(|f| anyhow!("{f:?}"))
    }

    /// Applies a JSON merge patch to an object (its `status` when `status` is true).
    pub async fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        status: bool,
        patch: Value,
    ) -> anyhow::Result<Value> {
        let mut st = self.state.lock().await;
        let (ty, version) = st.store.type_of(api_version, kind).context("type not served")?;
        st.store
            .update(&ty, &version, (namespace, name), status, TEST_MANAGER, |current| {
                let mut merged = current.clone();
                server::merge_patch(&mut merged, &patch);
                Ok(merged)
            })
            .map_err(|f| anyhow!("{f:?}"))
    }

    /// Deletes an object.
    pub async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Value> {
        let mut st = self.state.lock().await;
        let (ty, version) = st.store.type_of(api_version, kind).context("type not served")?;
        st.store.delete(&ty, &version, namespace, name).map_err(|f| anyhow!("{f:?}"))
    }

    /// An object as `apiVersion` shows it.
    pub async fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().await;
        let (ty, version) = st.store.type_of(api_version, kind)?;
        st.store.get(&ty, &version, namespace, name)
    }

    /// Every object of a kind, in every namespace.
    pub async fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let st = self.state.lock().await;
        let Some((ty, version)) = st.store.type_of(api_version, kind) else { return Vec::new() };
        let scope = store::Scope {
            ty,
            version,
            namespace: None,
            labels: Default::default(),
            fields: Default::default(),
        };
        let list = st.store.list(&scope);
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Registers a token that TokenReview accepts as `username` for `audiences`.
    pub async fn register_token(&self, token: &str, username: &str, audiences: &[&str]) {
        let entry = TokenEntry {
            username: username.to_string(),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
        };
        self.state.lock().await.tokens.insert(token.to_string(), entry);
    }

    /// Grants `subject` (a user name or a group) `verb` on `resource` of API group `group`
    /// in `namespace` (`None`: every namespace) for SubjectAccessReview.
    pub async fn allow(
        &self,
        subject: &str,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) {
        let rule = AccessRule {
            subject: subject.to_string(),
            verb: verb.to_string(),
            group: group.to_string(),
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
        };
        self.state.lock().await.access.push(rule);
    }

    /// Ends every open watch response (as a dropped connection would); returns how many.
    pub async fn drop_watches(&self) -> usize {
        self.state.lock().await.store.drop_watches()
    }

    /// How many watches are open.
    pub async fn open_watches(&self) -> usize {
        self.state.lock().await.store.open_watches()
    }

    /// Forgets the event history, so a watch resuming from an older version gets 410 Gone.
    pub async fn compact(&self) {
        self.state.lock().await.store.compact();
    }

    /// Sends a BOOKMARK to every watch that asked for them.
    pub async fn bookmark(&self) {
        self.state.lock().await.store.bookmark();
    }

    /// The current `resourceVersion`.
    pub async fn resource_version(&self) -> u64 {
        self.state.lock().await.store.resource_version()
    }

    /// Makes requests whose `METHOD /path?query` (parameters sorted) contains `matching` fail with `code` until
    /// [`clear_failures`](Self::clear_failures).
    pub async fn fail_requests(&self, matching: &str, code: u16) {
        self.state.lock().await.failures.push((matching.to_string(), code));
    }

    /// Stops injecting failures.
    pub async fn clear_failures(&self) {
        self.state.lock().await.failures.clear();
    }

    /// `METHOD /path?query` (parameters sorted) of every request so far.
    pub async fn requests(&self) -> Vec<String> {
        self.state.lock().await.log.clone()
    }

    /// Restarts the server: every connection is cut and the port is served again, with the
    /// objects and their resourceVersions kept (as etcd keeps them) but no watch open.
    pub async fn restart(&self) -> anyhow::Result<()> {
        let mut server = self.server.lock().await;
        if let Some(task) = server.take() {
            task.abort();
            let _ = task.await;
        }
        self.state.lock().await.store.drop_watches();
        let listener =
            TcpListener::bind(self.addr).await.with_context(|| format!("rebinding {}", self.addr))?;
        *server = Some(serve(listener, self.state.clone()));
        Ok(())
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Ok(mut server) = self.server.try_lock()
            && let Some(task) = server.take()
        {
            task.abort();
        }
    }
}

/// A kubeconfig whose current context talks to `url` (plain HTTP, no credentials).
pub fn kubeconfig_for(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\nusers:\n- name: fake\n  user: {{}}\n"
    )
}

/// The type, version, namespace and name of an object the test passes.
fn locate(store: &Store, object: &Value) -> anyhow::Result<(ResourceType, String, String, String)> {
    let api_version = object["apiVersion"].as_str().context("apiVersion")?;
    let kind = object["kind"].as_str().context("kind")?;
    let (ty, version) =
        store.type_of(api_version, kind).with_context(|| format!("{api_version} {kind} is not served"))?;
    let ns = if ty.namespaced { object["metadata"]["namespace"].as_str().unwrap_or("default") } else { "" };
    let name = object["metadata"]["name"].as_str().unwrap_or("").to_string();
    Ok((ty, version, ns.to_string(), name))
}

/// Accepts connections until aborted; aborting it cuts every connection it serves.
fn serve(listener: TcpListener, state: Arc<Mutex<State>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let state = state.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| server::handle(state.clone(), req));
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}
