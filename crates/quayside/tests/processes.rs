//! Behaviour that needs real processes: uploads continued by another process on the same storage,
//! concurrent pushes of one blob, SIGKILL at random moments during pushes, and flat memory while
//! multi-GiB blobs stream through.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::{Client, StatusCode};
use testkit::image::{Image, OCI_MANIFEST, push_image};
use testkit::process::Quayside;
use testkit::{random_bytes, sha256};

const BIN: &str = env!("CARGO_BIN_EXE_quayside");

fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn chunked_upload_continues_on_another_process() {
    let data_dir = tempfile::tempdir().unwrap();
    let a = Quayside::registry(BIN, data_dir.path(), &[]);
    let b = Quayside::registry(BIN, data_dir.path(), &[]);
    let c = testkit::http_client();
    let data = random_bytes(3 << 20, 42);
    let digest = sha256(&data);

    let resp = c
        .post(a.url("/v2/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let loc = location(&resp);
    let chunk = |server: &Quayside, range: std::ops::Range<usize>| {
        c.patch(server.url(&loc))
            .header(
                "content-range",
                format!("{}-{}", range.start, range.end - 1),
            )
            .body(data[range].to_vec())
            .send()
    };
    assert_eq!(
        chunk(&a, 0..1 << 20).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    let resp = chunk(&b, 1 << 20..2 << 20).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        resp.headers()["range"],
        format!("0-{}", (2 << 20) - 1).as_str()
    );
    let status = c.get(a.url(&loc)).send().await.unwrap();
    assert_eq!(
        status.headers()["range"],
        format!("0-{}", (2 << 20) - 1).as_str()
    );
    let resp = c
        .put(b.url(&format!("{loc}?digest={digest}")))
        .body(data[2 << 20..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let got = c
        .get(a.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap(), data);
}

#[tokio::test]
async fn concurrent_pushes_of_one_blob_end_with_one_correct_blob() {
    let data_dir = tempfile::tempdir().unwrap();
    let q = Quayside::registry(BIN, data_dir.path(), &[]);
    let data = Bytes::from(random_bytes(8 << 20, 7));
    let digest = sha256(&data);
    let pushes = (0..8).map(|i| {
        let (url, data, digest) = (q.url(""), data.clone(), digest.clone());
        tokio::spawn(async move {
            let c = testkit::http_client();
            let repo = format!("r{}", i % 3);
            if i % 2 == 0 {
                c.post(format!("{url}/v2/{repo}/blobs/uploads/?digest={digest}"))
                    .body(data)
                    .send()
                    .await
                    .unwrap()
                    .status()
            } else {
                let resp = c
                    .post(format!("{url}/v2/{repo}/blobs/uploads/"))
                    .send()
                    .await
                    .unwrap();
                let loc = location(&resp);
                for part in data.chunks(1 << 20) {
                    c.patch(format!("{url}{loc}"))
                        .body(part.to_vec())
                        .send()
                        .await
                        .unwrap();
                }
                c.put(format!("{url}{loc}?digest={digest}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        })
    });
    for status in futures_util::future::join_all(pushes).await {
        assert_eq!(status.unwrap(), StatusCode::CREATED);
    }
    for repo in ["r0", "r1", "r2"] {
        let got = testkit::http_client()
            .get(q.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(got.bytes().await.unwrap(), data);
    }
    let blobs = visible_blobs(data_dir.path());
    assert_eq!(blobs, vec![digest]);
}

/// Every blob visible under the layout (its `data` exists), after checking that its content
/// hashes to its name.
fn visible_blobs(root: &Path) -> Vec<String> {
    let dir = root.join("docker/registry/v2/blobs/sha256");
    let mut found = Vec::new();
    for prefix in std::fs::read_dir(&dir).into_iter().flatten() {
        for blob in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            let blob = blob.unwrap().path();
            let name = format!("sha256:{}", blob.file_name().unwrap().to_str().unwrap());
            // A kill between creating the directory and the rename leaves it empty: the blob
            // is not visible (its `data` is what a reader looks up) and GC removes the directory.
            let Ok(content) = std::fs::read(blob.join("data")) else {
                continue;
            };
            assert_eq!(
                sha256(&content),
                name,
                "{} holds other content",
                blob.display()
            );
            found.push(name);
        }
    }
    found.sort();
    found
}

/// Pushes blobs until the registry goes away; returns the (repository, seed, size) of every push
/// the registry acknowledged with 201.
async fn push_until_killed(
    url: String,
    worker: u64,
    acks: Arc<AtomicUsize>,
) -> Vec<(String, u64, usize)> {
    let c = testkit::http_client_builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut acked = Vec::new();
    for n in 0u64.. {
        let seed = worker * 1_000_000 + n;
        let size = 64 * 1024 + (seed as usize * 7919) % (3 << 20);
        let data = random_bytes(size, seed);
        let digest = sha256(&data);
        let repo = format!("crash/w{worker}");
        let status = if n % 2 == 0 {
            c.post(format!("{url}/v2/{repo}/blobs/uploads/?digest={digest}"))
                .body(data)
                .send()
                .await
                .map(|r| r.status())
        } else {
            chunked(&c, &url, &repo, &data, &digest).await
        };
        match status {
            Ok(StatusCode::CREATED) => {
                acked.push((repo, seed, size));
                acks.fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => panic!("push answered {other}"),
            Err(_) => break, // killed
        }
    }
    acked
}

async fn chunked(
    c: &Client,
    url: &str,
    repo: &str,
    data: &[u8],
    digest: &str,
) -> reqwest::Result<StatusCode> {
    let resp = c
        .post(format!("{url}/v2/{repo}/blobs/uploads/"))
        .send()
        .await?;
    let loc = location(&resp);
    for (i, part) in data.chunks(512 * 1024).enumerate() {
        let start = i * 512 * 1024;
        c.patch(format!("{url}{loc}"))
            .header(
                "content-range",
                format!("{start}-{}", start + part.len() - 1),
            )
            .body(part.to_vec())
            .send()
            .await?;
    }
    Ok(c.put(format!("{url}{loc}?digest={digest}"))
        .send()
        .await?
        .status())
}

#[tokio::test]
async fn sigkill_during_pushes_loses_no_acknowledged_blob_and_shows_no_partial_one() {
    let data_dir = tempfile::tempdir().unwrap();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    println!("kill schedule seed {seed}");
    let mut acked = Vec::new();
    for round in 0..6u64 {
        let mut q = Quayside::registry(BIN, data_dir.path(), &[]);
        let acks = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..6)
            .map(|w| tokio::spawn(push_until_killed(q.url(""), round * 10 + w, acks.clone())))
            .collect();
        // Kill at a random moment after some pushes have been acknowledged, however loaded the
        // machine is, so every round checks acknowledged data.
        tokio::time::timeout(Duration::from_secs(60), async {
            while acks.load(Ordering::Relaxed) < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("no push acknowledged within 60 s");
        let delay = seed.wrapping_mul(round + 1).wrapping_mul(2654435761) % 300;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        q.kill();
        for w in workers {
            acked.extend(w.await.unwrap());
        }
    }
    let q = Quayside::registry(BIN, data_dir.path(), &[]);
    let c = testkit::http_client();
    for (repo, seed, size) in &acked {
        let data = random_bytes(*size, *seed);
        let digest = sha256(&data);
        let got = c
            .get(q.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), StatusCode::OK, "acknowledged {digest} lost");
        assert!(
            got.bytes().await.unwrap() == data,
            "acknowledged {digest} corrupt"
        );
    }
    let visible = visible_blobs(data_dir.path());
    println!(
        "{} pushes acknowledged, {} blobs visible, all intact",
        acked.len(),
        visible.len()
    );
    assert!(visible.len() >= acked.len());
}

#[tokio::test]
async fn memory_stays_flat_while_two_gib_stream_through() {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 2048;
    let data_dir = tempfile::tempdir().unwrap();
    let q = Quayside::registry(BIN, data_dir.path(), &[]);
    let chunk = Bytes::from(random_bytes(CHUNK, 99));
    let mut hasher = oci::Hasher::new(oci::Algorithm::Sha256);
    for _ in 0..CHUNKS {
        hasher.update(&chunk);
    }
    let digest = hasher.finish().to_string();
    let body = futures_util::stream::iter((0..CHUNKS).map({
        let chunk = chunk.clone();
        move |_| Ok::<_, std::io::Error>(chunk.clone())
    }));
    let c = testkit::http_client();
    let resp = c
        .post(q.url(&format!("/v2/big/blobs/uploads/?digest={digest}")))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let after_push = q.peak_rss_kib();

    let resp = c
        .get(q.url(&format!("/v2/big/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut pulled = oci::Hasher::new(oci::Algorithm::Sha256);
    let mut len = 0usize;
    while let Some(part) = stream.next().await {
        let part = part.unwrap();
        len += part.len();
        pulled.update(&part);
    }
    assert_eq!(len, CHUNK * CHUNKS);
    assert_eq!(pulled.finish().to_string(), digest);
    let after_pull = q.peak_rss_kib();
    println!("peak RSS after 2 GiB push {after_push} KiB, after pull {after_pull} KiB");
    assert!(
        after_pull < 64 * 1024,
        "peak RSS {after_pull} KiB grew with the blob"
    );
}

#[test]
fn a_stalled_chunk_times_out_and_the_upload_resumes_from_the_last_acknowledged_offset() {
    use std::io::{Read, Write};
    let data_dir = tempfile::tempdir().unwrap();
    let q = Quayside::registry(BIN, data_dir.path(), &["--body-timeout", "1s"]);
    let data = random_bytes(1100, 9);
    let digest = sha256(&data);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = testkit::http_client();
    let loc = rt.block_on(async {
        let resp = c
            .post(q.url("/v2/app/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        let loc = location(&resp);
        let resp = c
            .patch(q.url(&loc))
            .header("content-range", "0-99")
            .body(data[..100].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        loc
    });

    // 300 of 1000 declared bytes, then silence.
    let mut conn = std::net::TcpStream::connect(q.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        conn,
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Range: 100-1099\r\nContent-Length: 1000\r\n\r\n"
    )
    .unwrap();
    conn.write_all(&data[100..400]).unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = conn.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("BLOB_UPLOAD_INVALID"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));

    rt.block_on(async {
        let status = c.get(q.url(&loc)).send().await.unwrap();
        assert_eq!(
            status.headers()["range"],
            "0-99",
            "the stalled bytes were not acknowledged"
        );
        let resp = c
            .patch(q.url(&loc))
            .header("content-range", "100-1099")
            .body(data[100..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        assert_eq!(resp.headers()["range"], "0-1099");
        let resp = c
            .put(q.url(&format!("{loc}?digest={digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let got = c
            .get(q.url(&format!("/v2/app/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert!(got.bytes().await.unwrap() == data);
    });
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let data_dir = tempfile::tempdir().unwrap();
    let q = Quayside::registry(BIN, data_dir.path(), &["--header-timeout", "1s"]);
    let mut conn = std::net::TcpStream::connect(q.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    conn.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let closed = match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => String::from_utf8_lossy(&buf[..n]).contains(" 408 "),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the connection stayed open");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(testkit::http_get(q.addr, "/v2/").0, 200);
}

/// The digest a GET of `repo:tag` answers, or its status when not 200.
async fn served(c: &Client, server: &Quayside, repo: &str, tag: &str) -> Result<String, u16> {
    let resp = c
        .get(server.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    if resp.status() != StatusCode::OK {
        return Err(resp.status().as_u16());
    }
    let digest = resp.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sha256(&resp.bytes().await.unwrap()),
        digest,
        "body and digest disagree"
    );
    Ok(digest)
}

/// `--cache-ttl`: a replica answers tags from memory, yet sees a push or delete made through
/// itself by its very next GET (also while GETs race the change), and another replica's change
/// once the TTL has passed.
#[tokio::test]
async fn tag_changes_are_seen_at_once_by_their_replica_and_within_the_cache_ttl_by_others() {
    let data_dir = tempfile::tempdir().unwrap();
    let a = Quayside::registry(BIN, data_dir.path(), &["--cache-ttl", "1h"]);
    let b = Quayside::registry(BIN, data_dir.path(), &["--cache-ttl", "1h"]);
    let short = Quayside::registry(BIN, data_dir.path(), &["--cache-ttl", "2s"]);
    let c = testkit::http_client();
    let images: Vec<Image> = (0..3)
        .map(|i| Image::new(700 + i, &[512], "amd64"))
        .collect();
    let digest = |i: usize| images[i].manifest.digest.clone();

    push_image(a.addr, "app", &images[0], "v1").await;
    for replica in [&a, &b, &short] {
        assert_eq!(served(&c, replica, "app", "v1").await, Ok(digest(0)));
    }
    push_image(a.addr, "app", &images[1], "v1").await;
    let moved = std::time::Instant::now();
    assert_eq!(served(&c, &a, "app", "v1").await, Ok(digest(1)), "own push");
    // The other replicas answer from memory (b for its hour), which is what the cache is for.
    assert_eq!(served(&c, &b, "app", "v1").await, Ok(digest(0)));
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(moved.elapsed())).await;
    assert_eq!(
        served(&c, &short, "app", "v1").await,
        Ok(digest(1)),
        "another replica's move is seen once the TTL has passed"
    );

    // GETs racing a push through the same replica: each that starts after the push's 201 sees it.
    let pushed_at: Arc<std::sync::Mutex<Option<std::time::Instant>>> = Arc::default();
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (c, pushed_at) = (c.clone(), pushed_at.clone());
            let url = a.url("/v2/app/manifests/v1");
            tokio::spawn(async move {
                let mut seen_after = Vec::new();
                while seen_after.len() < 20 {
                    let started = std::time::Instant::now();
                    let after_push = pushed_at.lock().unwrap().is_some_and(|p| started > p);
                    let resp = c
                        .get(&url)
                        .header("accept", OCI_MANIFEST)
                        .send()
                        .await
                        .unwrap();
                    let got = resp.headers()["docker-content-digest"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    if after_push {
                        seen_after.push(got);
                    }
                }
                seen_after
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    push_image(a.addr, "app", &images[2], "v1").await;
    *pushed_at.lock().unwrap() = Some(std::time::Instant::now());
    for reader in readers {
        for got in reader.await.unwrap() {
            assert_eq!(
                got,
                digest(2),
                "a GET after the push got the tag's old digest"
            );
        }
    }

    // A delete through the replica: its next GET by tag and by digest find nothing.
    let resp = c
        .delete(a.url(&format!("/v2/app/manifests/{}", digest(2))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(served(&c, &a, "app", "v1").await, Err(404));
    assert_eq!(served(&c, &a, "app", &digest(2)).await, Err(404));
}
