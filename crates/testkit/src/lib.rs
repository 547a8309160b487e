//! Test support shared by every crate's tests: a registry served in-process on a real loopback
//! listener, the `quayside` binary run as a child process (its address read from its own log, so
//! no port is ever guessed; moto says which port it bound too), and real OCI images (tar layers)
//! written as OCI layouts on disk. Only distribution, which cannot report a port, is started on
//! one found free, and on another when that one turns out taken.
//!
//! `tar` builds real layer archives, so that containerd can unpack what the tests push;
//! `serde-saphyr` reads helm's multi-document output (the YAML crate `access` already uses).

pub mod chart;
pub mod gcs;
pub mod image;
pub mod kube;
pub mod oauth;
pub mod process;
pub mod tools;

use std::net::SocketAddr;
use std::sync::Arc;

use secrets::Secret;
use storage::{Backend, FsBackend, Store};
use tempfile::TempDir;

/// Installs the process-wide rustls provider (ring) once; reqwest and object_store need it.
pub fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP client for tests (plain HTTP to loopback).
pub fn http_client() -> reqwest::Client {
    http_client_builder().build().expect("HTTP client")
}

/// A builder for tests that need other settings (timeouts); the TLS provider is installed first.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    install_crypto();
    reqwest::Client::builder()
}

/// Which storage a test server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Fs,
    /// The moto S3 server that the test command starts (`QUAYSIDE_TEST_S3_ENDPOINT`).
    S3,
    /// The Azurite server that the test command starts (`QUAYSIDE_TEST_AZURE_ENDPOINT`).
    Azure,
    /// An in-process fake of GCS's XML API ([`gcs::FakeGcs`]), one per server.
    Gcs,
}

/// Azurite's well-known development account and key (public, documented by Microsoft).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The blob endpoint of the Azurite server the test command started.
pub fn azure_endpoint() -> String {
    std::env::var("QUAYSIDE_TEST_AZURE_ENDPOINT").unwrap_or_else(|_| {
        panic!("QUAYSIDE_TEST_AZURE_ENDPOINT is not set: run the tests with scripts/test.sh, which starts Azurite")
    })
}

/// How tests open storage: production's [`storage::open`] with no fsync, a 1 MiB S3 copy limit
/// (S3's is 5 GiB), so that blobs over 1 MiB take the streamed copy and smaller ones the
/// server-side copy, both within the suite, and a 5 s read timeout with 5 retries in a minute,
/// so one slow answer from an emulator under the whole suite is retried rather than fatal.
pub fn storage_options() -> storage::Options {
    storage::Options {
        fsync: false,
        direct_io: true,
        retry: object_store::RetryConfig {
            max_retries: 5,
            retry_timeout: std::time::Duration::from_secs(60),
            ..Default::default()
        },
        s3_copy_limit: 1 << 20,
        read_timeout: std::time::Duration::from_secs(5),
    }
}

/// Opens `settings` as the registry does (bucket or container created), with test options.
pub async fn open_storage(settings: &storage::Settings) -> Arc<dyn Backend> {
    install_crypto();
    storage::open(settings, &storage_options())
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", settings.describe()))
}

/// The backend for `container` (created if missing) on the test Azurite server.
pub async fn azure_backend_in(container: &str) -> Arc<dyn Backend> {
    open_storage(&storage::Settings::Azure {
        account: AZURITE_ACCOUNT.to_owned(),
        key: Secret::new(AZURITE_KEY),
        container: container.to_owned(),
        endpoint: Some(azure_endpoint()),
        root: String::new(),
    })
    .await
}

/// The S3 endpoint of the moto server the test command started. Tests fail without it rather
/// than skip: run them through `scripts/test.sh`.
pub fn s3_endpoint() -> String {
    std::env::var("QUAYSIDE_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!("QUAYSIDE_TEST_S3_ENDPOINT is not set: run the tests with scripts/test.sh, which starts moto")
    })
}

/// A fresh bucket (created by provisioning, as the registry creates it) on the test S3 server,
/// with static credentials and a loopback endpoint, so nothing falls back to instance metadata.
pub async fn s3_backend() -> Arc<dyn Backend> {
    open_storage(&storage::Settings::S3 {
        bucket: format!("t-{}", uuid::Uuid::new_v4()),
        region: "us-east-1".to_owned(),
        endpoint: Some(s3_endpoint()),
        access_key: Some(Secret::new("test")),
        secret_key: Some(Secret::new("test")),
        path_style: true,
        root: String::new(),
    })
    .await
}

/// The registry's warnings and errors (a 5xx's cause, a storage retry) in the captured output
/// of the test that caused them, which libtest shows only when that test fails.
fn log_warnings_to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .try_init();
}

/// An endpoint on 127.0.0.1 that accepts every connection and never answers (a store, a
/// registry or an issuer that hangs); it stops when dropped.
pub struct SilentServer {
    pub addr: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl SilentServer {
    pub async fn start() -> SilentServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        SilentServer { addr, accepting }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// A registry served in-process over real HTTP on 127.0.0.1.
pub struct Server {
    pub addr: SocketAddr,
    /// The storage it serves from, for tests that look behind the API.
    pub backend: Arc<dyn Backend>,
    _dir: Option<TempDir>,
    stop: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Server {
    pub async fn start(kind: Kind) -> Server {
        Server::start_with(kind, 4 * 1024 * 1024).await
    }

    pub async fn start_with(kind: Kind, max_manifest: u64) -> Server {
        Server::start_app(kind, max_manifest, |app| app).await
    }

    /// A registry whose [`registry::App`] `configure` finishes (access control, a mirror).
    pub async fn start_app(
        kind: Kind,
        max_manifest: u64,
        configure: impl FnOnce(registry::App) -> registry::App,
    ) -> Server {
        log_warnings_to_test_output();
        let (backend, dir): (Arc<dyn Backend>, _) = match kind {
            Kind::Fs => {
                let dir = tempfile::tempdir().expect("tempdir");
                (Arc::new(FsBackend::new(dir.path(), false)), Some(dir))
            }
            Kind::S3 => (s3_backend().await, None),
            Kind::Azure => {
                let container = format!("t-{}", uuid::Uuid::new_v4());
                (azure_backend_in(&container).await, None)
            }
            Kind::Gcs => {
                let fake = gcs::FakeGcs::start().await;
                let key = tempfile::NamedTempFile::new().expect("key file");
                std::fs::write(key.path(), fake.key_json()).expect("write key");
                let settings = storage::Settings::Gcs {
                    bucket: "registry".to_owned(),
                    key_file: key.path().to_owned(),
                    root: String::new(),
                };
                (open_storage(&settings).await, None)
            }
        };
        // An hour: the API suite then proves every change through the store voids the
        // resolutions it made stale (nothing else would make a GET see it).
        let store = Store::new(backend.clone(), max_manifest)
            .with_resolution_ttl(std::time::Duration::from_secs(3600));
        let app = registry::router(configure(registry::App::new(store)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            axum_serve(listener, app, async {
                let _ = stopped.await;
            })
            .await
        });
        Server {
            addr,
            backend,
            _dir: dir,
            stop: Some((stop, serving)),
        }
    }

    /// Stops serving (connections drained, the port closed), as an upstream going down.
    pub async fn stop(&mut self) {
        if let Some((stop, serving)) = self.stop.take() {
            let _ = stop.send(());
            let _ = serving.await;
        }
    }

    /// Pushes `data` into repository `name` in one request (monolithic POST); its digest.
    pub async fn push_blob(&self, name: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let resp = http_client()
            .post(self.url(&format!("/v2/{name}/blobs/uploads/?digest={digest}")))
            .body(data.to_vec())
            .send()
            .await
            .expect("blob push reaches the registry");
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
        digest
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn axum_serve(
    listener: tokio::net::TcpListener,
    app: registry::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let timeout = std::time::Duration::from_secs(30);
    let limits = serve::Limits::new(timeout);
    let _ = serve::serve(listener, app, limits, shutdown).await;
}

/// A Kubernetes Secret as the kubelet mounts it: one file per key, in a new directory.
pub fn secret_dir(keys: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (key, value) in keys {
        std::fs::write(dir.path().join(key), value).expect("write a secret key");
    }
    dir
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(data: &[u8]) -> String {
    oci::Digest::of(oci::Algorithm::Sha256, data).to_string()
}

/// Deterministic pseudo-random bytes (xorshift), so content is incompressible but reproducible.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sends `request` (a whole HTTP/1.1 request, head and body) byte for byte, so paths reach the
/// server exactly as written (URL libraries resolve `%2e%2e` before sending). Returns the status
/// and the body.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(request).await.expect("write request");
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await.expect("read response");
    parse_response(&String::from_utf8_lossy(&out))
}

/// Status and body of a raw HTTP/1.1 response read to its end.
fn parse_response(text: &str) -> (u16, String) {
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A blocking `GET` for synchronous tests; returns the status and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path)
}

/// A blocking request without a body; returns the status and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    conn.read_to_string(&mut out).expect("read");
    parse_response(&out)
}
