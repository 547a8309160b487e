#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
//! Requests that race each other, and garbage collection racing pushes, on every storage backend:
//! what the registry answered 201 for is there byte for byte afterwards, and no race ends in a
//! 5xx. Each race is repeated, since one lucky interleaving proves little.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use storage::{GcOptions, Store};
use testkit::image::OCI_MANIFEST;
use testkit::{Kind, Server, random_bytes, sha256};

fn client() -> Client {
    testkit::http_client()
}

async fn start_upload(s: &Server, name: &str) -> String {
    let resp = client()
        .post(s.url(&format!("/v2/{name}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    s.url(&location)
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// The answer's status and OCI error code (if any); a 5xx fails the test at once.
async fn outcome(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert!(!status.is_server_error(), "{status}: {body}");
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code)
}

/// GETs the blob and checks its bytes hash to its name; returns the status.
async fn blob_is_intact(s: &Server, name: &str, digest: &str) -> StatusCode {
    let resp = client()
        .get(s.url(&format!("/v2/{name}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    if status == StatusCode::OK {
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            sha256(&body),
            digest,
            "served bytes do not hash to {digest}"
        );
    }
    status
}

/// Two `PUT ?digest=` with the same body on one session: one 201, the other a 4xx, and the
/// blob is correct.
async fn two_puts_finishing_one_session(kind: Kind) {
    let s = Server::start(kind).await;
    let data = random_bytes(4 << 20, 1);
    let digest = sha256(&data);
    for round in 0..4 {
        let name = format!("race/put{round}");
        let location = start_upload(&s, &name).await;
        let url = with_digest(&location, &digest);
        let puts = (0..2).map(|_| client().put(&url).body(data.clone()).send());
        let mut outcomes = Vec::new();
        for resp in join_all(puts).await {
            outcomes.push(outcome(resp.unwrap()).await);
        }
        let created = outcomes
            .iter()
            .filter(|(st, _)| *st == StatusCode::CREATED)
            .count();
        assert_eq!(created, 1, "round {round}: {outcomes:?}");
        for (st, code) in &outcomes {
            assert!(
                *st == StatusCode::CREATED
                    || (*st == StatusCode::NOT_FOUND && code == "BLOB_UPLOAD_UNKNOWN")
                    || (*st == StatusCode::CONFLICT && code == "BLOB_UPLOAD_INVALID"),
                "round {round}: {outcomes:?}"
            );
        }
        assert_eq!(blob_is_intact(&s, &name, &digest).await, StatusCode::OK);
    }
}

/// A client's retry of a chunk racing its first attempt (with and without `Content-Range`):
/// the chunk is stored once, the loser is told where the upload is, and the blob is correct.
/// Without `Content-Range` a second PATCH that arrives after the first has finished is a
/// legitimate next chunk (the server cannot tell it from a retry): then the upload holds the
/// chunk twice, whole, one after the other.
async fn a_retried_chunk_racing_its_first_attempt(kind: Kind) {
    let s = Server::start(kind).await;
    let data = random_bytes(3 << 20, 2);
    let digest = sha256(&data);
    for round in 0..6 {
        let name = format!("race/patch{round}");
        let location = start_upload(&s, &name).await;
        let with_range = round % 2 == 0;
        let patches = (0..2).map(|_| {
            let mut req = client()
                .patch(&location)
                .header("content-type", "application/octet-stream")
                .body(data.clone());
            if with_range {
                req = req.header("content-range", format!("0-{}", data.len() - 1));
            }
            req.send()
        });
        let mut outcomes = Vec::new();
        for resp in join_all(patches).await {
            let resp = resp.unwrap();
            let range = resp.headers().get("range").cloned();
            outcomes.push((outcome(resp).await, range));
        }
        let accepted = outcomes
            .iter()
            .filter(|((st, _), _)| *st == StatusCode::ACCEPTED)
            .count();
        let len = data.len();
        let mut expected = digest.clone();
        if accepted == 2 && !with_range {
            let mut ranges: Vec<_> = outcomes.iter().map(|(_, r)| r.clone().unwrap()).collect();
            ranges.sort_by_key(|r| r.len());
            assert_eq!(
                ranges,
                [format!("0-{}", len - 1), format!("0-{}", 2 * len - 1)]
            );
            let twice = [data.as_slice(), data.as_slice()].concat();
            expected = sha256(&twice);
        } else {
            assert_eq!(accepted, 1, "round {round}: {outcomes:?}");
        }
        for ((st, _), range) in &outcomes {
            match *st {
                StatusCode::ACCEPTED => {}
                // The loser learns that the bytes are in already.
                StatusCode::RANGE_NOT_SATISFIABLE => assert_eq!(
                    range.as_ref().unwrap(),
                    format!("0-{}", data.len() - 1).as_str()
                ),
                StatusCode::CONFLICT => {}
                other => panic!("round {round}: {other}: {outcomes:?}"),
            }
        }
        let resp = client()
            .put(with_digest(&location, &expected))
            .send()
            .await
            .unwrap();
        assert_eq!(outcome(resp).await.0, StatusCode::CREATED, "round {round}");
        assert_eq!(blob_is_intact(&s, &name, &expected).await, StatusCode::OK);
    }
}

/// Two different chunks racing for one offset: whichever wins, the upload holds its bytes and
/// no others, so finishing it with the other's digest fails and nothing wrong is served.
async fn different_chunks_racing_for_one_offset(kind: Kind) {
    let s = Server::start(kind).await;
    let chunks = [random_bytes(2 << 20, 3), random_bytes(2 << 20, 4)];
    for round in 0..4 {
        let name = format!("race/diff{round}");
        let location = start_upload(&s, &name).await;
        let patches = chunks
            .iter()
            .map(|c| client().patch(&location).body(c.clone()).send());
        for resp in join_all(patches).await {
            outcome(resp.unwrap()).await;
        }
        // Finish with the first chunk's digest: right if it won, refused if the other did.
        let digest = sha256(&chunks[0]);
        let resp = client()
            .put(with_digest(&location, &digest))
            .send()
            .await
            .unwrap();
        match outcome(resp).await {
            (StatusCode::CREATED, _) => {
                assert_eq!(blob_is_intact(&s, &name, &digest).await, StatusCode::OK)
            }
            (StatusCode::BAD_REQUEST, code) => assert_eq!(code, "DIGEST_INVALID"),
            other => panic!("round {round}: {other:?}"),
        }
        for chunk in &chunks {
            let st = blob_is_intact(&s, &name, &sha256(chunk)).await;
            assert!(st == StatusCode::OK || st == StatusCode::NOT_FOUND, "{st}");
        }
    }
}

/// A blob file left corrupt by an older version is replaced by the next verified push of the
/// genuine bytes instead of being trusted because it exists.
async fn a_verified_push_replaces_a_corrupt_blob(kind: Kind) {
    let s = Server::start(kind).await;
    let data = random_bytes(1 << 20, 5);
    let digest = sha256(&data);
    let parsed: oci::Digest = digest.parse().unwrap();
    let key = storage::layout::blob_data(&parsed);
    s.backend
        .put(&key, random_bytes(1 << 20, 6).into())
        .await
        .unwrap();
    let resp = client()
        .post(s.url(&format!("/v2/honest/blobs/uploads/?digest={digest}")))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(blob_is_intact(&s, "honest", &digest).await, StatusCode::OK);
}

/// A manifest whose fields say "index" while its Content-Type says "image manifest" is refused,
/// so nothing is stored that garbage collection could read as having no blobs.
async fn ambiguous_manifest_is_refused(kind: Kind) {
    let s = Server::start(kind).await;
    let config = s.push_blob("amb", b"{}").await;
    let layer = s.push_blob("amb", &random_bytes(1000, 7)).await;
    let body = json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 1000}],
        "manifests": [],
    })
    .to_string();
    let resp = client()
        .put(s.url("/v2/amb/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        outcome(resp).await,
        (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".to_owned())
    );
}

/// A manifest between 4 and 8 MiB under `--max-manifest-bytes 8 MiB`: collection reads it with
/// the same limit and keeps its blobs; with a smaller limit it stops instead of guessing.
async fn gc_reads_manifests_with_the_registry_limit(kind: Kind) {
    let limit = 8 << 20;
    let s = Server::start_with(kind, limit).await;
    let config = s.push_blob("big/manifest", b"{}").await;
    let layer = s.push_blob("big/manifest", &random_bytes(3000, 8)).await;
    let body = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 3000}],
        "annotations": {"padding": "x".repeat(5 << 20)},
    })
    .to_string();
    let resp = client()
        .put(s.url("/v2/big/manifest/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(outcome(resp).await.0, StatusCode::CREATED);
    let options = aggressive();
    let small = Store::new(s.backend.clone(), 4 << 20).gc(&options).await;
    let err = small.expect_err("a 4 MiB limit cannot read the manifest");
    assert!(err.to_string().contains("--max-manifest-bytes"), "{err}");
    let r = Store::new(s.backend.clone(), limit)
        .gc(&options)
        .await
        .unwrap();
    assert_eq!(r.blobs_deleted, 0, "{r:?}");
    for d in [&config, &layer] {
        assert_eq!(blob_is_intact(&s, "big/manifest", d).await, StatusCode::OK);
    }
}

/// No grace period at all: every unreferenced blob is a candidate the moment collection starts.
fn aggressive() -> GcOptions {
    with_grace(Duration::ZERO)
}

fn with_grace(grace: Duration) -> GcOptions {
    GcOptions {
        dry_run: false,
        delete_untagged: false,
        grace,
        upload_max_age: Duration::from_secs(3600),
    }
}

/// Long enough for a push's blobs to reach their manifest; S3 reports modification times in
/// whole seconds, so well above one.
const STRESS_GRACE: Duration = Duration::from_secs(3);

/// Runs collection in a loop until `stop`; every run must succeed. Returns the runs and the
/// blobs they deleted.
fn collect_until(
    store: Store,
    options: GcOptions,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, usize)> {
    tokio::spawn(async move {
        let (mut runs, mut deleted) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            match store.gc(&options).await {
                Ok(r) => deleted += r.blobs_deleted,
                Err(e) => panic!("gc run {runs} failed: {e}\n{e:?}"),
            }
            runs += 1;
        }
        (runs, deleted)
    })
}

/// The blobs of one stress image: config, the layer every image shares, its own layer.
fn stress_blobs(seed: u64, shared: &[u8]) -> [Vec<u8>; 3] {
    [
        format!("{{\"seed\":{seed}}}").into_bytes(),
        shared.to_vec(),
        random_bytes(20_000, seed),
    ]
}

struct Pushed {
    repo: String,
    tag: String,
    manifest: String,
    blobs: Vec<String>,
}

/// One image: a layer shared by every pusher (found by HEAD or mounted, never re-uploaded once
/// there), one of its own, and a config. Returns `None` when the manifest was refused because
/// collection took a blob first (the push is then retried), never a 5xx.
async fn push_image_racing_gc(
    s: &Server,
    repo: &str,
    tag: &str,
    seed: u64,
    shared: &[u8],
) -> Option<Pushed> {
    let own = random_bytes(20_000, seed);
    let config = format!("{{\"seed\":{seed}}}").into_bytes();
    let mut digests = Vec::new();
    for (i, data) in [config.as_slice(), shared, own.as_slice()]
        .into_iter()
        .enumerate()
    {
        let digest = sha256(data);
        let head = client()
            .head(s.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert!(!head.status().is_server_error());
        if head.status() != StatusCode::OK {
            // The shared layer: mount it from the first pusher's repository when it is there.
            let mounted = i == 1 && {
                let url = s.url(&format!(
                    "/v2/{repo}/blobs/uploads/?mount={digest}&from=stress/r0"
                ));
                let resp = client().post(url).send().await.unwrap();
                let (status, _) = outcome(resp).await;
                status == StatusCode::CREATED
            };
            if !mounted {
                let resp = client()
                    .post(s.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
                    .body(data.to_vec())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(outcome(resp).await.0, StatusCode::CREATED);
            }
        }
        digests.push((digest, data.len()));
    }
    let descriptor = |(d, len): &(String, usize), media: &str| json!({"mediaType": media, "digest": d, "size": len});
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(&digests[0], "application/vnd.oci.image.config.v1+json"),
        "layers": [descriptor(&digests[1], "application/vnd.oci.image.layer.v1.tar"),
                   descriptor(&digests[2], "application/vnd.oci.image.layer.v1.tar")],
    })
    .to_string();
    let resp = client()
        .put(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    match outcome(resp).await {
        (StatusCode::CREATED, _) => Some(Pushed {
            repo: repo.to_owned(),
            tag: tag.to_owned(),
            manifest: sha256(manifest.as_bytes()),
            blobs: digests.into_iter().map(|(d, _)| d).collect(),
        }),
        (StatusCode::BAD_REQUEST, code) if code == "MANIFEST_BLOB_UNKNOWN" => None,
        other => panic!("manifest PUT: {other:?}"),
    }
}

/// The case that used to lose layers: every blob of 32 images is uploaded first and left to age
/// past the grace period (orphans), then collection runs in a loop while four clients push the
/// images, finding those old orphans by HEAD (or mounting the shared one) instead of uploading
/// them. Manifest PUTs that lose a blob to collection are refused cleanly and retried (with
/// fresh uploads); afterwards every image that got 201 pulls whole, after one more collection.
async fn gc_in_a_loop_while_pushing_keeps_every_accepted_image(kind: Kind) {
    let s = Arc::new(Server::start(kind).await);
    let store = Store::new(s.backend.clone(), 4 << 20);
    let shared = random_bytes(50_000, 9);
    for w in 0..4u64 {
        for i in 0..8u64 {
            for (j, data) in stress_blobs(1000 + w * 100 + i, &shared).iter().enumerate() {
                let repo = if j == 1 {
                    "stress/r0".to_owned()
                } else {
                    format!("stress/r{w}")
                };
                s.push_blob(&repo, data).await;
            }
        }
    }
    let junk = s.push_blob("stress/junk", &random_bytes(1000, 10)).await;
    tokio::time::sleep(STRESS_GRACE + Duration::from_millis(1500)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let gc = collect_until(store.clone(), with_grace(STRESS_GRACE), stop.clone());
    let pushers = (0..4).map(|w| {
        let (s, shared) = (s.clone(), shared.clone());
        tokio::spawn(async move {
            let (mut accepted, mut refused) = (Vec::new(), 0);
            for i in 0..8u64 {
                let repo = format!("stress/r{w}");
                let tag = format!("t{i}");
                let mut tries = 0;
                loop {
                    match push_image_racing_gc(&s, &repo, &tag, 1000 + w * 100 + i, &shared).await {
                        Some(p) => break accepted.push(p),
                        None if tries < 10 => {
                            refused += 1;
                            tries += 1;
                        }
                        None => panic!("{repo}:{tag} refused 10 times in a row"),
                    }
                }
                // Spread the pushes over several collections.
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            (accepted, refused)
        })
    });
    let mut accepted = Vec::new();
    let mut refused = 0;
    for r in join_all(pushers).await {
        let (a, n) = r.unwrap();
        accepted.extend(a);
        refused += n;
    }
    stop.store(true, Ordering::Relaxed);
    let (runs, deleted) = gc.await.unwrap();
    assert!(runs >= 1, "collection never ran");
    store.gc(&aggressive()).await.unwrap();
    assert_eq!(
        blob_is_intact(&s, "stress/junk", &junk).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(accepted.len(), 32);
    let mut checked = HashSet::new();
    for p in &accepted {
        let resp = client()
            .get(s.url(&format!("/v2/{}/manifests/{}", p.repo, p.tag)))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{}:{}", p.repo, p.tag);
        assert_eq!(sha256(&resp.bytes().await.unwrap()), p.manifest);
        for b in &p.blobs {
            if checked.insert((p.repo.clone(), b.clone())) {
                assert_eq!(
                    blob_is_intact(&s, &p.repo, b).await,
                    StatusCode::OK,
                    "{}:{} lost {b} ({runs} gc runs, {refused} pushes refused)",
                    p.repo,
                    p.tag
                );
            }
        }
    }
    eprintln!(
        "{kind:?}: {runs} gc runs deleted {deleted} blobs while 32 images were accepted; \
         {refused} manifest PUTs refused cleanly and retried"
    );
}

/// Collection in a loop while clients start and finish uploads: no session younger than the
/// maximum age is purged, including one being created, and nothing answers 5xx.
async fn gc_in_a_loop_spares_fresh_upload_sessions(kind: Kind) {
    let s = Arc::new(Server::start(kind).await);
    let store = Store::new(s.backend.clone(), 4 << 20);
    let stop = Arc::new(AtomicBool::new(false));
    let gc = collect_until(store, aggressive(), stop.clone());
    let clients = (0..4).map(|w| {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..10u64 {
                let data = random_bytes(10_000, 5000 + w * 100 + i);
                let name = format!("fresh/w{w}");
                let location = start_upload(&s, &name).await;
                let resp = client()
                    .put(with_digest(&location, &sha256(&data)))
                    .body(data)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(outcome(resp).await.0, StatusCode::CREATED, "upload {w}/{i}");
            }
        })
    });
    for c in join_all(clients).await {
        c.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(gc.await.unwrap().0 >= 1);
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod fs {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                super::$test(testkit::Kind::Fs).await
            })*
        }
        mod s3 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                super::$test(testkit::Kind::S3).await
            })*
        }
        mod gcs {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                super::$test(testkit::Kind::Gcs).await
            })*
        }
        mod azure {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                super::$test(testkit::Kind::Azure).await
            })*
        }
    };
}

suite!(
    two_puts_finishing_one_session,
    a_retried_chunk_racing_its_first_attempt,
    different_chunks_racing_for_one_offset,
    a_verified_push_replaces_a_corrupt_blob,
    ambiguous_manifest_is_refused,
    gc_reads_manifests_with_the_registry_limit,
    gc_in_a_loop_while_pushing_keeps_every_accepted_image,
    gc_in_a_loop_spares_fresh_upload_sessions,
);
