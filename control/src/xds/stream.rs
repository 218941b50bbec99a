//! The stream loop shared by every xDS flavour: read requests, watch
//! snapshots, let the protocol decide what to send, keep the report current.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::Status;
use tracing::{Instrument, debug, info, info_span, warn};
use weft_xds_protos::envoy::config::core::v3::Node;

use super::registry::{ProxyReport, now_secs};
use super::{XdsContext, known_type, short_type};
use crate::cache::{ProxyView, Snapshot};
use crate::identity::CertInfo;
use crate::metrics::ModeLabel;
use crate::translate::ProxyNode;

/// What a protocol (SotW or Delta) does on a stream.
pub(crate) trait XdsProtocol: Send + 'static {
    /// The request message.
    type Request: prost::Message + Send + 'static;
    /// The response message.
    type Response: prost::Message + Send + 'static;
    /// `sotw` or `delta`.
    const MODE: &'static str;

    /// The node a request carries.
    fn node(req: &Self::Request) -> Option<&Node>;
    /// The request's type URL (mutable so per-type services can fill it in).
    fn type_url(req: &mut Self::Request) -> &mut String;
    /// Handles a request: ACK/NACK bookkeeping, subscription changes, replies.
    fn on_request(
        &mut self,
        req: Self::Request,
        view: &ProxyView,
        snapshot: &Snapshot,
        report: &mut ProxyReport,
    ) -> Vec<Self::Response>;
    /// A new view: replies in make-before-break order.
    fn on_update(
        &mut self,
        view: &ProxyView,
        snapshot: &Snapshot,
        report: &mut ProxyReport,
    ) -> Vec<Self::Response>;
    /// The type a response carries, for metrics.
    fn response_type(resp: &Self::Response) -> &str;
}

/// Serves one stream until the proxy goes away. `only` restricts a per-type service to its type.
/// `peer` is the client certificate (already checked against the trust domain); the node of
/// the first request must match it when xDS is served over TLS.
pub(crate) async fn serve<P: XdsProtocol>(
    ctx: XdsContext,
    mut requests: impl Stream<Item = Result<P::Request, Status>> + Unpin,
    tx: mpsc::Sender<Result<P::Response, Status>>,
    mut proto: P,
    only: Option<&'static str>,
    peer: Option<CertInfo>,
) {
    let first = match requests.next().await {
        Some(Ok(req)) => req,
        None => return,
        Some(Err(e)) => {
            debug!(error = %e, "xDS stream failed before its first request");
            return;
        }
    };
    let node: ProxyNode = match super::proxy_node(P::node(&first)) {
        Ok(node) => node,
        Err(e) => {
            warn!(error = %e, "refusing xDS stream");
            let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
            return;
        }
    };
    if let Err(status) = super::peer::authorize_node(&ctx, peer.as_ref(), &node) {
        let _ = tx.send(Err(status)).await;
        return;
    }
    let id = ctx.registry.next_id();
    let stream_name = match only {
        None => format!("ads-{}", P::MODE),
        Some(t) => format!("{}-{}", P::MODE, short_type(t)),
    };
    let span = info_span!("xds", conn = id, node = %node.id, stream = %stream_name);
    async move {
        let mut report = ProxyReport {
            connection: id,
            node: node.clone(),
            stream: stream_name,
            connected_at: now_secs(),
            snapshot_version: 0,
            types: Default::default(),
            peer,
        };
        let (report_tx, report_rx) = watch::channel(report.clone());
        ctx.registry.insert(id, report_rx).await;
        let gauge = ctx.metrics.connected_proxies.get_or_create(&ModeLabel { mode: P::MODE.into() }).clone();
        gauge.inc();
        info!("proxy connected");

        let mut snapshots = ctx.snapshots.clone();
        let mut snapshot: Arc<Snapshot> = snapshots.borrow_and_update().clone();
        let mut view = snapshot.for_proxy(&node);
        report.snapshot_version = snapshot.version;

        let mut pushes = ctx.push_tracer.as_ref().map(|t| t.stream(&node.id));
        let mut next = Some(first);
        'stream: loop {
            // Only when tracing: what the message changes tells which pushes start and end.
            let before = pushes.as_ref().map(|_| report.types.clone());
            let mut from_update = false;
            let replies = if let Some(mut req) = next.take() {
                let t = P::type_url(&mut req);
                if let Some(only) = only {
                    if t.is_empty() {
                        *t = only.to_string();
                    } else if t != only {
                        let msg = format!("this service serves {only}, not {t}");
                        let _ = tx.send(Err(Status::invalid_argument(msg))).await;
                        break;
                    }
                }
                if known_type(t).is_none() {
                    debug!(type_url = %t, "ignoring request for a type weft does not serve");
                    Vec::new()
                } else {
                    proto.on_request(req, &view, &snapshot, &mut report)
                }
            } else {
                tokio::select! {
                    msg = requests.next() => match msg {
                        Some(Ok(req)) => { next = Some(req); continue; }
                        None => break,
                        Some(Err(e)) => { debug!(error = %e, "xDS stream ended with an error"); break; }
                    },
                    changed = snapshots.changed() => {
                        if changed.is_err() { break; }
                        snapshot = snapshots.borrow_and_update().clone();
                        view = snapshot.for_proxy_after(&node, Some(&view));
                        report.snapshot_version = snapshot.version;
                        from_update = true;
                        proto.on_update(&view, &snapshot, &mut report)
                    }
                }
            };
            let sent_any = from_update && !replies.is_empty();
            let mut bytes: HashMap<&'static str, usize> = HashMap::new();
            for reply in replies {
                if pushes.is_some() {
                    *bytes.entry(short_type(P::response_type(&reply))).or_default() +=
                        prost::Message::encoded_len(&reply);
                }
                ctx.metrics
                    .pushes
                    .get_or_create(&crate::metrics::TypeLabel {
                        r#type: short_type(P::response_type(&reply)).into(),
                    })
                    .inc();
                if tx.send(Ok(reply)).await.is_err() {
                    break 'stream;
                }
            }
            if sent_any {
                ctx.metrics.push_latency.observe(snapshot.built.elapsed().as_secs_f64());
            }
            if let (Some(pushes), Some(before)) = (pushes.as_mut(), &before) {
                pushes.observe(before, &report.types, &bytes);
            }
            report_tx.send_replace(report.clone());
        }
        gauge.dec();
        ctx.registry.remove(id).await;
        info!("proxy disconnected");
    }
    .instrument(span)
    .await
}
