//! The registry binary on S3 (the moto server the test command starts), configured the way
//! Workflow configures deis-registry: `REGISTRY_STORAGE` and the mounted `objectstorage-keyfile`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use reqwest::StatusCode;
use testkit::image::{self, Image};
use testkit::process::Quayside;
use testkit::tools::Skopeo;
use testkit::{random_bytes, sha256};

const BIN: &str = env!("CARGO_BIN_EXE_quayside");

/// A Workflow `objectstorage-keyfile` for s3, as the chart renders it, with a bucket that does
/// not exist yet.
fn keyfile(bucket: &str) -> tempfile::TempDir {
    keyfile_in(bucket, "us-west-2")
}

fn keyfile_in(bucket: &str, region: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("accesskey", "AKIDTEST"),
        ("secretkey", "not-a-real-secret"),
        ("region", region),
        ("registry-bucket", bucket),
        ("builder-bucket", "unused"),
        ("database-bucket", "unused"),
    ] {
        std::fs::write(dir.path().join(key), value).unwrap();
    }
    dir
}

fn s3_registry(creds: &std::path::Path) -> Quayside {
    s3_registry_on(creds, &testkit::s3_endpoint(), &[])
}

fn s3_registry_on(creds: &std::path::Path, endpoint: &str, extra: &[&str]) -> Quayside {
    let data = std::env::temp_dir();
    let creds = creds.display().to_string();
    let mut args = vec![
        "--storage",
        "s3",
        "--creds-dir",
        &creds,
        "--s3-endpoint",
        endpoint,
        "--s3-path-style",
        "true",
    ];
    args.extend_from_slice(extra);
    Quayside::registry(BIN, &data, &args)
}

/// Polls `path` until it answers `status` (bounded: the health check runs every 200 ms).
fn wait_for_status(q: &Quayside, path: &str, status: u16) -> String {
    for _ in 0..150 {
        let (got, body) = testkit::http_get(q.addr, path);
        if got == status {
            return body;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{path} never answered {status}");
}

#[test]
fn answers_503_while_storage_is_down_and_recovers_on_its_own() {
    let mut moto = testkit::tools::Moto::start();
    let bucket = format!("h-{}", uuid_like());
    let creds = keyfile(&bucket);
    let q = s3_registry_on(
        creds.path(),
        &moto.endpoint(),
        &["--health-interval", "200ms", "--health-threshold", "2"],
    );
    assert_eq!(testkit::http_get(q.addr, "/v2/").0, 200);

    moto.stop();
    let body = wait_for_status(&q, "/v2/", 503);
    assert!(body.contains("UNAVAILABLE"), "{body}");
    assert_eq!(testkit::http_get(q.addr, "/readyz").0, 503);
    assert_eq!(
        testkit::http_get(q.addr, "/healthz").0,
        200,
        "liveness is not storage"
    );
    assert_eq!(testkit::http_get(q.addr, "/v2/_catalog").0, 503);
    assert_eq!(testkit::http_get(q.addr, "/metrics").0, 200);

    // Storage returns (moto restarts empty, so the bucket is recreated as an operator would).
    moto.restart();
    assert_eq!(
        testkit::http(moto.addr, "PUT", &format!("/{bucket}")).0,
        200
    );
    wait_for_status(&q, "/v2/", 200);
    assert_eq!(testkit::http_get(q.addr, "/readyz").0, 200);
    assert!(logged(&q, "storage unreachable") && logged(&q, "storage answers again"));
}

fn logged(q: &Quayside, message: &str) -> bool {
    q.log.lock().unwrap().iter().any(|l| l.contains(message))
}

#[test]
fn workflow_s3_configuration_creates_the_bucket_once_and_serves_images() {
    let bucket = format!("wf-{}", uuid_like());
    let creds = keyfile(&bucket);
    {
        let q = s3_registry(creds.path());
        assert!(
            logged(&q, "bucket ready (created)"),
            "{:?}",
            q.log.lock().unwrap()
        );
        let skopeo = Skopeo::new();
        let work = tempfile::tempdir().unwrap();
        let img = Image::new(31, &[2 << 20, 1000], "amd64");
        image::write_layout(work.path(), std::slice::from_ref(&img), None, "v1");
        let remote = format!("docker://{}/apps/web:v1", q.addr);
        let src = format!("oci:{}:v1", work.path().display());
        skopeo.copy(&src, &remote);
        let inspect = skopeo.run(&["inspect", "--tls-verify=false", &remote]);
        assert!(inspect.contains(&img.manifest.digest), "{inspect}");
    }
    // A second start finds the bucket and the image.
    let q = s3_registry(creds.path());
    assert!(logged(&q, "bucket exists"));
    let (status, body) = testkit::http_get(q.addr, "/v2/_catalog");
    assert_eq!(status, 200);
    assert!(body.contains("apps/web"), "{body}");
}

#[tokio::test]
async fn chunked_upload_continues_on_another_replica_sharing_the_bucket() {
    // us-east-1: CreateBucket without a location constraint (an empty body).
    let creds = keyfile_in(&format!("rep-{}", uuid_like()), "us-east-1");
    let a = s3_registry(creds.path());
    let b = s3_registry(creds.path());
    let c = testkit::http_client();
    // Chunks that are not multiples of the part size, so the tail carries across replicas.
    let data = random_bytes(19 << 20, 77);
    let digest = sha256(&data);
    let resp = c
        .post(a.url("/v2/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    let mut offset = 0;
    for (i, size) in [3 << 20, 9 << 20, 5 << 20].into_iter().enumerate() {
        let server = if i % 2 == 0 { &a } else { &b };
        let resp = c
            .patch(server.url(&loc))
            .header("content-range", format!("{offset}-{}", offset + size - 1))
            .body(data[offset..offset + size].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        offset += size;
        assert_eq!(
            resp.headers()["range"],
            format!("0-{}", offset - 1).as_str()
        );
    }
    let resp = c
        .put(b.url(&format!("{loc}?digest={digest}")))
        .body(data[offset..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let got = c
        .get(a.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert!(got.bytes().await.unwrap() == data);
    // A ranged read is served from the object store.
    let part = c
        .get(b.url(&format!("/v2/app/blobs/{digest}")))
        .header("range", "bytes=10000000-10000099")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert!(part.bytes().await.unwrap() == data[10_000_000..10_000_100]);
}

#[test]
fn quayside_serves_a_bucket_written_by_distributions_s3_driver() {
    let bucket = format!("dist-{}", uuid_like());
    let creds = keyfile(&bucket);
    let endpoint = testkit::s3_endpoint();
    // distribution does not create buckets: Quayside's first start does, as deis-registry's
    // create-bucket did before distribution started.
    drop(s3_registry(creds.path()));
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  s3:\n    accesskey: AKIDTEST\n    secretkey: not-a-real-secret\n    region: us-west-2\n    regionendpoint: {endpoint}\n    bucket: {bucket}\n    secure: false\n    v4auth: true\n  delete:\n    enabled: true\n"
    );
    let dist = testkit::tools::Distribution::start_with_storage(&config);
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let img = Image::new(41, &[1 << 20, 500], "amd64");
    image::write_layout(
        &work.path().join("src"),
        std::slice::from_ref(&img),
        None,
        "v1",
    );
    let src = format!("oci:{}:v1", work.path().join("src").display());
    skopeo.copy(&src, &format!("docker://{}/legacy/app:v1", dist.addr));
    drop(dist);

    let q = s3_registry(creds.path());
    let dst = format!("oci:{}:v1", work.path().join("dst").display());
    skopeo.copy(&format!("docker://{}/legacy/app:v1", q.addr), &dst);
    image::assert_layout_holds(&work.path().join("dst"), img.all());
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn workflow_azure_configuration_creates_the_container_once_and_serves_images() {
    let creds = tempfile::tempdir().unwrap();
    let container = format!("wf-{}", uuid_like());
    for (key, value) in [
        ("accountname", testkit::AZURITE_ACCOUNT),
        ("accountkey", testkit::AZURITE_KEY),
        ("registry-container", container.as_str()),
    ] {
        std::fs::write(creds.path().join(key), value).unwrap();
    }
    let endpoint = testkit::azure_endpoint();
    let start = || {
        Quayside::registry(
            BIN,
            &std::env::temp_dir(),
            &[
                "--storage",
                "azure",
                "--creds-dir",
                &creds.path().display().to_string(),
                "--azure-endpoint",
                &endpoint,
            ],
        )
    };
    {
        let q = start();
        assert!(
            logged(&q, "bucket ready (created)"),
            "{:?}",
            q.log.lock().unwrap()
        );
        let skopeo = Skopeo::new();
        let work = tempfile::tempdir().unwrap();
        let img = Image::new(51, &[3 << 20, 700], "amd64");
        image::write_layout(work.path(), std::slice::from_ref(&img), None, "v1");
        let remote = format!("docker://{}/apps/az:v1", q.addr);
        skopeo.copy(&format!("oci:{}:v1", work.path().display()), &remote);
        let inspect = skopeo.run(&["inspect", "--tls-verify=false", &remote]);
        assert!(inspect.contains(&img.manifest.digest), "{inspect}");
    }
    let q = start();
    assert!(logged(&q, "bucket exists"));
    let (status, body) = testkit::http_get(q.addr, "/v2/apps/az/tags/list");
    assert_eq!(status, 200);
    assert!(body.contains("v1"), "{body}");
    // No secret in any log line.
    assert!(
        !q.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(testkit::AZURITE_KEY))
    );
}

#[tokio::test]
async fn redirect_sends_blob_gets_to_a_presigned_storage_url() {
    let creds = keyfile(&format!("redir-{}", uuid_like()));
    let q = s3_registry_on(
        creds.path(),
        &testkit::s3_endpoint(),
        &["--redirect", "true"],
    );
    let data = random_bytes(300_000, 5);
    let digest = sha256(&data);
    let c = testkit::http_client();
    let resp = c
        .post(q.url(&format!("/v2/app/blobs/uploads/?digest={digest}")))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let no_follow = testkit::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = q.url(&format!("/v2/app/blobs/{digest}"));
    let resp = no_follow.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&testkit::s3_endpoint()), "{location}");
    assert!(location.contains("X-Amz-Signature"), "{location}");
    // Following it yields the blob; HEAD and other repositories are still answered here.
    let got = c.get(&url).send().await.unwrap();
    assert!(got.bytes().await.unwrap() == data);
    let head = no_follow.head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let other = no_follow
        .get(q.url(&format!("/v2/other/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn azure_copy_waiter_signs_requests_azurite_accepts_and_refuses_a_wrong_key() {
    use storage::azure::{CopyWaiter, SharedKey};
    let container = format!("cw-{}", uuid_like());
    let backend = testkit::azure_backend_in(&container).await;
    backend
        .put("some/blob", bytes::Bytes::from_static(b"x"))
        .await
        .unwrap();
    let endpoint = testkit::azure_endpoint();
    let right = SharedKey::new(testkit::AZURITE_ACCOUNT, testkit::AZURITE_KEY).unwrap();
    CopyWaiter::new(reqwest::Client::new(), &endpoint, &container, right)
        .wait("some/blob")
        .await
        .unwrap();
    let wrong = SharedKey::new(testkit::AZURITE_ACCOUNT, "d3Jvbmcga2V5").unwrap();
    let err = CopyWaiter::new(reqwest::Client::new(), &endpoint, &container, wrong)
        .wait("some/blob")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_gcs_configuration_serves_images() {
    let fake = testkit::gcs::FakeGcs::start().await;
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("key.json"), fake.key_json()).unwrap();
    std::fs::write(creds.path().join("registry-bucket"), "wf-registry").unwrap();
    let creds_dir = creds.path().display().to_string();
    tokio::task::spawn_blocking(move || {
        let start = || {
            Quayside::registry(
                BIN,
                &std::env::temp_dir(),
                &["--storage", "gcs", "--creds-dir", &creds_dir],
            )
        };
        let first = start();
        assert!(
            logged(&first, "bucket ready (created)"),
            "{:?}",
            first.log.lock().unwrap()
        );
        drop(first);
        // A second start finds the bucket.
        let q = start();
        assert!(logged(&q, "bucket exists"), "{:?}", q.log.lock().unwrap());
        assert!(logged(&q, r#""storage":"gcs:wf-registry""#));
        let skopeo = Skopeo::new();
        let work = tempfile::tempdir().unwrap();
        let img = Image::new(61, &[9 << 20, 300], "amd64");
        image::write_layout(
            &work.path().join("src"),
            std::slice::from_ref(&img),
            None,
            "v1",
        );
        let remote = format!("docker://{}/apps/gcs:v1", q.addr);
        let src = format!("oci:{}:v1", work.path().join("src").display());
        let dst = format!("oci:{}:v1", work.path().join("dst").display());
        skopeo.copy(&src, &remote);
        skopeo.copy(&remote, &dst);
        image::assert_layout_holds(&work.path().join("dst"), img.all());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_second_push_of_a_stored_blob_leaves_no_multipart_upload_open() {
    let bucket = format!("dup-{}", uuid_like());
    let creds = keyfile(&bucket);
    let q = s3_registry(creds.path());
    let data = random_bytes(20 << 20, 13);
    let digest = sha256(&data);
    let c = testkit::http_client();
    for repo in ["first", "second"] {
        let resp = c
            .post(q.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    let moto: std::net::SocketAddr = testkit::s3_endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let (status, listing) = tokio::task::spawn_blocking(move || {
        testkit::http(moto, "GET", &format!("/{bucket}?uploads"))
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{listing}");
    assert!(listing.contains("ListMultipartUploadsResult"), "{listing}");
    assert!(
        !listing.contains("<Upload>"),
        "multipart uploads left open: {listing}"
    );
}

/// Settings for a fresh bucket on moto, or on `endpoint`.
fn s3_settings(endpoint: String) -> storage::Settings {
    storage::Settings::S3 {
        bucket: format!("t-{}", uuid_like()),
        region: "us-east-1".to_owned(),
        endpoint: Some(endpoint),
        access_key: Some(secrets::Secret::new("test")),
        secret_key: Some(secrets::Secret::new("test")),
        path_style: true,
        root: String::new(),
    }
}

/// A blob streams to a client at the client's pace: a read that pauses between chunks for less
/// than the read timeout each time, and takes several read timeouts in all, gets every byte
/// (object_store's default of 30 s for a whole request cut every pull longer than that).
#[tokio::test]
async fn a_slow_read_from_object_storage_is_not_cut_short() {
    use futures_util::StreamExt;
    testkit::install_crypto();
    let read_timeout = std::time::Duration::from_secs(1);
    let options = storage::Options {
        read_timeout,
        ..testkit::storage_options()
    };
    let backend = storage::open(&s3_settings(testkit::s3_endpoint()), &options)
        .await
        .unwrap();
    let data = random_bytes(4 << 20, 21);
    backend.put("slow/blob", data.clone().into()).await.unwrap();
    let start = std::time::Instant::now();
    let mut stream = backend.get("slow/blob", None).await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
        if start.elapsed() < 4 * read_timeout {
            tokio::time::sleep(read_timeout * 6 / 10).await;
        }
    }
    assert!(start.elapsed() >= 4 * read_timeout);
    assert_eq!(sha256(&got), sha256(&data));
}

/// A store that accepts connections and never answers fails the open after the read timeout
/// and its retries, instead of holding the registry's start-up (or a request) for good.
#[tokio::test]
async fn a_store_that_never_answers_fails_instead_of_hanging() {
    testkit::install_crypto();
    let silent = testkit::SilentServer::start().await;
    let options = storage::Options {
        read_timeout: std::time::Duration::from_secs(1),
        ..testkit::storage_options()
    };
    let start = std::time::Instant::now();
    let opened = tokio::time::timeout(
        std::time::Duration::from_secs(25),
        storage::open(&s3_settings(silent.url()), &options),
    )
    .await
    .expect("open was still waiting on a silent store after 25 s");
    let err = opened.err().expect("a silent store cannot be opened");
    let message = err.to_string();
    assert!(message.contains("timed out"), "{message}");
    assert!(
        !message.contains("Signature"),
        "the presigned URL leaked: {message}"
    );
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}
