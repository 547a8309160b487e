//! The HTTP accept loop every Quayside server uses: an axum router on hyper's HTTP/1 and HTTP/2
//! server, with the limits a server shared by every app and node needs and `axum::serve` does not
//! set:
//! - a timeout on reading request headers (a client trickling headers would hold its connection);
//! - an inactivity deadline on every connection ([`deadline`]): one that sends nothing is closed
//!   after `idle_timeout`, and once it has spoken, when no byte moves either way for
//!   `keepalive_timeout` while no request of it is being handled (between keep-alive requests,
//!   or a download whose client stopped reading) — for HTTP/1 and HTTP/2 alike, so a silent or
//!   dead peer costs a timer for a bounded time, never a thread;
//! - at most `max_connections` at once: past it, and when the process runs out of file
//!   descriptors (a spare one is kept to get out of that state), a newcomer is answered 503 with
//!   `Retry-After` and closed, while the connections already open go on being served.
//!
//! It also sets TCP_NODELAY, gives each request the peer's address as axum's `ConnectInfo`, lets
//! HTTP/1 handlers send file and relayed bodies with `sendfile(2)` and `splice(2)` ([`ZeroCopy`]), and on shutdown stops
//! accepting and waits for requests in flight.
//!
//! Dependencies: `hyper-util`'s server builder (HTTP/1 + HTTP/2, timer, graceful shutdown), which
//! is what axum itself uses underneath; `rustix` for the file-descriptor limit, `sendfile`,
//! `splice`, pipes and `fadvise` without `unsafe`; `bytes` and `http-body` for the file body's type.

mod deadline;
mod zero_copy;

pub use zero_copy::{ZeroCopy, ZeroCopyBody};

use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// What a connection may cost.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest time to send one request's headers.
    pub header_timeout: Duration,
    /// Longest time a new connection may send nothing.
    pub idle_timeout: Duration,
    /// Longest time no byte may move on a connection with no request being handled.
    pub keepalive_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Limits {
    /// Defaults for servers whose flags do not set them (the refresher's probes, tests).
    pub fn new(header_timeout: Duration) -> Limits {
        Limits {
            header_timeout,
            idle_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: default_max_connections(),
        }
    }
}

/// Half the soft file-descriptor limit (at least 64): the other half stays for storage files,
/// upstream connections and the accept loop's reserve.
pub fn default_max_connections() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20);
    usize::try_from(soft / 2).unwrap_or(usize::MAX).max(64)
}

/// Serves `router` until `shutdown` resolves, within `limits`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Body chunks reach the stream as the slices the body gave (see `zero_copy`).
        .writev(true)
        // Past hyper's default of 100 fields it answers a bare 431; the router's own, lower
        // limits answer with an error body the client can read.
        .max_headers(1024);
    builder.http2().timer(TokioTimer::new());
    zero_copy::init();
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Held open to be given up when descriptors run out, so one more accept can succeed and
    // the newcomer be told to come back instead of waiting in the backlog.
    let mut spare = reserve();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) if is_out_of_descriptors(&e) => {
                    tracing::warn!(error = %e, "out of file descriptors: refusing a connection");
                    drop(spare.take());
                    if let Ok((stream, _)) = listener.accept().await {
                        tokio::spawn(shed(stream));
                    }
                    spare = reserve();
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(shed(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let zero_copy = ZeroCopy::default();
        let service =
            connection_service(router.clone(), peer, in_flight.clone(), zero_copy.clone());
        let io =
            deadline::Deadline::new(zero_copy::Stream::new(stream, zero_copy), limits, in_flight);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// The router for one connection: each request carries the peer's address (and, on HTTP/1, the
/// connection's [`ZeroCopy`]) and counts as in flight (suspending the connection's inactivity
/// deadline) until its response head is ready.
fn connection_service(
    router: Router,
    peer: std::net::SocketAddr,
    in_flight: Arc<AtomicUsize>,
    zero_copy: ZeroCopy,
) -> impl tower::Service<
    axum::extract::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(
        move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            if req.version() <= http::Version::HTTP_11 {
                req.extensions_mut().insert(zero_copy.clone());
            }
            let (router, guard) = (router.clone(), InFlight::enter(&in_flight));
            async move {
                let response = router.oneshot(req.map(axum::body::Body::new)).await;
                drop(guard);
                response
            }
        },
    )
}

struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Tells a connection over the limit to come back later, without reading from it.
async fn shed(mut stream: TcpStream) {
    let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"too many connections; retry shortly","detail":null}]}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(response.as_bytes()),
    )
    .await;
}

fn reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (process) and ENFILE (system).
    matches!(e.raw_os_error(), Some(24 | 23))
}
