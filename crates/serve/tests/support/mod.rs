//! A client that speaks HTTP/1.1 byte by byte, so a test can pipeline, read slowly and see
//! exactly what came.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
#![allow(dead_code)] // each test file uses its own part

use std::time::Duration;

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// `router` served by `serve::serve` on a loopback port, until the test ends.
pub async fn serve_router(router: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = serve::Limits::new(Duration::from_secs(5));
    tokio::spawn(serve::serve(
        listener,
        router,
        limits,
        std::future::pending(),
    ));
    addr
}

pub fn request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// Reads one response: its status and body (by its Content-Length), or what came before the
/// connection ended, with `complete` false.
pub async fn response(stream: &mut TcpStream, pace: Option<Duration>) -> (u16, Vec<u8>, bool) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            return (0, head, false);
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    let mut filled = 0;
    while filled < length {
        let step = if pace.is_some() { 64 * 1024 } else { length };
        let end = (filled + step).min(length);
        match stream.read(&mut body[filled..end]).await {
            Ok(0) | Err(_) => {
                body.truncate(filled);
                return (status, body, false);
            }
            Ok(n) => filled += n,
        }
        if let Some(pace) = pace {
            tokio::time::sleep(pace).await;
        }
    }
    (status, body, true)
}
