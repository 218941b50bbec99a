//! The two body types of the data path, concrete so nothing is boxed per
//! request: [`RequestBody`] sent upstream (streamed, or buffered for
//! retries) and [`ResponseBody`] sent downstream (an upstream response that
//! releases its [`Lease`] at end of stream, or a local reply).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::cluster::Lease;

/// A request body on its way upstream.
#[derive(Debug)]
pub(crate) enum RequestBody {
    /// The downstream body, streamed as it arrives.
    Streaming(Incoming),
    /// A body read whole (so it can be sent again on a retry).
    Buffered {
        /// The data, taken when sent.
        data: Option<Bytes>,
        /// The trailers, taken when sent.
        trailers: Option<HeaderMap>,
    },
}

impl RequestBody {
    /// A buffered body.
    pub(crate) fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> RequestBody {
        RequestBody::Buffered { data: if data.is_empty() { None } else { Some(data) }, trailers }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Streaming(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Buffered { data, trailers } => Poll::Ready(match data.take() {
                Some(data) => Some(Ok(Frame::data(data))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streaming(body) => body.is_end_stream(),
            RequestBody::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming(body) => body.size_hint(),
            RequestBody::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// A response body on its way downstream.
#[derive(Debug)]
pub(crate) enum ResponseBody {
    /// A reply made by the proxy.
    Local(Option<Bytes>),
    /// An upstream response; its lease is released at end of stream (the
    /// connection goes back to the pool) or when dropped (it does not).
    Upstream {
        /// The upstream body.
        body: Incoming,
        /// What the exchange holds until the body ends.
        lease: Lease,
    },
}

impl ResponseBody {
    /// A local reply body.
    pub(crate) fn local(data: Bytes) -> ResponseBody {
        ResponseBody::Local(if data.is_empty() { None } else { Some(data) })
    }

    /// An upstream body; an empty one releases its lease now, since the
    /// server may never poll it.
    pub(crate) fn upstream(body: Incoming, mut lease: Lease) -> ResponseBody {
        if body.is_end_stream() {
            lease.finish();
        }
        ResponseBody::Upstream { body, lease }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ResponseBody::Upstream { body, lease } => {
                let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
                match &frame {
                    // Servers stop polling once is_end_stream says so: finish here.
                    Some(Ok(f)) if f.is_trailers() || body.is_end_stream() => lease.finish(),
                    None => lease.finish(),
                    _ => {}
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Local(data) => data.is_none(),
            ResponseBody::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Local(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            ResponseBody::Upstream { body, .. } => body.size_hint(),
        }
    }
}
