//! `quayside proxy` in front of a real `quayside registry`: real clients through it, the
//! read-only mode, forwarded headers and injected credentials, start-up order, flat memory.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::StatusCode;
use testkit::image::{self, Image};
use testkit::process::Quayside;
use testkit::random_bytes;
use testkit::tools::{Containerd, Skopeo};

const BIN: &str = env!("CARGO_BIN_EXE_quayside");

fn registry() -> (Quayside, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    (Quayside::registry(BIN, data.path(), &[]), data)
}

#[test]
fn clients_push_and_pull_through_the_proxy_and_through_a_read_only_one() {
    let (reg, _data) = registry();
    let proxy = Quayside::proxy(BIN, reg.addr, &[]);
    // The bare switch; the other test gives the value.
    let read_only = Quayside::proxy(BIN, reg.addr, &["--read-only"]);
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let img = Image::new(71, &[2 << 20, 400], "amd64");
    image::write_layout(
        &work.path().join("src"),
        std::slice::from_ref(&img),
        None,
        "v1",
    );
    let src = format!("oci:{}:v1", work.path().join("src").display());

    skopeo.copy(&src, &format!("docker://{}/app:v1", proxy.addr));
    let dst = format!("oci:{}:v1", work.path().join("dst").display());
    skopeo.copy(&format!("docker://{}/app:v1", read_only.addr), &dst);
    image::assert_layout_holds(&work.path().join("dst"), img.all());

    let ctd = Containerd::start();
    ctd.pull(&format!("{}/app:v1", read_only.addr), None);
    assert!(ctd.ctr(&["images", "list"]).contains(&img.manifest.digest));

    // A push through the read-only proxy fails, and nothing reaches the registry.
    let refused = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--dest-tls-verify=false",
            &src,
            &format!("docker://{}/other:v1", read_only.addr),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert_eq!(testkit::http_get(reg.addr, "/v2/other/tags/list").0, 404);
}

#[test]
fn read_only_refuses_writes_and_old_docker_gets_404() {
    let (reg, _data) = registry();
    let proxy = Quayside::proxy(BIN, reg.addr, &["--read-only", "true"]);
    let (status, body) = testkit::http(proxy.addr, "POST", "/v2/app/blobs/uploads/");
    assert_eq!(status, 405);
    assert!(
        body.contains("read-only") && body.contains("UNSUPPORTED"),
        "{body}"
    );
    assert_eq!(
        testkit::http(proxy.addr, "DELETE", "/v2/app/manifests/x").0,
        405
    );
    assert_eq!(testkit::http_get(proxy.addr, "/v2/").0, 200);

    let get_with_agent = |agent: &str| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(proxy.addr).unwrap();
        write!(
            c,
            "GET /v2/ HTTP/1.1\r\nHost: x\r\nUser-Agent: {agent}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out.split_whitespace().nth(1).unwrap().to_owned()
    };
    assert_eq!(get_with_agent("docker/1.5.0 go/go1.4.1"), "404");
    assert_eq!(get_with_agent("Go 1.1 package http"), "404");
    assert_eq!(get_with_agent("Go-http-client/1.1"), "200");
    assert_eq!(get_with_agent("docker/1.6.2 go/go1.4.2"), "200");
}

/// `app` served on a loopback port as the proxy's upstream.
async fn upstream(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// An upstream that answers every request with the headers it received, as JSON.
async fn header_echo() -> SocketAddr {
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        let map: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
            .collect();
        axum::Json(serde_json::Value::Object(map))
    });
    upstream(app).await
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_headers_and_injects_upstream_credentials() {
    let upstream = header_echo().await;
    let proxy = tokio::task::spawn_blocking(move || {
        Quayside::proxy(
            BIN,
            upstream,
            &[
                "--upstream-username",
                "node",
                "--upstream-password",
                "s3cret",
            ],
        )
    })
    .await
    .unwrap();
    let c = testkit::http_client();
    // A blob GET takes the spliced relay, a manifest GET the pooled client: the same headers.
    let blob = format!("/v2/app/blobs/sha256:{}", "a".repeat(64));
    for path in ["/v2/app/manifests/v1", blob.as_str()] {
        let seen: serde_json::Value = c
            .get(proxy.url(path))
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(seen["authorization"], "Basic bm9kZTpzM2NyZXQ=", "{path}");
        assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{path}");
        assert_eq!(seen["x-real-ip"], "127.0.0.1", "{path}");
        assert_eq!(seen["x-forwarded-proto"], "http", "{path}");
        assert_eq!(seen["host"], proxy.addr.to_string().as_str(), "{path}");
        assert!(
            seen.get("x-hop").is_none(),
            "{path}: hop-by-hop header forwarded: {seen}"
        );
    }
    // A client's own credentials win.
    let seen: serde_json::Value = c
        .get(proxy.url("/v2/"))
        .header("authorization", "Bearer mine")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["authorization"], "Bearer mine");
    // The password is in no log line.
    assert!(
        !proxy
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("s3cret"))
    );
}

#[test]
fn waits_for_the_registry_before_listening() {
    let addr = testkit::tools::free_loopback_addr();
    let proxy = std::thread::spawn(move || Quayside::proxy(BIN, addr, &[]));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        !proxy.is_finished(),
        "the proxy listened before the registry answered"
    );
    let data = tempfile::tempdir().unwrap();
    let _reg = Quayside::registry_on(BIN, &addr.to_string(), data.path(), &[]);
    let proxy = proxy.join().unwrap();
    assert_eq!(testkit::http_get(proxy.addr, "/v2/").0, 200);
    assert!(
        proxy
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("waiting for the registry"))
    );
}

#[tokio::test]
async fn a_gib_streams_through_with_flat_memory() {
    let (reg, _data) = registry();
    let proxy = Quayside::proxy(BIN, reg.addr, &[]);
    let chunk = Bytes::from(random_bytes(1 << 20, 3));
    let mut hasher = oci::Hasher::new(oci::Algorithm::Sha256);
    for _ in 0..1024 {
        hasher.update(&chunk);
    }
    let digest = hasher.finish().to_string();
    let body = futures_util::stream::iter((0..1024).map({
        let chunk = chunk.clone();
        move |_| Ok::<_, std::io::Error>(chunk.clone())
    }));
    let c = testkit::http_client();
    let resp = c
        .post(proxy.url(&format!("/v2/big/blobs/uploads/?digest={digest}")))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let mut stream = c
        .get(proxy.url(&format!("/v2/big/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let mut pulled = oci::Hasher::new(oci::Algorithm::Sha256);
    while let Some(part) = stream.next().await {
        pulled.update(&part.unwrap());
    }
    assert_eq!(pulled.finish().to_string(), digest);
    let peak = proxy.peak_rss_kib();
    println!("proxy peak RSS after 1 GiB each way: {peak} KiB");
    assert!(peak < 64 * 1024, "proxy peak RSS {peak} KiB");
}

/// An upstream whose blob answers have no length (chunked), as `quayside registry`'s never do.
async fn chunked_upstream(content: Bytes) -> SocketAddr {
    let app = axum::Router::new().fallback(move || {
        let content = content.clone();
        async move {
            let pieces = content
                .chunks(100_000)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>();
            axum::body::Body::from_stream(futures_util::stream::iter(pieces))
        }
    });
    upstream(app).await
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_answers_of_every_framing_and_clients_of_every_version_get_their_bytes() {
    let content = Bytes::from(random_bytes(3 << 20, 9));
    let upstream = chunked_upstream(content.clone()).await;
    let proxy = tokio::task::spawn_blocking(move || Quayside::proxy(BIN, upstream, &[]))
        .await
        .unwrap();
    let url = proxy.url(&format!("/v2/app/blobs/sha256:{}", "b".repeat(64)));
    let http1 = testkit::http_client();
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for (client, version) in [
        (&http1, reqwest::Version::HTTP_11),
        (&h2c, reqwest::Version::HTTP_2),
    ] {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(
            (response.status(), response.version()),
            (StatusCode::OK, version)
        );
        assert!(response.bytes().await.unwrap() == content, "{version:?}");
    }
}
