//! Storage whose files `sendfile(2)` cannot send: the first download fails (its connection
//! closes before the promised bytes), and from then on handlers are told to use another way.
//! Its own test binary, as the refusal is remembered for the whole process.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

mod support;
use support::{request, response};

#[tokio::test]
async fn a_refused_file_fails_its_download_and_turns_file_bodies_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let router = Router::new().route(
        "/file",
        get(move |req: Request| {
            let path = path.clone();
            async move {
                let files = req.extensions().get::<serve::ZeroCopy>().unwrap();
                if !files.available() {
                    return (StatusCode::CONFLICT, "no file bodies").into_response();
                }
                // A directory opens as a file but cannot be spliced: sendfile says EINVAL.
                let file = Arc::new(std::fs::File::open(path).unwrap());
                Response::builder()
                    .header(header::CONTENT_LENGTH, 1000)
                    .body(Body::new(files.file(file, 0..1000)))
                    .unwrap()
            }
        }),
    );
    let addr = support::serve_router(router).await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request("/file").as_bytes()).await.unwrap();
    let (status, body, complete) = response(&mut stream, None).await;
    assert_eq!((status, complete, body.len()), (200, false, 0));

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request("/file").as_bytes()).await.unwrap();
    let (status, _, complete) = response(&mut stream, None).await;
    assert_eq!((status, complete), (409, true));
}
