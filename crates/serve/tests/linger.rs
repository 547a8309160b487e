//! A request refused before its body was read: the server answers and closes, and the client,
//! still sending the body, must get to read that answer. Closing with the body unread would make
//! the kernel reset the connection, and the client would see a broken pipe instead.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::put;

mod support;

#[tokio::test]
async fn a_client_still_sending_a_refused_body_reads_the_refusal() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Refused before any of the body is read, and after a part of it.
    let router = Router::new()
        .route(
            "/upload/0",
            put(|| async { (StatusCode::CONFLICT, [(header::CONNECTION, "close")], "no") }),
        )
        .route(
            "/upload/1",
            put(|body: axum::body::Body| async move {
                let mut stream = body.into_data_stream();
                let mut read = 0;
                while read < 1 << 20 {
                    read += futures_util::StreamExt::next(&mut stream)
                        .await
                        .unwrap()
                        .unwrap()
                        .len();
                }
                (StatusCode::CONFLICT, [(header::CONNECTION, "close")], "no")
            }),
        );
    let addr = support::serve_router(router).await;
    let client = reqwest::Client::new();
    let body = vec![7u8; 8 << 20];
    for round in 0..20 {
        let response = client
            .put(format!("http://{addr}/upload/{}", round % 2))
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(response.status(), reqwest::StatusCode::CONFLICT);
    }
}

#[tokio::test]
async fn a_refused_body_sent_after_the_answer_is_discarded_not_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let router = Router::new().route(
        "/upload",
        put(|| async { (StatusCode::CONFLICT, [(header::CONNECTION, "close")], "no") }),
    );
    let addr = support::serve_router(router).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let len = 4 << 20;
    let head = format!("PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![1u8; 64 * 1024]).await.unwrap();
    // Meanwhile the server answers and closes its side, the rest of the body still unread.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream
        .write_all(&vec![1u8; len - 64 * 1024])
        .await
        .expect("the rest of the body is taken, not reset");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
}
