//! The pull-through cache (`quayside registry --upstream HOST=URL`) with real clients and real
//! upstreams on loopback: a Quayside in token mode standing in for Docker Hub's token flow,
//! Debian's `docker-registry` with htpasswd, and, for what only a hand-made upstream can do
//! (pause mid-blob, lie about a digest), a small HTTP server in this file that counts what it
//! is asked.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use testkit::image::{self, Image, OCI_MANIFEST, push_blob, push_image};
use testkit::process::Quayside;
use testkit::tools::{Containerd, Distribution, Moto, Skopeo};
use testkit::{random_bytes, sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

const BIN: &str = env!("CARGO_BIN_EXE_quayside");

fn client() -> reqwest::Client {
    testkit::http_client()
}

/// A cache mirroring each `HOST=URL`, with `extra` flags.
fn cache(dir: &Path, upstreams: &[String], extra: &[&str]) -> Quayside {
    let mut args: Vec<&str> = Vec::new();
    for u in upstreams {
        args.extend(["--upstream", u]);
    }
    args.extend(extra);
    Quayside::registry(BIN, dir, &args)
}

/// The value of the first series of `/metrics` whose line starts with `series`.
async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Blob GETs a Quayside upstream answered with 200.
async fn upstream_blob_gets(upstream: SocketAddr) -> f64 {
    metric(
        upstream,
        r#"quayside_http_requests_total{route="blob",method="GET",status="200"}"#,
    )
    .await
}

async fn get(url: &str) -> reqwest::Response {
    client().get(url).send().await.unwrap()
}

async fn tag_digest(url: &str) -> String {
    let resp = client()
        .get(url)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(f)
}

const POLICY: &str =
    "rules:\n  - users: [alice]\n    repositories: [\"*\"]\n    actions: [pull, push, delete]\n";

/// A Quayside in token mode, as Docker Hub works: anonymous clients get pull tokens for `lib/*`
/// from the realm the challenge names; alice may push.
fn token_upstream(dir: &Path) -> Quayside {
    let htpasswd = format!("alice:{}\n", bcrypt::hash("alice-pw", 4).unwrap());
    std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
    std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
    std::fs::write(
        dir.join("secret"),
        "dG9rZW4tc2lnbmluZy1zZWNyZXQtb2YtdGhlLXVwc3RyZWFt\n",
    )
    .unwrap();
    let path = |f: &str| dir.join(f).display().to_string();
    let (htpasswd, policy, secret, data) = (
        path("htpasswd"),
        path("policy.yaml"),
        path("secret"),
        dir.join("data"),
    );
    std::fs::create_dir_all(&data).unwrap();
    Quayside::registry(
        BIN,
        &data,
        &[
            "--auth",
            "token",
            "--htpasswd",
            &htpasswd,
            "--auth-policy",
            &policy,
            "--auth-token-secret-file",
            &secret,
            "--anonymous-pull",
            "lib/*",
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_by_prefix_and_containerd_by_ns_through_the_node_proxy_share_one_cache() {
    let (up_dir, cache_dir, layout, out, hosts) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let upstream = token_upstream(up_dir.path());
    let img = Image::new(41, &[300_000, 70_000], "amd64");
    image::write_layout(layout.path(), std::slice::from_ref(&img), None, "v1");
    let skopeo = Arc::new(Skopeo::new());
    let (s, from, to) = (
        skopeo.clone(),
        format!("oci:{}:v1", layout.path().display()),
        format!("docker://{}/lib/app:v1", upstream.addr),
    );
    blocking(move || {
        s.run(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:alice-pw",
            &from,
            &to,
        ])
    })
    .await
    .unwrap();
    let cache = cache(
        cache_dir.path(),
        &[format!("hub.test=http://{}", upstream.addr)],
        &[],
    );
    let proxy = Quayside::proxy(BIN, cache.addr, &[]);

    // skopeo, by path prefix, straight to the cache.
    let (s, from, to) = (
        skopeo.clone(),
        format!("docker://{}/hub.test/lib/app:v1", cache.addr),
        format!("oci:{}:v1", out.path().display()),
    );
    blocking(move || s.copy(&from, &to)).await.unwrap();
    image::assert_layout_holds(out.path(), img.all());
    let blobs = img.blobs().count() as f64;
    assert_eq!(upstream_blob_gets(upstream.addr).await, blobs);

    // containerd, told by hosts.toml to use the node proxy as docker.io-style mirror; the origin
    // itself is unreachable, so every byte came through the proxy and the cache.
    let host_dir = hosts.path().join("hub.test");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!(
            "server = \"http://127.0.0.1:9\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            proxy.addr
        ),
    )
    .unwrap();
    let hosts_dir = hosts.path().display().to_string();
    let ctd = blocking(Containerd::start).await.unwrap();
    let ctd = Arc::new(ctd);
    let c = ctd.clone();
    blocking(move || {
        c.ctr(&[
            "images",
            "pull",
            "--hosts-dir",
            &hosts_dir,
            "--platform",
            "linux/amd64",
            "hub.test/lib/app:v1",
        ])
    })
    .await
    .unwrap();
    let c = ctd.clone();
    let listed = blocking(move || c.ctr(&["images", "list"])).await.unwrap();
    assert!(listed.contains(&img.manifest.digest), "{listed}");
    let c = ctd.clone();
    let content = blocking(move || c.ctr(&["content", "list"])).await.unwrap();
    for b in img.all() {
        assert!(content.contains(&b.digest), "{content}");
    }
    // One cache for both forms: containerd's pull cost the upstream no blob.
    assert_eq!(upstream_blob_gets(upstream.addr).await, blobs);
    let hits = metric(
        cache.addr,
        r#"quayside_mirror_requests_total{upstream="hub.test",kind="blob",result="hit"}"#,
    )
    .await;
    assert!(hits >= blobs, "{hits}");

    // The spec's main branch: `ns` honoured is echoed; Docker Hub's rule needs no `library/` here,
    // but the name is the cache's either way.
    let resp = get(&format!(
        "http://{}/v2/lib/app/manifests/v1?ns=hub.test",
        proxy.addr
    ))
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["oci-namespace"], "hub.test");
    assert_eq!(
        resp.headers()["docker-content-digest"],
        img.manifest.digest.as_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_htpasswd_upstream_is_pulled_with_its_credentials_and_refuses_without() {
    let (peer_dir, with_dir, without_dir, layout, out, creds) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(peer_dir.path().join("htpasswd"), format!("bob:{hash}\n")).unwrap();
    let peer = blocking({
        let dir = peer_dir.path().to_owned();
        move || {
            Distribution::start_with_storage(&format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.join("data").display(),
                dir.join("htpasswd").display()
            ))
        }
    })
    .await
    .unwrap();
    let img = Image::new(42, &[120_000], "amd64");
    image::write_layout(layout.path(), std::slice::from_ref(&img), None, "v1");
    let skopeo = Arc::new(Skopeo::new());
    let (s, from, to) = (
        skopeo.clone(),
        format!("oci:{}:v1", layout.path().display()),
        format!("docker://{}/team/app:v1", peer.addr),
    );
    blocking(move || {
        s.run(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "bob:s3cret",
            &from,
            &to,
        ])
    })
    .await
    .unwrap();
    std::fs::write(creds.path().join("username"), "bob").unwrap();
    std::fs::write(creds.path().join("password"), "s3cret\n").unwrap();
    let upstream = format!("priv.test=http://{}", peer.addr);
    let credentials = format!("priv.test={}", creds.path().display());
    let with = cache(
        with_dir.path(),
        std::slice::from_ref(&upstream),
        &["--upstream-credentials", &credentials],
    );
    let without = cache(without_dir.path(), &[upstream], &[]);

    let (s, from, to) = (
        skopeo.clone(),
        format!("docker://{}/priv.test/team/app:v1", with.addr),
        format!("oci:{}:v1", out.path().display()),
    );
    blocking(move || s.copy(&from, &to)).await.unwrap();
    image::assert_layout_holds(out.path(), img.all());

    let resp = get(&format!(
        "http://{}/v2/priv.test/team/app/manifests/v1",
        without.addr
    ))
    .await;
    assert_eq!(resp.status(), 403);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("DENIED") && text.contains("priv.test"),
        "{text}"
    );
    // The upstream's address is the operator's business, not the client's.
    assert!(!text.contains(&peer.addr.to_string()), "{text}");
    assert!(!with.log.lock().unwrap().join("\n").contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_concurrent_cold_pulls_of_one_blob_fetch_it_once() {
    let (up_dir, cache_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let upstream = Quayside::registry(BIN, up_dir.path(), &[]);
    let data = random_bytes(64 << 20, 7);
    let digest = push_blob(upstream.addr, "lib/big", &data).await;
    let cache = cache(
        cache_dir.path(),
        &[format!("up.test=http://{}", upstream.addr)],
        &[],
    );
    let url = format!("http://{}/v2/up.test/lib/big/blobs/{digest}", cache.addr);
    let pulls = (0..16).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let resp = get(&url).await;
            assert_eq!(resp.status(), 200);
            sha256(&resp.bytes().await.unwrap())
        })
    });
    for pull in futures_util::future::join_all(pulls).await {
        assert_eq!(pull.unwrap(), digest);
    }
    assert_eq!(upstream_blob_gets(upstream.addr).await, 1.0);
    // Cached now: a later pull costs the upstream nothing.
    let resp = get(&url).await;
    assert_eq!(sha256(&resp.bytes().await.unwrap()), digest);
    assert_eq!(upstream_blob_gets(upstream.addr).await, 1.0);
    let received = metric(
        cache.addr,
        r#"quayside_mirror_upstream_received_bytes_total{upstream="up.test"}"#,
    )
    .await;
    assert_eq!(received, data.len() as f64);
}

/// An upstream serving one blob for one digest: the first half at once, the rest when the test
/// adds a permit to `gate`; it counts the blob GETs it is sent.
struct HandMade {
    addr: SocketAddr,
    gets: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

impl HandMade {
    async fn start(served: Vec<u8>) -> HandMade {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (gets, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(0)));
        let served = Arc::new(served);
        let (g, s) = (gets.clone(), gate.clone());
        tokio::spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                tokio::spawn(HandMade::answer(conn, served.clone(), g.clone(), s.clone()));
            }
        });
        HandMade { addr, gets, gate }
    }

    async fn answer(
        mut conn: tokio::net::TcpStream,
        served: Arc<Vec<u8>>,
        gets: Arc<AtomicUsize>,
        gate: Arc<Semaphore>,
    ) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        if !head.starts_with("GET /v2/lib/blob/blobs/") {
            let _ = conn
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            return;
        }
        gets.fetch_add(1, Ordering::SeqCst);
        let half = served.len() / 2;
        let headers = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            served.len()
        );
        let _ = conn.write_all(headers.as_bytes()).await;
        let _ = conn.write_all(&served[..half]).await;
        let _ = conn.flush().await;
        if let Ok(permit) = gate.acquire().await {
            permit.forget();
        }
        let _ = conn.write_all(&served[half..]).await;
    }
}

/// Reads `resp` until at least `n` bytes arrived; what arrived.
async fn read_at_least(
    resp: reqwest::Response,
    n: usize,
) -> (
    Vec<u8>,
    impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>>,
) {
    let mut body = resp.bytes_stream();
    let mut got = Vec::new();
    let read = async {
        while got.len() < n {
            got.extend_from_slice(&body.next().await.expect("more bytes").unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the first half streams through before the upstream sends the rest");
    (got, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_stream_through_as_they_arrive_and_a_leaving_client_does_not_stop_the_fetch() {
    let cache_dir = tempfile::tempdir().unwrap();
    let data = random_bytes(4 << 20, 8);
    let digest = sha256(&data);
    let upstream = HandMade::start(data.clone()).await;
    let cache = cache(
        cache_dir.path(),
        &[format!("slow.test=http://{}", upstream.addr)],
        &[],
    );
    let url = format!("http://{}/v2/slow.test/lib/blob/blobs/{digest}", cache.addr);

    // The first client gets the first half while the upstream holds the second, then leaves.
    let half = data.len() / 2;
    let (first, body) = read_at_least(get(&url).await, half).await;
    assert_eq!(first[..half], data[..half]);
    drop(body);
    // A second client joins the same fetch and reads what arrived so far.
    let second = get(&url).await;
    assert_eq!(second.status(), 200);
    let (mut got, mut body) = read_at_least(second, half).await;
    upstream.gate.add_permits(1);
    while let Some(chunk) = body.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(sha256(&got), digest);
    // The fetch the first client left finished into the cache: the upstream was asked once.
    let resp = get(&url).await;
    assert_eq!(sha256(&resp.bytes().await.unwrap()), digest);
    assert_eq!(upstream.gets.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_that_does_not_verify_is_never_served_whole_nor_cached() {
    let cache_dir = tempfile::tempdir().unwrap();
    let data = random_bytes(1 << 20, 9);
    let digest = sha256(&data);
    // Same length, other bytes: only the digest tells.
    let lie = random_bytes(1 << 20, 10);
    let upstream = HandMade::start(lie).await;
    upstream.gate.add_permits(100);
    let cache = cache(
        cache_dir.path(),
        &[format!("liar.test=http://{}", upstream.addr)],
        &[],
    );
    let url = format!("http://{}/v2/liar.test/lib/blob/blobs/{digest}", cache.addr);
    for attempt in 1..=2 {
        let resp = get(&url).await;
        // Either refused outright or cut short: never all the bytes.
        if resp.status() == 200 {
            let mut body = resp.bytes_stream();
            let mut n = 0;
            let mut failed = false;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(c) => n += c.len(),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            assert!(
                failed && n < data.len(),
                "attempt {attempt}: {n} bytes, complete answer"
            );
        } else {
            assert_eq!(resp.status(), 502);
        }
        // Nothing cached: the next attempt asks the upstream again.
        assert_eq!(upstream.gets.load(Ordering::SeqCst), attempt);
    }
    let errors = metric(
        cache.addr,
        r#"quayside_mirror_upstream_errors_total{upstream="liar.test"}"#,
    )
    .await;
    assert!(errors >= 2.0, "{errors}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_tags_outlive_their_upstream_and_moved_tags_are_seen_after_the_ttl() {
    let (up_dir, eager_dir, patient_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut upstream = Quayside::registry(BIN, up_dir.path(), &[]);
    let (one, two) = (
        Image::new(43, &[10_000], "amd64"),
        Image::new(44, &[10_000], "amd64"),
    );
    push_image(upstream.addr, "lib/app", &one, "v1").await;
    let declared = [format!("up.test=http://{}", upstream.addr)];
    let eager = cache(eager_dir.path(), &declared, &["--upstream-tag-ttl", "0s"]);
    let patient = cache(patient_dir.path(), &declared, &["--upstream-tag-ttl", "1h"]);
    let tag = |c: &Quayside| format!("http://{}/v2/up.test/lib/app/manifests/v1", c.addr);
    assert_eq!(tag_digest(&tag(&eager)).await, one.manifest.digest);
    assert_eq!(tag_digest(&tag(&patient)).await, one.manifest.digest);

    push_image(upstream.addr, "lib/app", &two, "v1").await;
    assert_eq!(tag_digest(&tag(&eager)).await, two.manifest.digest);
    assert_eq!(
        tag_digest(&tag(&patient)).await,
        one.manifest.digest,
        "within its TTL a tag is not checked again"
    );
    let config = format!(
        "http://{}/v2/up.test/lib/app/blobs/{}",
        eager.addr, two.config.digest
    );
    assert_eq!(get(&config).await.bytes().await.unwrap(), two.config.data);

    upstream.kill();
    assert_eq!(tag_digest(&tag(&eager)).await, two.manifest.digest);
    let by_digest = format!(
        "http://{}/v2/up.test/lib/app/manifests/{}",
        eager.addr, two.manifest.digest
    );
    assert_eq!(tag_digest(&by_digest).await, two.manifest.digest);
    assert_eq!(get(&config).await.bytes().await.unwrap(), two.config.data);
    let resp = get(&format!(
        "http://{}/v2/up.test/lib/app/manifests/v2",
        eager.addr
    ))
    .await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("UNAVAILABLE") && text.contains("up.test"),
        "{text}"
    );
    assert!(!text.contains(&upstream.addr.to_string()), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mirrored_repositories_are_read_only_and_the_registry_keeps_its_own() {
    let (up_dir, cache_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let upstream = Quayside::registry(BIN, up_dir.path(), &[]);
    let cache = cache(
        cache_dir.path(),
        &[format!("up.test=http://{}", upstream.addr)],
        &[],
    );
    for path in [
        "/v2/up.test/lib/x/blobs/uploads/",
        "/v2/lib/x/blobs/uploads/?ns=up.test",
    ] {
        let resp = client()
            .post(format!("http://{}{path}", cache.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{path}");
        let text = resp.text().await.unwrap();
        assert!(
            text.contains("DENIED") && text.contains("read-only"),
            "{text}"
        );
    }
    let own = Image::new(45, &[5_000], "amd64");
    push_image(cache.addr, "team/app", &own, "v1").await;
    assert_eq!(
        tag_digest(&format!("http://{}/v2/team/app/manifests/v1", cache.addr)).await,
        own.manifest.digest
    );
    // An `ns` the registry does not mirror: containerd moves on to its next host.
    let resp = get(&format!(
        "http://{}/v2/team/app/manifests/v1?ns=elsewhere.test",
        cache.addr
    ))
    .await;
    assert_eq!(resp.status(), 404);
    assert!(
        !resp.headers().contains_key("oci-namespace"),
        "an ns not honoured is not echoed"
    );
    assert!(resp.text().await.unwrap().contains("NAME_UNKNOWN"));
}

#[test]
fn a_bad_upstream_declaration_names_the_flag() {
    for (value, says) in [
        ("docker.io", "is not HOST=URL"),
        ("Docker Hub=https://x", "one repository-name component"),
        (
            "docker.io=registry-1.docker.io",
            "must start with https:// or http://",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args(["registry", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(["--upstream", value])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--upstream / QUAYSIDE_UPSTREAMS") && stderr.contains(says),
            "{value}: {stderr}"
        );
    }
}

/// A registry-secret for ECR, as Workflow mounts it.
fn ecr_secret() -> tempfile::TempDir {
    testkit::secret_dir(&[
        ("accesskey", "AKIAIOSFODNN7EXAMPLE"),
        ("secretkey", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ("region", "us-west-2"),
        ("registryid", ""),
        ("hostname", ""),
    ])
}

/// A cache of `host` at `url` whose credentials are ECR tokens from `moto`.
fn ecr_cache(dir: &Path, host: &str, url: &str, secret: &Path, moto: &Moto) -> Quayside {
    let args: Vec<String> = [
        "--log-format",
        "json",
        "registry",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.display().to_string(),
        "--upstream",
        &format!("{host}={url}"),
        "--upstream-credentials",
        &format!("{host}=ecr:{}", secret.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let endpoint = moto.endpoint();
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    Quayside::spawn_env(BIN, &args, &env, "registry serving")
}

/// An ECR upstream: the tokens come from the ECR provider (moto, its tokens good for 12 h), and
/// the registry standing in for ECR accepts exactly the token moto issues. An issuer whose
/// tokens are already expired gets no pull through.
#[tokio::test(flavor = "multi_thread")]
async fn an_ecr_upstream_is_pulled_with_the_tokens_its_provider_issues() {
    let (peer_dir, cache_dir, stale_dir, layout) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let moto = blocking(|| Moto::with_ecr_tokens_expiring_in(Duration::from_secs(12 * 3600)))
        .await
        .unwrap();
    let token = "123456789012-auth-token";
    let hash = bcrypt::hash(token, 4).unwrap();
    std::fs::write(peer_dir.path().join("htpasswd"), format!("AWS:{hash}\n")).unwrap();
    let dir = peer_dir.path().to_owned();
    let peer = blocking(move || {
        Distribution::start_with_storage(&format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             auth:\n  htpasswd:\n    realm: ecr\n    path: {}\n",
            dir.join("data").display(),
            dir.join("htpasswd").display()
        ))
    })
    .await
    .unwrap();
    let img = Image::new(46, &[90_000], "amd64");
    image::write_layout(layout.path(), std::slice::from_ref(&img), None, "v1");
    let (from, to, creds) = (
        format!("oci:{}:v1", layout.path().display()),
        format!("docker://{}/team/app:v1", peer.addr),
        format!("AWS:{token}"),
    );
    blocking(move || {
        Skopeo::new().run(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &from,
            &to,
        ])
    })
    .await
    .unwrap();

    let host = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
    let url = format!("http://{}", peer.addr);
    let secret = ecr_secret();
    let cache = ecr_cache(cache_dir.path(), host, &url, secret.path(), &moto);
    let manifest = format!("http://{}/v2/{host}/team/app/manifests/v1", cache.addr);
    assert_eq!(tag_digest(&manifest).await, img.manifest.digest);
    let layer = &img.layers[0];
    let blob = format!(
        "http://{}/v2/{host}/team/app/blobs/{}",
        cache.addr, layer.digest
    );
    assert_eq!(get(&blob).await.bytes().await.unwrap(), layer.data);
    assert!(!cache.log.lock().unwrap().join("\n").contains(token));

    let expired = blocking(Moto::start).await.unwrap();
    let stale = ecr_cache(stale_dir.path(), host, &url, secret.path(), &expired);
    let resp = get(&format!(
        "http://{}/v2/{host}/team/app/manifests/v1",
        stale.addr
    ))
    .await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(text.contains("expired") && !text.contains(token), "{text}");
}

/// Two replicas on one storage, pulled at once while the upstream holds the blob's second half:
/// the replica that claimed the fetch streams it to its clients, the other waits for the commit
/// and serves its clients from storage, and the upstream is asked once.
async fn two_replicas_fetch_a_blob_once(data_dir: &Path, storage: &[&str]) {
    let data = random_bytes(4 << 20, 11);
    let digest = sha256(&data);
    let upstream = HandMade::start(data).await;
    let declared = [format!("slow.test=http://{}", upstream.addr)];
    let (a, b) = (
        cache(data_dir, &declared, storage),
        cache(data_dir, &declared, storage),
    );
    let pulls: Vec<_> = (0..16)
        .map(|i| {
            let replica = if i % 2 == 0 { a.addr } else { b.addr };
            let url = format!("http://{replica}/v2/slow.test/lib/blob/blobs/{digest}");
            tokio::spawn(async move {
                let resp = get(&url).await;
                let status = resp.status();
                let body = resp.bytes().await.unwrap();
                let start = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                assert_eq!(status, 200, "{start}");
                sha256(&body)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    upstream.gate.add_permits(1);
    for pull in futures_util::future::join_all(pulls).await {
        assert_eq!(pull.unwrap(), digest);
    }
    assert_eq!(upstream.gets.load(Ordering::SeqCst), 1);
    for replica in [a.addr, b.addr] {
        let url = format!("http://{replica}/v2/slow.test/lib/blob/blobs/{digest}");
        assert_eq!(sha256(&get(&url).await.bytes().await.unwrap()), digest);
    }
    assert_eq!(upstream.gets.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_disk_fetch_a_blob_once() {
    let shared = tempfile::tempdir().unwrap();
    two_replicas_fetch_a_blob_once(shared.path(), &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_bucket_fetch_a_blob_once() {
    let unused = tempfile::tempdir().unwrap();
    let bucket = format!("mirror-{}", std::process::id());
    let creds = testkit::secret_dir(&[
        ("accesskey", "AKIDTEST"),
        ("secretkey", "not-a-real-secret"),
        ("region", "us-west-2"),
        ("registry-bucket", &bucket),
    ]);
    let (creds, endpoint) = (creds.path().display().to_string(), testkit::s3_endpoint());
    let storage = [
        "--storage",
        "s3",
        "--creds-dir",
        &creds,
        "--s3-endpoint",
        &endpoint,
        "--s3-path-style",
        "true",
    ];
    two_replicas_fetch_a_blob_once(unused.path(), &storage).await;
}

/// The registry killed in the middle of a fetch: no blob is left visible under the digest, and
/// the next process fetches it again and serves it whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_killed_mid_fetch_leaves_no_blob_and_fetches_it_again() {
    let data_dir = tempfile::tempdir().unwrap();
    let data = random_bytes(2 << 20, 12);
    let digest = sha256(&data);
    let upstream = HandMade::start(data.clone()).await;
    let declared = [format!("slow.test=http://{}", upstream.addr)];
    let mut first = cache(data_dir.path(), &declared, &[]);
    let url = |c: &Quayside| format!("http://{}/v2/slow.test/lib/blob/blobs/{digest}", c.addr);
    let (half, _body) = read_at_least(get(&url(&first)).await, data.len() / 2).await;
    assert_eq!(half[..], data[..half.len()]);
    first.kill();
    let hex = digest.trim_start_matches("sha256:");
    let blob = data_dir.path().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    assert!(!blob.exists(), "a blob half fetched is visible");

    let second = cache(data_dir.path(), &declared, &[]);
    upstream.gate.add_permits(2);
    let resp = get(&url(&second)).await;
    assert_eq!(sha256(&resp.bytes().await.unwrap()), digest);
    assert_eq!(upstream.gets.load(Ordering::SeqCst), 2);
    assert!(blob.exists());
}

/// `--upstream-cache-max-age`: a mirrored repository last pulled longer ago than the max age is
/// forgotten (with its upstream down it is then unavailable), one without a mark yet gets the
/// whole age, and gc then reclaims the forgotten one's blobs only. The marks are in storage, so a
/// later process (or another replica) sees what an earlier one cached.
#[tokio::test(flavor = "multi_thread")]
async fn mirrored_repositories_nobody_pulls_are_forgotten_after_the_max_age() {
    let (up_dir, cache_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut upstream = Quayside::registry(BIN, up_dir.path(), &[]);
    let (idle, busy) = (
        Image::new(47, &[8_000], "amd64"),
        Image::new(48, &[8_000], "amd64"),
    );
    push_image(upstream.addr, "lib/idle", &idle, "v1").await;
    push_image(upstream.addr, "lib/busy", &busy, "v1").await;
    let declared = [format!("up.test=http://{}", upstream.addr)];
    // A first process caches both and marks nothing (no max age).
    let mut first = cache(cache_dir.path(), &declared, &[]);
    assert!(pull(first.addr, "idle", &idle).await && pull(first.addr, "busy", &busy).await);
    first.kill();
    upstream.kill();
    let repo = cache_dir
        .path()
        .join("docker/registry/v2/repositories/up.test/lib");
    std::fs::create_dir_all(repo.join("idle/_quayside")).unwrap();
    std::fs::write(repo.join("idle/_quayside/used"), "2020-01-01T00:00:00Z").unwrap();
    assert!(!repo.join("busy/_quayside/used").exists());

    let cache = cache(
        cache_dir.path(),
        &declared,
        &["--upstream-cache-max-age", "8s"],
    );
    let expired = r#"quayside_mirror_repositories_expired_total{upstream="up.test"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric(cache.addr, expired).await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "nothing expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(cache.addr, expired).await, 1.0);
    assert!(
        !pull(cache.addr, "idle", &idle).await,
        "the idle repository is still served"
    );
    assert!(pull(cache.addr, "busy", &busy).await);
    assert!(repo.join("busy/_quayside/used").exists());

    let data = cache_dir.path().display().to_string();
    let out = Command::new(BIN)
        .args(["gc", "--data-dir", &data, "--gc-grace", "0s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blob_file = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        cache_dir.path().join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    };
    assert!(!blob_file(&idle.layers[0].digest).exists());
    assert!(blob_file(&busy.layers[0].digest).exists());
}

/// Pulls `up.test/lib/<repo>:v1` (manifest, then every blob) through `cache`: whether it was
/// served, the blobs answering as the manifest did.
async fn pull(cache: SocketAddr, repo: &str, img: &Image) -> bool {
    let base = format!("http://{cache}/v2/up.test/lib/{repo}");
    let ok = get(&format!("{base}/manifests/v1")).await.status() == 200;
    for blob in img.blobs() {
        let resp = get(&format!("{base}/blobs/{}", blob.digest)).await;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(
            status == 200,
            ok,
            "{repo} {}: {status} {text:.300}",
            blob.digest
        );
    }
    ok
}

/// An upstream that rate-limits (a Quayside with `--rate-limit`, answering 429 past its burst,
/// as Docker Hub does): with a TTL of 0 every pull checks the tag, and every pull is still
/// answered from the cache while the upstream refuses.
#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limiting_upstream_does_not_stop_cached_pulls() {
    let (up_dir, cache_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let limits = ["--rate-limit", "1", "--rate-limit-burst", "10"];
    let upstream = Quayside::registry(BIN, up_dir.path(), &limits);
    let img = Image::new(49, &[4_000], "amd64");
    push_image(upstream.addr, "lib/app", &img, "v1").await;
    let declared = [format!("up.test=http://{}", upstream.addr)];
    let cache = cache(cache_dir.path(), &declared, &["--upstream-tag-ttl", "0s"]);
    let tag = format!("http://{}/v2/up.test/lib/app/manifests/v1", cache.addr);
    for _ in 0..20 {
        assert_eq!(tag_digest(&tag).await, img.manifest.digest);
    }
    let text = get(&format!("http://{}/metrics", upstream.addr))
        .await
        .text()
        .await
        .unwrap();
    let refused: f64 = text
        .lines()
        .filter(|l| l.starts_with("quayside_http_requests_total{") && l.contains(r#"status="429""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(refused >= 1.0, "the upstream never refused: {refused}");
    let errors = metric(
        cache.addr,
        r#"quayside_mirror_upstream_errors_total{upstream="up.test"}"#,
    )
    .await;
    assert_eq!(errors, refused);
}

/// `--upstream-max-fetches`: fetches go on when their clients leave, so their number is capped;
/// past it a client asking for another uncached blob gets 429 with Retry-After, a client of a
/// running fetch still joins it, and a slot frees as a fetch ends.
#[tokio::test(flavor = "multi_thread")]
async fn fetches_at_once_are_capped_and_joining_one_costs_no_slot() {
    let cache_dir = tempfile::tempdir().unwrap();
    let data = random_bytes(1 << 20, 13);
    let upstream = HandMade::start(data.clone()).await;
    let declared = [format!("slow.test=http://{}", upstream.addr)];
    let cache = cache(
        cache_dir.path(),
        &declared,
        &["--upstream-max-fetches", "2"],
    );
    let url = |digest: &str| format!("http://{}/v2/slow.test/lib/blob/blobs/{digest}", cache.addr);
    // Two fetches held by the upstream (digests it cannot satisfy: they fail when released).
    let (one, two, three) = (sha256(b"one"), sha256(b"two"), sha256(b"three"));
    let first = get(&url(&one)).await;
    let second = get(&url(&two)).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let refused = get(&url(&three)).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(refused.text().await.unwrap().contains("TOOMANYREQUESTS"));
    let joined = get(&url(&one)).await;
    assert_eq!(joined.status(), 200);
    assert_eq!(upstream.gets.load(Ordering::SeqCst), 2);

    upstream.gate.add_permits(10);
    for resp in [first, second, joined] {
        assert!(
            resp.bytes().await.is_err(),
            "a blob that does not verify was served whole"
        );
    }
    let digest = sha256(&data);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let resp = get(&url(&digest)).await;
        if resp.status() == 200 {
            assert_eq!(sha256(&resp.bytes().await.unwrap()), digest);
            break;
        }
        // The failed fetches leave the table as their tasks end.
        assert_eq!(resp.status(), 429);
        assert!(
            std::time::Instant::now() < deadline,
            "the slots never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
