//! Hostile input, sent byte for byte over real HTTP: path traversal, oversized and malformed
//! names, digests of the wrong algorithm, length or case, manifests that lie about themselves or
//! reference nothing, deeply nested and malformed JSON, bogus ranges, bodies shorter than their
//! Content-Length. Every request must get a 4xx with an OCI error body; none may get a 5xx or
//! crash the server; none may leave data behind.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use registry::App;
use storage::{FsBackend, Store};
use testkit::image::{Image, OCI_MANIFEST};

async fn start(dir: &Path) -> SocketAddr {
    let store = Store::new(std::sync::Arc::new(FsBackend::new(dir, false)), 1 << 20);
    let app = registry::router(App::new(store).with_body_timeout(Duration::from_secs(1)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve::serve(
        listener,
        app,
        serve::Limits::new(Duration::from_secs(2)),
        std::future::pending(),
    ));
    addr
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

struct Tally {
    tried: usize,
    client_errors: usize,
}

impl Tally {
    /// Sends, and checks the answer is a 4xx carrying an OCI error code.
    async fn expect_4xx(&mut self, addr: SocketAddr, what: &str, raw: Vec<u8>) {
        let (status, body) = testkit::raw_http(addr, &raw).await;
        self.tried += 1;
        assert!((400..500).contains(&status), "{what}: {status} {body}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what}: not JSON: {body}"));
        assert!(v["errors"][0]["code"].is_string(), "{what}: {body}");
        self.client_errors += 1;
    }
}

/// Every file under `dir`, relative.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn hostile_requests_get_4xx_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path()).await;
    let mut t = Tally {
        tried: 0,
        client_errors: 0,
    };
    let image = Image::new(9, &[2000], "amd64");
    let layer = &image.layers[0];
    let sha = layer.digest.clone();
    let hex = sha.trim_start_matches("sha256:").to_owned();

    // Names: traversal, encodings, absolute paths, NUL, case, length.
    for path in [
        "/v2/../../etc/passwd/manifests/latest",
        "/v2/%2e%2e/%2e%2e/etc/manifests/latest",
        "/v2/a/%2E%2E/b/manifests/latest",
        "/v2/a/..%2fb/tags/list",
        "/v2//absolute/manifests/latest",
        "/v2/%2fetc/manifests/latest",
        "/v2/a%00b/manifests/latest",
        "/v2/UPPER/manifests/latest",
        "/v2/a//b/manifests/latest",
        "/v2/-lead/manifests/latest",
        "/v2/a/manifests/..",
        "/v2/a/manifests/%2e%2e%2f%2e%2e",
        "/v2/a/manifests/tag%00x",
    ] {
        t.expect_4xx(addr, path, request("GET", path, &[], b""))
            .await;
        t.expect_4xx(
            addr,
            path,
            request(
                "PUT",
                path,
                &[("Content-Type", OCI_MANIFEST)],
                &image.manifest.data,
            ),
        )
        .await;
    }
    let long_component = format!("/v2/{}/manifests/latest", "a".repeat(300));
    let long_path = format!("/v2/{}/tags/list", vec!["abc"; 1500].join("/"));
    let long_tag = format!("/v2/ok/manifests/{}", "t".repeat(200));
    for path in [&long_component, &long_path, &long_tag] {
        t.expect_4xx(addr, "oversized name", request("GET", path, &[], b""))
            .await;
    }

    // Digests of the wrong algorithm, length or case.
    for digest in [
        format!("md5:{}", &hex[..32]),
        format!("sha256:{}", &hex[..10]),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha512:{hex}"),
        format!("sha256:{}", "g".repeat(64)),
        format!("sha256:{hex}00"),
        "sha256".to_owned(),
        ":".to_owned(),
    ] {
        t.expect_4xx(
            addr,
            &digest,
            request("GET", &format!("/v2/ok/blobs/{digest}"), &[], b""),
        )
        .await;
        t.expect_4xx(
            addr,
            &digest,
            request(
                "POST",
                &format!("/v2/ok/blobs/uploads/?digest={digest}"),
                &[],
                &layer.data,
            ),
        )
        .await;
    }
    // A body that does not hash to its digest.
    let wrong = format!("/v2/ok/blobs/uploads/?digest=sha256:{}", "0".repeat(64));
    t.expect_4xx(
        addr,
        "digest mismatch",
        request("POST", &wrong, &[], b"not the content"),
    )
    .await;

    // Manifests: lying media type, missing blobs, malformed and deeply nested JSON, too big.
    let index_type = "application/vnd.oci.image.index.v1+json";
    let missing_blobs = request(
        "PUT",
        "/v2/ok/manifests/v1",
        &[("Content-Type", OCI_MANIFEST)],
        &image.manifest.data,
    );
    t.expect_4xx(addr, "manifest with missing blobs", missing_blobs)
        .await;
    let nested = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let bodies: Vec<(&str, &str, Vec<u8>)> = vec![
        ("index type, manifest body", index_type, image.manifest.data.clone()),
        ("malformed JSON", OCI_MANIFEST, b"{\"schemaVersion\": 2, \"layers\": [".to_vec()),
        ("not JSON", OCI_MANIFEST, vec![0xff, 0xfe, 0x00, 0x01]),
        ("deeply nested JSON", OCI_MANIFEST, nested.into_bytes()),
        ("wrong schemaVersion", OCI_MANIFEST, br#"{"schemaVersion":1,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#.to_vec()),
        ("descriptor with a bad digest", OCI_MANIFEST, br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:zz","size":1},"layers":[]}"#.to_vec()),
        ("negative size", OCI_MANIFEST, format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"x","digest":"{sha}","size":-5}},"layers":[]}}"#).into_bytes()),
        ("too big", OCI_MANIFEST, vec![b' '; 2 << 20]),
        ("unknown media type", "text/plain", image.manifest.data.clone()),
    ];
    for (what, media_type, body) in bodies {
        t.expect_4xx(
            addr,
            what,
            request(
                "PUT",
                "/v2/ok/manifests/v1",
                &[("Content-Type", media_type)],
                &body,
            ),
        )
        .await;
    }

    // Ranges and Content-Ranges that make no sense.
    let start_upload = request("POST", "/v2/ok/blobs/uploads/", &[], b"");
    let (status, _) = testkit::raw_http(addr, &start_upload).await;
    assert_eq!(status, 202);
    for range in [
        "bytes=abc",
        "5-2",
        "0-99999999999999999999999",
        "100-199",
        "-1",
        "bytes 0-9/10",
    ] {
        let path = "/v2/ok/blobs/uploads/00000000-0000-4000-8000-000000000000";
        t.expect_4xx(
            addr,
            range,
            request("PATCH", path, &[("Content-Range", range)], b"0123456789"),
        )
        .await;
    }
    for path in [
        "/v2/ok/blobs/uploads/not-a-uuid",
        "/v2/ok/blobs/uploads/../../x",
    ] {
        t.expect_4xx(addr, path, request("PATCH", path, &[], b"x"))
            .await;
    }
    for query in ["?n=-1", "?n=abc", "?n=99999999999999999999999"] {
        t.expect_4xx(
            addr,
            query,
            request("GET", &format!("/v2/ok/tags/list{query}"), &[], b""),
        )
        .await;
        t.expect_4xx(
            addr,
            query,
            request("GET", &format!("/v2/_catalog{query}"), &[], b""),
        )
        .await;
    }
    // A blob that exists, asked for with impossible ranges.
    let push = request(
        "POST",
        &format!("/v2/ok/blobs/uploads/?digest={sha}"),
        &[],
        &layer.data,
    );
    assert_eq!(testkit::raw_http(addr, &push).await.0, 201);
    for range in [
        "bytes=10-5",
        "bytes=999999-",
        "bytes=a-b",
        "bytes=0-1,5-6",
        "lines=0-1",
    ] {
        t.expect_4xx(
            addr,
            range,
            request(
                "GET",
                &format!("/v2/ok/blobs/{sha}"),
                &[("Range", range)],
                b"",
            ),
        )
        .await;
    }

    // A body shorter than its Content-Length: the connection is cut after the body timeout, or
    // the request is refused; either way nothing is stored and the server still serves.
    let mut short = request(
        "POST",
        &format!("/v2/ok/blobs/uploads/?digest=sha256:{}", "1".repeat(64)),
        &[("Content-Length", "1000000")],
        b"",
    );
    short.extend_from_slice(b"only a little");
    let (status, _) = testkit::raw_http(addr, &short).await;
    t.tried += 1;
    assert!(
        status == 0 || (400..500).contains(&status),
        "short body: {status}"
    );

    let (status, _) = testkit::raw_http(addr, &request("GET", "/v2/", &[], b"")).await;
    assert_eq!(status, 200, "still serving");
    // Only the one legitimate blob (with its in-use marker, and the open upload session) exist.
    let stored = files(dir.path());
    let blobs: Vec<&String> = stored
        .iter()
        .filter(|f| f.contains("/blobs/") && !f.ends_with("/data.quayside-used"))
        .collect();
    assert_eq!(blobs.len(), 1, "{stored:#?}");
    assert!(blobs[0].contains(&hex));
    let repos: std::collections::BTreeSet<&str> = stored
        .iter()
        .filter_map(|f| f.split("/repositories/").nth(1)?.split("/_").next())
        .collect();
    assert_eq!(repos.into_iter().collect::<Vec<_>>(), ["ok"], "{stored:#?}");
    println!(
        "hostile corpus: {} requests, {} answered 4xx with an OCI error, 0 5xx",
        t.tried, t.client_errors
    );
}

#[tokio::test]
async fn oversized_headers_get_431_with_an_oci_error_body() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path()).await;
    let names: Vec<String> = (0..150).map(|i| format!("x-field-{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let big = "v".repeat(800);
    let wide: Vec<(&str, &str)> = names[..90]
        .iter()
        .map(|n| (n.as_str(), big.as_str()))
        .collect();
    for (what, headers) in [("150 fields", &many), ("90 fields of 800 bytes", &wide)] {
        let (status, body) = testkit::raw_http(addr, &request("GET", "/v2/", headers, b"")).await;
        assert_eq!(status, 431, "{what}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "UNSUPPORTED", "{what}");
        let message = v["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("at most 100 fields and 64 KiB"),
            "{message}"
        );
    }
    // Within the limits (97 of the client's own plus Host, Connection, Content-Length): served.
    let (status, _) = testkit::raw_http(addr, &request("GET", "/v2/", &many[..97], b"")).await;
    assert_eq!(status, 200);
    let (status, _) = testkit::raw_http(addr, &request("GET", "/v2/", &[], b"")).await;
    assert_eq!(status, 200, "still serving");
}
