//! The data path: listeners, HTTP and TCP proxying, routing, load balancing.
//!
//! [`run`] follows the config channel: each new [`Config`] becomes a
//! `runtime::Runtime` generation (indexed route tables, cluster states that
//! keep pools and counters across updates), swapped in lock-free, and then
//! the listeners are reconciled. Per request the HTTP path loads the current
//! generation once, so a request finishes on the config it started with.
//!
//! | file | what |
//! |---|---|
//! | `listener` | bind / keep / rebind / drain listeners, filter chain match |
//! | `http` | HTTP/1.1 + h2c server, per-request routing, local replies |
//! | `route` | virtual host and route matching, weighted cluster pick (pure) |
//! | `upstream` | forwarding: breakers, upstream form, tries, retries, timeouts |
//! | `retry` | retry decisions and backoff (pure) |
//! | `cluster` | cluster and endpoint state, circuit breakers, leases |
//! | `balancer` | round robin and least request (P2C) |
//! | `pool` | keep-alive HTTP/1.1 and HTTP/2 upstream connections |
//! | `body` | request and response body types |
//! | `tcp` | TCP proxy |
//! | `tls` | TLS inspector, rustls configs per credentials version, TLS streams |
//! | `authz` | RBAC checks of inbound requests and connections |
//! | `io` | byte-counting stream |

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::tap::Tap;
use crate::tls::Credentials;

mod authz;
mod balancer;
mod body;
mod cluster;
mod http;
mod io;
mod listener;
mod pool;
mod retry;
mod route;
mod runtime;
mod tcp;
mod tls;
mod upstream;

/// Serves every listener of the current config until `shutdown` turns true
/// (or its sender is dropped), then stops accepting and drains connections
/// for at most 5 s. A dropped config sender leaves the last config serving.
///
/// `credentials` are the workload's certificate and trust bundle (`None`
/// without an identity): each TLS handshake, downstream or upstream, uses
/// the value current at that moment, so a rotation reaches new connections
/// while established ones go on.
pub async fn run(
    config: watch::Receiver<Arc<Config>>,
    credentials: watch::Receiver<Option<Arc<Credentials>>>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    run_with_tap(config, credentials, metrics, Tap::new(), shutdown).await;
}

/// [`run`], with requests observable through `tap`.
pub async fn run_with_tap(
    mut config: watch::Receiver<Arc<Config>>,
    credentials: watch::Receiver<Option<Arc<Credentials>>>,
    metrics: Arc<Metrics>,
    tap: Arc<Tap>,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Arc::new(runtime::Shared::new(metrics, credentials, tap));
    let mut listeners = listener::Listeners::new(Arc::clone(&shared));
    let mut config_open = true;
    loop {
        if config_open {
            let current = Arc::clone(&config.borrow_and_update());
            let next = shared.runtime.load().next(&current);
            shared.runtime.store(Arc::new(next));
            listeners.update(&current).await;
        }
        tokio::select! {
            changed = config.changed(), if config_open => {
                if changed.is_err() {
                    tracing::warn!("config channel closed; serving the last config");
                    config_open = false;
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    tracing::info!("shutting down: draining connections");
    listeners.shutdown().await;
}
