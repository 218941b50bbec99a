//! Connected proxies and their per-type xDS state, for `/debug/proxies`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{RwLock, watch};

use crate::identity::CertInfo;
use crate::translate::ProxyNode;

/// A NACK as the proxy reported it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NackReport {
    /// The version (SotW) or system version (Delta) the proxy rejected.
    pub version: String,
    /// The nonce of the rejected response.
    pub nonce: String,
    /// `error_detail.message`.
    pub detail: String,
    /// The resources in the rejected response.
    pub resources: Vec<String>,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// One type's state on one stream.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TypeReport {
    /// `["*"]` for a wildcard subscription, else the names (the first
    /// [`SUBSCRIBED_SHOWN`] of them: `subscribed_count` has the total). Shared: the report
    /// is copied after every message, the subscription rarely changes.
    #[serde(serialize_with = "names")]
    pub subscribed: Arc<[String]>,
    /// How many names are subscribed (0 for a wildcard).
    pub subscribed_count: usize,
    /// The version of the last response sent.
    pub sent_version: Option<String>,
    /// The nonce of the last response sent.
    pub sent_nonce: Option<String>,
    /// The last version the proxy ACKed.
    pub acked_version: Option<String>,
    /// Resources the proxy has (or was just sent).
    pub resources: usize,
    /// Responses sent.
    pub pushes: u64,
    /// ACKs received.
    pub acks: u64,
    /// NACKs received.
    pub nacks: u64,
    /// The most recent NACK.
    pub last_nack: Option<NackReport>,
}

/// One connected proxy.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProxyReport {
    /// Connection number, unique for the server's life.
    pub connection: u64,
    /// Who the proxy is.
    pub node: ProxyNode,
    /// `ads-sotw`, `ads-delta`, or `sotw`/`delta` with a type for per-type streams.
    pub stream: String,
    /// Seconds since the Unix epoch.
    pub connected_at: u64,
    /// The snapshot version the stream last computed its view from.
    pub snapshot_version: u64,
    /// Per short type name.
    pub types: BTreeMap<&'static str, TypeReport>,
    /// The client certificate the proxy connected with (`None` over plaintext).
    pub peer: Option<CertInfo>,
}

/// At most this many subscribed names are kept in a report: a sidecar's EDS subscription
/// names every cluster of the mesh, and the report is copied after every message.
pub const SUBSCRIBED_SHOWN: usize = 100;

impl TypeReport {
    /// Records a subscription: `["*"]`, or the first [`SUBSCRIBED_SHOWN`] names and their count.
    pub(crate) fn set_subscribed<'a>(
        &mut self,
        wildcard: bool,
        names: impl ExactSizeIterator<Item = &'a String>,
    ) {
        if wildcard {
            self.subscribed = Arc::from(["*".to_string()]);
            self.subscribed_count = 0;
        } else {
            self.subscribed_count = names.len();
            self.subscribed = names.take(SUBSCRIBED_SHOWN).cloned().collect();
        }
    }
}

fn names<S: serde::Serializer>(names: &Arc<[String]>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(names.iter())
}

/// Every open stream's report, by connection number.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<RwLock<BTreeMap<u64, watch::Receiver<ProxyReport>>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl Registry {
    /// A fresh connection number.
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Adds a stream.
    pub async fn insert(&self, id: u64, rx: watch::Receiver<ProxyReport>) {
        self.inner.write().await.insert(id, rx);
    }

    /// Removes a stream.
    pub async fn remove(&self, id: u64) {
        self.inner.write().await.remove(&id);
    }

    /// The current report of every stream.
    pub async fn reports(&self) -> Vec<ProxyReport> {
        self.inner.read().await.values().map(|rx| rx.borrow().clone()).collect()
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
