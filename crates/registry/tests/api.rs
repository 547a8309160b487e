#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
//! The registry's HTTP API over a real loopback listener: every endpoint of the distribution spec
//! and its error cases, run once per storage backend: the filesystem, S3 on the moto server and
//! Azure Blob on the Azurite server that the test command starts, and GCS on an in-process fake
//! of its XML API (no GCS emulator that speaks it runs here).

use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};
use testkit::image::{Blob, Image, OCI_INDEX, OCI_MANIFEST};
use testkit::{Kind, Server, random_bytes, sha256};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

fn client() -> Client {
    testkit::http_client()
}

/// The OCI error code of an error response, after checking its shape.
async fn code(resp: Response) -> String {
    let body: Value = resp.json().await.expect("error body is JSON");
    let err = &body["errors"][0];
    assert!(err["message"].is_string(), "message missing in {body}");
    err["code"].as_str().expect("code").to_owned()
}

async fn expect_error(resp: Response, status: StatusCode, want: &str) {
    assert_eq!(resp.status(), status, "for {}", resp.url());
    assert_eq!(code(resp).await, want);
}

async fn put_manifest(
    s: &Server,
    name: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Response {
    client()
        .put(s.url(&format!("/v2/{name}/manifests/{reference}")))
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

async fn push_image(s: &Server, name: &str, img: &Image, tag: &str) {
    for b in img.blobs() {
        s.push_blob(name, &b.data).await;
    }
    let resp = put_manifest(s, name, tag, OCI_MANIFEST, &img.manifest.data).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
}

async fn start_upload(s: &Server, name: &str) -> String {
    let resp = client()
        .post(s.url(&format!("/v2/{name}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["range"], "0-0");
    assert!(resp.headers().contains_key("docker-upload-uuid"));
    resp.headers()["location"].to_str().unwrap().to_owned()
}

async fn base_endpoint(kind: Kind) {
    let s = Server::start(kind).await;
    let resp = client().get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert_eq!(resp.text().await.unwrap(), "{}");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            client().get(s.url(path)).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
}

async fn monolithic_push_and_pull(kind: Kind) {
    let s = Server::start(kind).await;
    let data = random_bytes(100_000, 1);
    let digest = s.push_blob("a/b/c", &data).await;
    let resp = client()
        .get(s.url(&format!("/v2/a/b/c/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(resp.headers()["accept-ranges"], "bytes");
    assert_eq!(resp.bytes().await.unwrap(), data);
    let head = client()
        .head(s.url(&format!("/v2/a/b/c/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "100000");
    // Another repository does not link it.
    let other = client()
        .get(s.url(&format!("/v2/other/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    expect_error(other, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

/// Larger than two 8 MiB parts: multipart uploads on object stores, and on S3 (1 MiB copy limit
/// in the tests) a multi-part streamed copy at commit.
async fn large_blob_round_trip(kind: Kind) {
    let s = Server::start(kind).await;
    let data = random_bytes(20 << 20, 21);
    let digest = s.push_blob("big/one", &data).await;
    let got = client()
        .get(s.url(&format!("/v2/big/one/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.headers()["content-length"],
        (20u64 << 20).to_string().as_str()
    );
    assert!(got.bytes().await.unwrap() == data, "content differs");
}

async fn wrong_digest_is_refused_and_leaves_nothing(kind: Kind) {
    let s = Server::start(kind).await;
    let wrong = sha256(b"something else");
    let resp = client()
        .post(s.url(&format!("/v2/r/blobs/uploads/?digest={wrong}")))
        .body("actual content")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let get = client()
        .head(s.url(&format!("/v2/r/blobs/{wrong}")))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::NOT_FOUND);
    let blobs = s.backend.list("docker/registry/v2/blobs").await.unwrap();
    assert!(blobs.is_empty(), "left behind: {blobs:?}");
}

async fn post_then_put(kind: Kind) {
    let s = Server::start(kind).await;
    let location = start_upload(&s, "r").await;
    let data = random_bytes(5000, 2);
    let digest = sha256(&data);
    let resp = client()
        .put(s.url(&format!("{location}?digest={digest}")))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.headers()["location"],
        format!("/v2/r/blobs/{digest}").as_str()
    );
    let got = client()
        .get(s.url(&format!("/v2/r/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap(), data);
}

async fn chunked_upload_with_ranges_status_and_out_of_order_chunk(kind: Kind) {
    let s = Server::start(kind).await;
    let location = start_upload(&s, "r").await;
    let data = random_bytes(30_000, 3);
    let patch = |range: &str, body: Vec<u8>| {
        client()
            .patch(s.url(&location))
            .header("content-range", range)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
    };
    let resp = patch("0-9999", data[..10_000].to_vec()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["range"], "0-9999");
    // A chunk that does not start at the end: 416 and where the upload is.
    let resp = patch("20000-29999", data[20_000..].to_vec()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(resp.headers()["range"], "0-9999");
    assert_eq!(code(resp).await, "RANGE_INVALID");
    let resp = patch("10000-19999", data[10_000..20_000].to_vec())
        .await
        .unwrap();
    assert_eq!(resp.headers()["range"], "0-19999");
    let status = client().get(s.url(&location)).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(status.headers()["range"], "0-19999");
    // Declared range and length disagree.
    let resp = client()
        .patch(s.url(&location))
        .header("content-range", "20000-20009")
        .body(vec![0u8; 5])
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "SIZE_INVALID").await;
    let digest = sha256(&data);
    let resp = patch("20000-29999", data[20_000..].to_vec()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = client()
        .put(s.url(&format!("{location}?digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let got = client()
        .get(s.url(&format!("/v2/r/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap(), data);
    // The session is gone.
    let gone = client().get(s.url(&location)).send().await.unwrap();
    expect_error(gone, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}

async fn streamed_patch_without_content_range(kind: Kind) {
    let s = Server::start(kind).await;
    let location = start_upload(&s, "r").await;
    let data = random_bytes(3 << 20, 4);
    for part in data.chunks(1 << 20) {
        let stream = futures_util::stream::iter(
            part.chunks(4096)
                .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                .collect::<Vec<_>>(),
        );
        let resp = client()
            .patch(s.url(&location))
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::ACCEPTED,
            "{:?}",
            resp.text().await
        );
    }
    let digest = sha256(&data);
    let resp = client()
        .put(s.url(&format!("{location}?digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

async fn cancel_upload(kind: Kind) {
    let s = Server::start(kind).await;
    let location = start_upload(&s, "r").await;
    let resp = client().delete(s.url(&location)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = client().get(s.url(&location)).send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = client().delete(s.url(&location)).send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let bogus = client()
        .get(s.url("/v2/r/blobs/uploads/not-a-uuid"))
        .send()
        .await
        .unwrap();
    expect_error(bogus, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}

async fn cross_repository_mount(kind: Kind) {
    let s = Server::start(kind).await;
    let digest = s.push_blob("src", b"shared layer").await;
    let resp = client()
        .post(s.url(&format!("/v2/dst/blobs/uploads/?mount={digest}&from=src")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
    let got = client()
        .get(s.url(&format!("/v2/dst/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"shared layer");
    // From a repository without it, or without `from`: an ordinary upload starts.
    for query in [
        format!("mount={digest}&from=nothing"),
        format!("mount={digest}"),
    ] {
        let resp = client()
            .post(s.url(&format!("/v2/third/blobs/uploads/?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{query}");
        assert!(resp.headers().contains_key("location"));
    }
}

async fn range_requests(kind: Kind) {
    let s = Server::start(kind).await;
    let data = random_bytes(1000, 5);
    let digest = s.push_blob("r", &data).await;
    let url = s.url(&format!("/v2/r/blobs/{digest}"));
    let resp = client()
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.headers()["content-range"], "bytes 10-19/1000");
    assert_eq!(resp.bytes().await.unwrap(), data[10..20]);
    let resp = client()
        .get(&url)
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap(), data[995..]);
    for bad in ["bytes=1000-", "bytes=5-1", "lines=1-2"] {
        let resp = client()
            .get(&url)
            .header("range", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-range"], "bytes */1000");
        expect_error(resp, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;
    }
}

async fn sha512_blobs(kind: Kind) {
    let s = Server::start(kind).await;
    let data = random_bytes(70_000, 6);
    let digest = oci::Digest::of(oci::Algorithm::Sha512, &data).to_string();
    // Monolithic.
    let resp = client()
        .post(s.url(&format!("/v2/r/blobs/uploads/?digest={digest}")))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // Chunked: the streaming hash is sha256, the final PUT asks for sha512.
    let location = start_upload(&s, "q").await;
    client()
        .patch(s.url(&location))
        .body(data[..100].to_vec())
        .send()
        .await
        .unwrap();
    let resp = client()
        .put(s.url(&format!("{location}?digest={digest}")))
        .body(data[100..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let got = client()
        .get(s.url(&format!("/v2/q/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(got.bytes().await.unwrap(), data);
}

/// Answers real clients and the conformance tests expect (issue #12): a GET of a name that is no
/// tag is 404, a last chunk at the wrong offset is 416 and keeps the session, a wrong sha512
/// digest is 400 like sha256, and non-distributable layers need not be in the registry.
async fn spec_answers_for_edge_cases(kind: Kind) {
    let s = Server::start(kind).await;
    for method in [Method::GET, Method::HEAD] {
        let resp = client()
            .request(
                method.clone(),
                s.url("/v2/edge/manifests/.INVALID_MANIFEST_NAME"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{method}");
        if method == Method::GET {
            assert_eq!(code(resp).await, "MANIFEST_UNKNOWN");
        }
    }
    let resp = put_manifest(&s, "edge", ".INVALID_MANIFEST_NAME", OCI_MANIFEST, b"{}").await;
    expect_error(resp, StatusCode::BAD_REQUEST, "TAG_INVALID").await;

    // A last chunk that does not start where the upload ends: 416 with the Range, session kept.
    let data = random_bytes(200, 31);
    let location = start_upload(&s, "edge").await;
    let resp = client()
        .patch(s.url(&location))
        .header("content-range", "0-99")
        .body(data[..100].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let finish = |range: &'static str, part: Vec<u8>| {
        client()
            .put(s.url(&format!("{location}?digest={}", sha256(&data))))
            .header("content-range", range)
            .body(part)
            .send()
    };
    let resp = finish("50-149", data[50..150].to_vec()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(resp.headers()["range"], "0-99");
    let status = client().get(s.url(&location)).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(status.headers()["range"], "0-99");
    let resp = finish("100-199", data[100..].to_vec()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    // A chunked upload finished with a wrong sha512 digest.
    let location = start_upload(&s, "edge").await;
    client()
        .patch(s.url(&location))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let wrong = oci::Digest::of(oci::Algorithm::Sha512, b"something else");
    let resp = client()
        .put(s.url(&format!("{location}?digest={wrong}")))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;

    // Non-distributable ("foreign") layers are referenced, not stored.
    let config = s.push_blob("edge", b"{}").await;
    let foreign = |media: &str, seed: u64| {
        json!({"mediaType": media, "digest": sha256(&random_bytes(10, seed)), "size": 10,
               "urls": ["https://example.invalid/layer"]})
    };
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [
            foreign("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", 32),
            foreign("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", 33),
        ],
    })
    .to_string();
    let resp = put_manifest(&s, "edge", "foreign", OCI_MANIFEST, manifest.as_bytes()).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    // An ordinary layer that is missing is still refused.
    let missing = manifest.replace(
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.v1.tar",
    );
    let resp = put_manifest(&s, "edge", "missing", OCI_MANIFEST, missing.as_bytes()).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;

    // Several tags in one PUT by digest, each confirmed with OCI-Tag; each then resolves.
    let digest = sha256(manifest.as_bytes());
    let resp = put_manifest(
        &s,
        "edge",
        &format!("{digest}?tag=one&tag=two"),
        OCI_MANIFEST,
        manifest.as_bytes(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let confirmed: Vec<&str> = resp
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(confirmed, ["one", "two"]);
    for tag in ["one", "two"] {
        let resp = client()
            .head(s.url(&format!("/v2/edge/manifests/{tag}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{tag}");
        assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
    }
    let resp = put_manifest(
        &s,
        "edge",
        &format!("{digest}?tag=.bad"),
        OCI_MANIFEST,
        manifest.as_bytes(),
    )
    .await;
    expect_error(resp, StatusCode::BAD_REQUEST, "TAG_INVALID").await;
}

async fn oci_manifest_by_tag_and_digest(kind: Kind) {
    let s = Server::start(kind).await;
    let img = Image::new(7, &[1000, 2000], "amd64");
    push_image(&s, "app", &img, "v1").await;
    for reference in ["v1", img.manifest.digest.as_str()] {
        let resp = client()
            .get(s.url(&format!("/v2/app/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], OCI_MANIFEST);
        assert_eq!(
            resp.headers()["docker-content-digest"],
            img.manifest.digest.as_str()
        );
        assert_eq!(
            resp.headers()["content-length"],
            img.manifest.data.len().to_string().as_str()
        );
        assert_eq!(resp.bytes().await.unwrap(), img.manifest.data);
        let head = client()
            .head(s.url(&format!("/v2/app/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(
            head.headers()["docker-content-digest"],
            img.manifest.digest.as_str()
        );
    }
    let resp = client()
        .get(s.url("/v2/app/manifests/v2"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}

async fn manifest_put_responses(kind: Kind) {
    let s = Server::start(kind).await;
    let img = Image::new(8, &[100], "amd64");
    for b in img.blobs() {
        s.push_blob("app", &b.data).await;
    }
    let resp = put_manifest(
        &s,
        "app",
        &img.manifest.digest,
        OCI_MANIFEST,
        &img.manifest.data,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.headers()["docker-content-digest"],
        img.manifest.digest.as_str()
    );
    assert_eq!(
        resp.headers()["location"],
        format!("/v2/app/manifests/{}", img.manifest.digest).as_str()
    );
    // By a digest that is not the body's.
    let other = sha256(b"x");
    let resp = put_manifest(&s, "app", &other, OCI_MANIFEST, &img.manifest.data).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // Content-Type and body disagree.
    let resp = put_manifest(&s, "app", "t", OCI_INDEX, &img.manifest.data).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    for garbage in [&b"{"[..], b"[]", b"{\"schemaVersion\":1}", b"null"] {
        let resp = put_manifest(&s, "app", "t", OCI_MANIFEST, garbage).await;
        expect_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    }
    let resp = put_manifest(&s, "app", "bad tag!", OCI_MANIFEST, &img.manifest.data).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "TAG_INVALID").await;
}

async fn manifest_with_missing_blob_is_refused(kind: Kind) {
    let s = Server::start(kind).await;
    let img = Image::new(9, &[100, 200], "amd64");
    s.push_blob("app", &img.config.data).await;
    s.push_blob("app", &img.layers[0].data).await;
    let resp = put_manifest(&s, "app", "v1", OCI_MANIFEST, &img.manifest.data).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    let resp = client()
        .get(s.url("/v2/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

async fn manifest_size_limit(kind: Kind) {
    let s = Server::start_with(kind, 1024).await;
    let big = format!(
        r#"{{"schemaVersion":2,"manifests":[],"annotations":{{"x":"{}"}}}}"#,
        "a".repeat(2000)
    );
    let resp = put_manifest(&s, "app", "v1", OCI_INDEX, big.as_bytes()).await;
    expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID").await;
}

async fn docker_manifest_and_list_and_oci_index(kind: Kind) {
    let s = Server::start(kind).await;
    let amd = Image::new(10, &[100], "amd64");
    let arm = Image::new(11, &[100], "arm64");
    push_image(&s, "multi", &amd, "amd").await;
    push_image(&s, "multi", &arm, "arm").await;
    let index = testkit::image::index(&[amd.clone(), arm.clone()]);
    let resp = put_manifest(&s, "multi", "latest", OCI_INDEX, &index.data).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = client()
        .get(s.url("/v2/multi/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], OCI_INDEX);

    // An index naming a manifest the repository lacks.
    let stray = Image::new(12, &[10], "s390x");
    let bad = testkit::image::index(&[amd.clone(), stray]);
    let resp = put_manifest(&s, "multi", "bad", OCI_INDEX, &bad.data).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;

    // Docker schema 2 manifest and manifest list.
    let docker = json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": amd.config.digest, "size": amd.config.data.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": amd.layers[0].digest, "size": amd.layers[0].data.len()}],
    });
    let docker = Blob::new(serde_json::to_vec(&docker).unwrap());
    let resp = put_manifest(&s, "multi", "docker", DOCKER_MANIFEST, &docker.data).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let list = json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": docker.digest, "size": docker.data.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    });
    let resp = put_manifest(
        &s,
        "multi",
        "list",
        DOCKER_LIST,
        &serde_json::to_vec(&list).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = client()
        .get(s.url("/v2/multi/manifests/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], DOCKER_LIST);
    let resp = client()
        .get(s.url("/v2/multi/manifests/docker"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], DOCKER_MANIFEST);
}

fn artifact(subject: &Image, artifact_type: &str, seed: u8) -> Blob {
    let m = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": sha256(b"{}"), "size": 2},
        "layers": [],
        "subject": subject.manifest.descriptor(OCI_MANIFEST),
        "annotations": {"seed": seed.to_string()},
    });
    Blob::new(serde_json::to_vec(&m).unwrap())
}

async fn referrers(kind: Kind) {
    let s = Server::start(kind).await;
    let img = Image::new(13, &[100], "amd64");
    push_image(&s, "app", &img, "v1").await;
    s.push_blob("app", b"{}").await;
    let sig = artifact(&img, "application/vnd.example.sig", 1);
    let sbom = artifact(&img, "application/vnd.example.sbom", 2);
    for a in [&sig, &sbom] {
        let resp = put_manifest(&s, "app", &a.digest, OCI_MANIFEST, &a.data).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.headers()["oci-subject"], img.manifest.digest.as_str());
    }
    let url = s.url(&format!("/v2/app/referrers/{}", img.manifest.digest));
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], OCI_INDEX);
    assert!(!resp.headers().contains_key("oci-filters-applied"));
    let body: Value = resp.json().await.unwrap();
    let mut found: Vec<&str> = body["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap())
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            "application/vnd.example.sbom",
            "application/vnd.example.sig"
        ]
    );
    let sig_entry = body["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["digest"] == sig.digest.as_str())
        .expect("signature listed");
    assert_eq!(sig_entry["annotations"]["seed"], "1");

    let resp = client()
        .get(format!("{url}?artifactType=application/vnd.example.sig"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["oci-filters-applied"], "artifactType");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(body["manifests"][0]["digest"], sig.digest.as_str());
    assert_eq!(body["manifests"][0]["size"], sig.data.len());

    // Deleting a referrer removes it from the list.
    client()
        .delete(s.url(&format!("/v2/app/manifests/{}", sig.digest)))
        .send()
        .await
        .unwrap();
    let body: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1);

    // No referrers: an empty index, not 404.
    let none = client()
        .get(s.url(&format!("/v2/app/referrers/{}", sha256(b"none"))))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), StatusCode::OK);
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["manifests"], json!([]));
    let bad = client()
        .get(s.url("/v2/app/referrers/sha256:zz"))
        .send()
        .await
        .unwrap();
    expect_error(bad, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

async fn tag_list_and_catalog_pagination(kind: Kind) {
    let s = Server::start(kind).await;
    let img = Image::new(14, &[10], "amd64");
    for tag in ["b", "a", "d", "c", "e"] {
        push_image(&s, "app", &img, tag).await;
    }
    for repo in ["zeta", "alpha/one", "alpha", "mid/x/y"] {
        push_image(&s, repo, &img, "v1").await;
    }
    let body: Value = client()
        .get(s.url("/v2/app/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"name": "app", "tags": ["a", "b", "c", "d", "e"]})
    );

    let resp = client()
        .get(s.url("/v2/app/tags/list?n=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["link"],
        "</v2/app/tags/list?n=2&last=b>; rel=\"next\""
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["tags"], json!(["a", "b"]));
    let resp = client()
        .get(s.url("/v2/app/tags/list?n=2&last=d"))
        .send()
        .await
        .unwrap();
    assert!(!resp.headers().contains_key("link"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["tags"], json!(["e"]));

    let body: Value = client()
        .get(s.url("/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["repositories"],
        json!(["alpha", "alpha/one", "app", "mid/x/y", "zeta"])
    );
    let resp = client()
        .get(s.url("/v2/_catalog?n=2&last=alpha/one"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["link"],
        "</v2/_catalog?n=2&last=mid/x/y>; rel=\"next\""
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["repositories"], json!(["app", "mid/x/y"]));

    // Names whose order depends on how `/` compares: distribution's order compares path
    // components (`a`, `a/b`, `a-b`), and every page size walks the same sequence.
    for repo in ["a-b", "a/b", "a.c/d", "a0", "a", "a/b-c/d", "a/b/c"] {
        push_image(&s, repo, &img, "v1").await;
    }
    let expected = [
        "a",
        "a/b",
        "a/b/c",
        "a/b-c/d",
        "a-b",
        "a.c/d",
        "a0",
        "alpha",
        "alpha/one",
        "app",
        "mid/x/y",
        "zeta",
    ];
    let all: Value = client()
        .get(s.url("/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["repositories"], json!(expected));
    for n in [1, 2, 5] {
        let mut seen = Vec::new();
        let mut next = format!("/v2/_catalog?n={n}");
        loop {
            let resp = client().get(s.url(&next)).send().await.unwrap();
            let link = resp
                .headers()
                .get("link")
                .map(|l| l.to_str().unwrap().to_owned());
            let body: Value = resp.json().await.unwrap();
            let page = body["repositories"].as_array().unwrap();
            assert!(page.len() <= n);
            seen.extend(page.iter().map(|r| r.as_str().unwrap().to_owned()));
            match link {
                Some(l) => {
                    next = l
                        .trim_start_matches('<')
                        .split('>')
                        .next()
                        .unwrap()
                        .to_owned()
                }
                None => break,
            }
        }
        assert_eq!(seen, expected, "n={n}");
    }
    // `last` need not name a repository: the walk resumes where it would sort.
    for (last, first) in [
        ("a/b/a", "a/b/c"),
        ("a/c", "a-b"),
        ("b", "mid/x/y"),
        ("zz", ""),
    ] {
        let body: Value = client()
            .get(s.url(&format!("/v2/_catalog?n=1&last={last}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let got = body["repositories"][0].as_str().unwrap_or("");
        assert_eq!(got, first, "after {last}");
    }

    let resp = client()
        .get(s.url("/v2/nothing/tags/list"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
    let resp = client()
        .get(s.url("/v2/app/tags/list?n=-1"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID").await;
}

async fn deletes(kind: Kind) {
    let s = Server::start(kind).await;
    let img = Image::new(15, &[10], "amd64");
    push_image(&s, "app", &img, "v1").await;
    push_image(&s, "app", &img, "v2").await;
    let m = |r: &str| s.url(&format!("/v2/app/manifests/{r}"));

    // Untag: the tag goes, the manifest stays.
    let resp = client().delete(m("v1")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        client().get(m("v1")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        client()
            .get(m(&img.manifest.digest))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let resp = client().delete(m("v1")).send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;

    // By digest: the manifest and every tag pointing at it.
    let resp = client()
        .delete(m(&img.manifest.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        client().get(m("v2")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        client()
            .get(m(&img.manifest.digest))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    // Blob.
    let b = s.url(&format!("/v2/app/blobs/{}", img.layers[0].digest));
    assert_eq!(
        client().delete(&b).send().await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    let resp = client().get(&b).send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    let resp = client().delete(&b).send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

async fn client_mistakes_are_4xx_with_oci_codes(kind: Kind) {
    let s = Server::start(kind).await;
    let d = sha256(b"x");
    let cases: Vec<(Method, String, StatusCode, &str)> = vec![
        (
            Method::GET,
            "/v2/UPPER/tags/list".into(),
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            "/v2/a/..%2fb/manifests/x".into(),
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            "/v2/a%00b/manifests/x".into(),
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            format!("/v2/{}/manifests/x", "a".repeat(300)),
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            "/v2/a/blobs/sha256:abc".into(),
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            Method::GET,
            "/v2/a/blobs/md5:abc".into(),
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            Method::GET,
            format!("/v2/a/blobs/{}", d.to_uppercase()),
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            Method::GET,
            format!("/v2/a/blobs/{d}"),
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
        ),
        (
            Method::GET,
            format!("/v2/a/manifests/{d}"),
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        ),
        (
            Method::POST,
            format!("/v2/a/blobs/{d}"),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
        (
            Method::PATCH,
            "/v2/a/manifests/x".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
        (
            Method::GET,
            "/v2/a/nothing/x".into(),
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
        ),
        (
            Method::POST,
            "/v2/a/blobs/uploads/?digest=sha256:short".into(),
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            Method::PUT,
            format!("/v2/a/blobs/uploads/{}?digest={d}", "0".repeat(8)),
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            Method::POST,
            "/v2/a/blobs/uploads/?mount=sha256:x&from=b".into(),
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            Method::POST,
            format!("/v2/a/blobs/uploads/?mount={d}&from=B!"),
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
    ];
    for (method, path, status, want) in cases {
        let resp = client()
            .request(method.clone(), s.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{method} {path}");
        assert_eq!(code(resp).await, want, "{method} {path}");
    }
    // Paths a URL library would normalise before sending.
    for path in [
        "/v2/%2e%2e/blobs/uploads/x",
        "/v2/a/%2E%2E/tags/list",
        "/v2/../../etc/manifests/x",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (status, body) = testkit::raw_http(s.addr, request.as_bytes()).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("NAME_INVALID"), "{path}: {body}");
    }
    // PUT to finish an upload without a digest.
    let location = start_upload(&s, "a").await;
    let resp = client().put(s.url(&location)).send().await.unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

async fn metrics_count_requests_and_bytes(kind: Kind) {
    let s = Server::start(kind).await;
    s.push_blob("r", &random_bytes(12_345, 16)).await;
    client()
        .get(s.url("/v2/r/blobs/sha256:zz"))
        .send()
        .await
        .unwrap();
    // A made-up method must not become a label value of its own.
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    client()
        .request(brew, s.url("/v2/r/tags/list"))
        .send()
        .await
        .unwrap();
    let text = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"quayside_http_requests_total{route="upload",method="POST",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"quayside_http_requests_total{route="blob",method="GET",status="400"} 1"#)
    );
    assert!(text.contains(r#"quayside_http_received_bytes_total{route="upload"} 12345"#));
    assert!(text.contains("quayside_http_request_duration_seconds_bucket"));
    assert!(text.contains(r#"method="other""#), "{text}");
    assert!(!text.contains("BREW"), "{text}");
}

/// Instantiates every test above once per backend.
async fn garbage_collection(kind: Kind) {
    use storage::{GcOptions, Store};
    let s = Server::start(kind).await;
    let store = Store::new(s.backend.clone(), 4 << 20);
    let tagged = Image::new(71, &[3000], "amd64");
    push_image(&s, "gc/app", &tagged, "v1").await;
    // An untagged image, a referrer of the tagged one, an orphan blob and an abandoned upload.
    let untagged = Image::new(72, &[4000], "amd64");
    for b in untagged.blobs() {
        s.push_blob("gc/app", &b.data).await;
    }
    let resp = put_manifest(
        &s,
        "gc/app",
        &untagged.manifest.digest,
        OCI_MANIFEST,
        &untagged.manifest.data,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let config = s.push_blob("gc/app", b"{}").await;
    let referrer = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": tagged.manifest.digest, "size": tagged.manifest.data.len()},
    })
    .to_string();
    let referrer_digest = sha256(referrer.as_bytes());
    let resp = put_manifest(
        &s,
        "gc/app",
        &referrer_digest,
        OCI_MANIFEST,
        referrer.as_bytes(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let orphan = random_bytes(5000, 73);
    let orphan_digest = s.push_blob("gc/orphan", &orphan).await;
    start_upload(&s, "gc/app").await;
    let status = |path: String| {
        let url = s.url(&path);
        async move { client().head(url).send().await.unwrap().status() }
    };
    let options = |dry_run, delete_untagged, grace| GcOptions {
        dry_run,
        delete_untagged,
        grace: std::time::Duration::from_secs(grace),
        upload_max_age: std::time::Duration::from_secs(grace),
    };

    // Within the grace period nothing goes.
    let r = store.gc(&options(false, true, 3600)).await.unwrap();
    assert_eq!((r.blobs_deleted, r.manifests_deleted), (0, 0), "{r:?}");
    assert!(r.blobs_young >= 1, "{r:?}");
    // A dry run reports and keeps.
    let r = store.gc(&options(true, false, 0)).await.unwrap();
    assert_eq!(
        (r.blobs_deleted, r.bytes_reclaimed, r.uploads_purged),
        (1, 5000, 1),
        "{r:?}"
    );
    assert_eq!(
        status(format!("/v2/gc/orphan/blobs/{orphan_digest}")).await,
        StatusCode::OK
    );
    // The orphan goes; everything a manifest references stays; the upload is purged.
    let r = store.gc(&options(false, false, 0)).await.unwrap();
    assert_eq!(
        (
            r.repositories,
            r.manifests,
            r.blobs_deleted,
            r.uploads_purged
        ),
        (2, 3, 1, 1),
        "{r:?}"
    );
    assert_eq!(
        status(format!("/v2/gc/orphan/blobs/{orphan_digest}")).await,
        StatusCode::NOT_FOUND
    );
    for img in [&tagged, &untagged] {
        for b in img.blobs() {
            assert_eq!(
                status(format!("/v2/gc/app/blobs/{}", b.digest)).await,
                StatusCode::OK
            );
        }
    }
    // Asked to, untagged manifests go with their blobs; the tagged image's referrer stays.
    let r = store.gc(&options(false, true, 0)).await.unwrap();
    assert_eq!((r.manifests_deleted, r.blobs_deleted), (1, 3), "{r:?}");
    assert_eq!(
        status(format!("/v2/gc/app/manifests/{}", untagged.manifest.digest)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(format!("/v2/gc/app/manifests/{referrer_digest}")).await,
        StatusCode::OK
    );
    for b in tagged.blobs() {
        assert_eq!(
            status(format!("/v2/gc/app/blobs/{}", b.digest)).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        status("/v2/gc/app/manifests/v1".to_string()).await,
        StatusCode::OK
    );
    // A second run finds nothing more.
    let r = store.gc(&options(false, true, 0)).await.unwrap();
    assert_eq!((r.manifests_deleted, r.blobs_deleted), (0, 0), "{r:?}");
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod fs {
            $(#[tokio::test]
            async fn $test() {
                super::$test(testkit::Kind::Fs).await
            })*
        }
        mod s3 {
            $(#[tokio::test]
            async fn $test() {
                super::$test(testkit::Kind::S3).await
            })*
        }
        mod gcs {
            $(#[tokio::test]
            async fn $test() {
                super::$test(testkit::Kind::Gcs).await
            })*
        }
        mod azure {
            $(#[tokio::test]
            async fn $test() {
                super::$test(testkit::Kind::Azure).await
            })*
        }
    };
}

suite!(
    garbage_collection,
    large_blob_round_trip,
    base_endpoint,
    monolithic_push_and_pull,
    wrong_digest_is_refused_and_leaves_nothing,
    post_then_put,
    chunked_upload_with_ranges_status_and_out_of_order_chunk,
    streamed_patch_without_content_range,
    cancel_upload,
    cross_repository_mount,
    range_requests,
    sha512_blobs,
    spec_answers_for_edge_cases,
    oci_manifest_by_tag_and_digest,
    manifest_put_responses,
    manifest_with_missing_blob_is_refused,
    manifest_size_limit,
    docker_manifest_and_list_and_oci_index,
    referrers,
    tag_list_and_catalog_pagination,
    deletes,
    client_mistakes_are_4xx_with_oci_codes,
    metrics_count_requests_and_bytes,
);
