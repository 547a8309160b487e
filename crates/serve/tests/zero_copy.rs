//! Bodies sent with sendfile(2) and splice(2) through `serve::serve`, read back over real TCP by
//! a client that speaks HTTP/1.1 byte by byte (so it can pipeline, read slowly and see exactly
//! what came).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

mod support;
use support::{request, response};

const FILE_LEN: usize = 9 * 1024 * 1024 + 12345;

struct Server {
    addr: SocketAddr,
    content: Vec<u8>,
    _dir: tempfile::TempDir,
}

/// Deterministic bytes no two pieces of which are alike (a zeroed or shifted piece shows).
fn content(len: usize) -> Vec<u8> {
    testkit::random_bytes(len, 1)
}

/// `/file/<start>/<end>`: that range of the file as a file body (409 where the connection offers
/// none); `/claim/<len>/<start>/<end>`: the same with `Content-Length: <len>`; `/small`: bytes.
async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    let content = content(FILE_LEN);
    std::fs::write(&path, &content).unwrap();
    let file_response = move |len: Option<u64>, start: u64, end: u64, req: Request| {
        let path = path.clone();
        async move {
            let Some(files) = req.extensions().get::<serve::ZeroCopy>() else {
                return Response::builder()
                    .status(StatusCode::CONFLICT)
                    .body(Body::from("no file bodies on this connection"))
                    .unwrap();
            };
            let file = Arc::new(std::fs::File::open(path).unwrap());
            let body = files.file(file, start..end);
            let body = match len {
                None => Body::new(body),
                Some(_) => Body::new(Unsized(body)),
            };
            Response::builder()
                .header(header::CONTENT_LENGTH, len.unwrap_or(end - start))
                .body(body)
                .unwrap()
        }
    };
    let whole = file_response.clone();
    let router = Router::new()
        .route(
            "/file/{start}/{end}",
            get(move |Path((s, e)): Path<(u64, u64)>, req: Request| whole(None, s, e, req)),
        )
        .route(
            "/claim/{len}/{start}/{end}",
            get(
                move |Path((l, s, e)): Path<(u64, u64, u64)>, req: Request| {
                    file_response(Some(l), s, e, req)
                },
            ),
        )
        .route("/small", get(|| async { "small body" }))
        .route(
            "/relay/{len}/{send}",
            get(|Path((len, send)): Path<(u64, usize)>, req: Request| relay(len, send, req)),
        );
    let addr = support::serve_router(router).await;
    Server {
        addr,
        content,
        _dir: dir,
    }
}

/// `/relay/<len>/<send>`: a body of `len` bytes relayed from a socket whose peer sends the first
/// `send` bytes of `content(len)` and closes; 1000 of them are read before the relay starts.
async fn relay(len: u64, send: usize, req: Request) -> Response {
    let zero_copy = req.extensions().get::<serve::ZeroCopy>().unwrap().clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut peer, _) = listener.accept().await.unwrap();
        let _ = peer.write_all(&content(len as usize)[..send]).await;
    });
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let mut first = vec![0u8; 1000];
    tokio::io::AsyncReadExt::read_exact(&mut socket, &mut first)
        .await
        .unwrap();
    let body = zero_copy.relay(socket, first.into(), len).unwrap();
    Response::builder()
        .header(header::CONTENT_LENGTH, len)
        .body(Body::new(body))
        .unwrap()
}

/// A body that does not say its size, so hyper takes the header's word for it (with an exact
/// size that disagrees, a debug build of hyper panics).
struct Unsized(serve::ZeroCopyBody);

impl http_body::Body for Unsized {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_frame(cx)
    }
}

#[tokio::test]
async fn pipelined_file_and_plain_bodies_on_one_connection_carry_their_own_bytes() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let ranges = [
        (0, FILE_LEN),
        (1, 2),
        (3_000_000, 7_654_321),
        (FILE_LEN - 5, FILE_LEN),
        (0, FILE_LEN),
    ];
    let mut requests = String::new();
    for (start, end) in ranges {
        requests.push_str(&request(&format!("/file/{start}/{end}")));
        requests.push_str(&request("/small"));
    }
    // All at once: hyper reads them as they come and answers in order.
    stream.write_all(requests.as_bytes()).await.unwrap();
    for (start, end) in ranges {
        let (status, body, complete) = response(&mut stream, None).await;
        assert_eq!((status, complete), (200, true), "range {start}..{end}");
        assert!(
            body == server.content[start..end],
            "range {start}..{end}: wrong bytes"
        );
        let (status, body, _) = response(&mut stream, None).await;
        assert_eq!((status, body.as_slice()), (200, &b"small body"[..]));
    }
}

#[tokio::test]
async fn a_slow_reader_with_a_small_window_gets_every_byte() {
    let server = start().await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    let end = 3 * 1024 * 1024;
    stream
        .write_all(request(&format!("/file/100/{end}")).as_bytes())
        .await
        .unwrap();
    let (status, body, complete) = response(&mut stream, Some(Duration::from_millis(2))).await;
    assert_eq!((status, complete), (200, true));
    assert!(body == server.content[100..end], "wrong bytes");
}

#[tokio::test]
async fn a_body_cut_short_by_its_content_length_lends_nothing_to_the_next_response() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // hyper sends only the 1000 bytes the header promises of a 3 MiB piece.
    let cut = request("/claim/1000/0/3145728") + &request("/file/5000000/5000100");
    stream.write_all(cut.as_bytes()).await.unwrap();
    let (status, body, complete) = response(&mut stream, None).await;
    assert_eq!((status, complete), (200, true));
    assert!(body == server.content[..1000]);
    // The next response has its own bytes, or none at all if hyper gave up the connection:
    // never the rest of the piece before it.
    let (status, body, complete) = response(&mut stream, None).await;
    if status != 0 {
        assert_eq!((status, complete), (200, true));
        assert!(body == server.content[5_000_000..5_000_100], "wrong bytes");
    }
}

#[tokio::test]
async fn a_file_shorter_than_promised_ends_the_connection_instead_of_padding() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let past = FILE_LEN + 4096;
    stream
        .write_all(request(&format!("/file/0/{past}")).as_bytes())
        .await
        .unwrap();
    let (status, body, complete) = response(&mut stream, None).await;
    assert_eq!((status, complete), (200, false));
    assert!(body.len() <= FILE_LEN);
    assert!(body == server.content[..body.len()], "wrong bytes");
}

#[tokio::test]
async fn http2_requests_get_no_file_bodies() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = start().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = format!("http://{}/file/0/10", server.addr);
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), reqwest::StatusCode::CONFLICT);
    let response = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(response.bytes().await.unwrap() == server.content[..10]);
}

#[tokio::test]
async fn a_relayed_socket_reaches_a_slow_reader_whole_and_in_order() {
    let server = start().await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    let len = 5 * 1024 * 1024 + 7;
    let requests = request(&format!("/relay/{len}/{len}")) + &request("/small");
    stream.write_all(requests.as_bytes()).await.unwrap();
    let (status, body, complete) = response(&mut stream, Some(Duration::from_millis(1))).await;
    assert_eq!((status, complete), (200, true));
    assert!(body == content(len), "wrong bytes");
    let (status, body, _) = response(&mut stream, None).await;
    assert_eq!((status, body.as_slice()), (200, &b"small body"[..]));
}

#[tokio::test]
async fn a_relayed_socket_that_ends_early_ends_the_connection_instead_of_padding() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let (len, sent) = (3 * 1024 * 1024, 2 * 1024 * 1024 + 5);
    stream
        .write_all(request(&format!("/relay/{len}/{sent}")).as_bytes())
        .await
        .unwrap();
    let (status, body, complete) = response(&mut stream, None).await;
    assert_eq!((status, complete, body.len()), (200, false, sent));
    assert!(body == content(len)[..sent], "wrong bytes");
}
