//! Test support shared by every crate's tests: a registry served in-process on a real loopback
//! listener, the `quayside` binary run as a child process (its address read from its own log, so
//! no port is ever guessed), and real OCI images (tar layers) written as OCI layouts on disk.
//!
//! `tar` builds real layer archives, so that containerd can unpack what the tests push.

pub mod image;
pub mod process;
pub mod tools;

use std::net::SocketAddr;
use std::sync::Arc;

use storage::{FsBackend, Store};
use tempfile::TempDir;

/// A registry served in-process over real HTTP on 127.0.0.1, with its data in a temporary directory.
pub struct Server {
    pub addr: SocketAddr,
    pub dir: TempDir,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(4 * 1024 * 1024).await
    }

    pub async fn start_with(max_manifest: u64) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(Arc::new(FsBackend::new(dir.path(), false)), max_manifest);
        let app = registry::router(registry::App::new(store));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move { axum_serve(listener, app).await });
        Server { addr, dir }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn axum_serve(listener: tokio::net::TcpListener, app: registry::Router) {
    let _ = registry::serve(listener, app, std::future::pending()).await;
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
    let text = String::from_utf8_lossy(&out).into_owned();
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
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    conn.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
