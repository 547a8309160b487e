//! One middleware that observes every request: counts body bytes both ways and, when the response
//! body is done (sent or abandoned), writes one log line and records the metrics. Timing the whole
//! body, not just the handler, is what makes a slow blob download visible.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

use crate::error::ErrorNote;
use crate::metrics::{RequestLabels, RouteLabels};
use crate::{App, RouteLabel};

pub async fn observe(State(app): State<App>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let received = Arc::new(AtomicU64::new(0));
    let req = req.map(|b| Body::new(Counted::new(b, received.clone())));
    let mut response = next.run(req).await;
    // As distribution sends it: browsers must not guess a type for blob content.
    response.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    let done = Done {
        app,
        route: response
            .extensions()
            .get::<RouteLabel>()
            .map_or("other", |l| l.0),
        error: response.extensions().get::<ErrorNote>().cloned(),
        status: response.status(),
        method,
        path,
        start,
        received,
    };
    let sent = Arc::new(AtomicU64::new(0));
    response.map(|b| {
        Body::new(Observed {
            inner: Counted::new(b, sent.clone()),
            sent,
            done: Some(done),
        })
    })
}

struct Done {
    app: App,
    route: &'static str,
    error: Option<ErrorNote>,
    status: StatusCode,
    method: Method,
    path: String,
    start: Instant,
    received: Arc<AtomicU64>,
}

impl Done {
    fn finish(self, sent: u64) {
        let elapsed = self.start.elapsed();
        let received = self.received.load(Ordering::Relaxed);
        let m = &self.app.metrics;
        let route = RouteLabels { route: self.route };
        m.requests
            .get_or_create(&RequestLabels {
                route: self.route,
                method: crate::metrics::method_label(&self.method),
                status: self.status.as_u16(),
            })
            .inc();
        m.latency
            .get_or_create(&route)
            .observe(elapsed.as_secs_f64());
        m.received.get_or_create(&route).inc_by(received);
        m.sent.get_or_create(&route).inc_by(sent);
        let error = self.error.as_ref().map(|e| e.0.as_str());
        // Whole microseconds, so the log shows 0.346, not 0.34536799999999995.
        let ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
        if self.status.is_server_error() {
            tracing::error!(method = %self.method, path = %self.path, status = self.status.as_u16(),
                bytes_in = received, bytes_out = sent, ms, error, "request");
        } else {
            tracing::info!(method = %self.method, path = %self.path, status = self.status.as_u16(),
                bytes_in = received, bytes_out = sent, ms, error, "request");
        }
    }
}

/// A body that counts the data bytes passing through it.
struct Counted {
    inner: Body,
    count: Arc<AtomicU64>,
}

impl Counted {
    fn new(inner: Body, count: Arc<AtomicU64>) -> Counted {
        Counted { inner, count }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body: reports the request when it is dropped, i.e. sent in full or abandoned.
struct Observed {
    inner: Counted,
    sent: Arc<AtomicU64>,
    done: Option<Done>,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done.finish(self.sent.load(Ordering::Relaxed));
        }
    }
}
