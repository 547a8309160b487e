//! `quayside registry --auth htpasswd|token` with real clients: skopeo and containerd's `ctr`
//! with credentials, the node proxy injecting them, 401 challenges and 403 DENIED, no leak of
//! whether a private repository exists, a filtered catalog, and tokens from one replica accepted
//! by another.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use testkit::image::{self, Image};
use testkit::process::Quayside;
use testkit::tools::{Containerd, Skopeo};

const BIN: &str = env!("CARGO_BIN_EXE_quayside");
const POLICY: &str = "rules:
  - users: [alice]
    repositories: [\"*\"]
    actions: [pull, push, delete]
  - users: [bob]
    repositories: [\"team/*\"]
    actions: [pull]
";

/// htpasswd (alice, bob), policy and token secret files in `dir`.
fn auth_files(dir: &Path) -> Vec<String> {
    let htpasswd = format!(
        "alice:{}\nbob:{}\n",
        bcrypt::hash("alice-pw", 5).unwrap(),
        bcrypt::hash("bob-pw", 5).unwrap()
    );
    std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
    std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
    std::fs::write(
        dir.join("secret"),
        "c2hhcmVkIGJ5IGV2ZXJ5IHJlcGxpY2Egb2YgdGhlIHJlZ2lzdHJ5\n",
    )
    .unwrap();
    [
        "--htpasswd",
        "htpasswd",
        "--auth-policy",
        "policy.yaml",
        "--auth-token-secret-file",
        "secret",
    ]
    .iter()
    .map(|a| {
        if a.starts_with("--") {
            a.to_string()
        } else {
            dir.join(a).display().to_string()
        }
    })
    .collect()
}

fn registry(data: &Path, files: &[String], mode: &str, extra: &[&str]) -> Quayside {
    let mut args: Vec<&str> = vec!["--auth", mode];
    args.extend(files.iter().map(String::as_str));
    args.extend(extra);
    Quayside::registry(BIN, data, &args)
}

/// `curl -i`: (status, response headers and body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-i"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn body(response: &str) -> &str {
    response.split("\r\n\r\n").nth(1).unwrap_or("")
}

fn seed_layout(dir: &Path) -> Image {
    let img = Image::new(3, &[100_000], "amd64");
    image::write_layout(dir, std::slice::from_ref(&img), None, "v1");
    img
}

/// The node proxy injecting bob's credentials: a client with none can read team/app through it.
fn proxy_as_bob(skopeo: &Skopeo, registry: SocketAddr) -> Quayside {
    let proxy = Quayside::proxy(
        BIN,
        registry,
        &[
            "--upstream-username",
            "bob",
            "--upstream-password",
            "bob-pw",
        ],
    );
    let through = skopeo.try_inspect(&format!("{}/team/app:v1", proxy.addr), None);
    assert!(
        through.status.success(),
        "{}",
        String::from_utf8_lossy(&through.stderr)
    );
    proxy
}

#[test]
fn htpasswd_mode_with_skopeo_ctr_and_the_proxy() {
    let (dir, data, layout) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let files = auth_files(dir.path());
    let reg = registry(data.path(), &files, "htpasswd", &[]);
    let skopeo = Skopeo::new();
    let img = seed_layout(layout.path());
    let a = reg.addr.to_string();

    let (status, text) = curl(&[&format!("http://{a}/v2/")]);
    assert_eq!(status, 401);
    assert!(
        text.to_lowercase()
            .contains("www-authenticate: basic realm=\"quayside\""),
        "{text}"
    );
    assert!(body(&text).contains("UNAUTHORIZED"));

    assert!(
        skopeo
            .try_push_layout(
                layout.path(),
                &format!("{a}/team/app:v1"),
                Some("alice:alice-pw")
            )
            .status
            .success()
    );
    assert!(
        skopeo
            .try_push_layout(
                layout.path(),
                &format!("{a}/private/db:v1"),
                Some("alice:alice-pw")
            )
            .status
            .success()
    );
    assert!(
        !skopeo
            .try_push_layout(
                layout.path(),
                &format!("{a}/team/app:v2"),
                Some("alice:wrong")
            )
            .status
            .success()
    );
    // bob may pull team/*, not push.
    assert!(
        skopeo
            .try_inspect(&format!("{a}/team/app:v1"), Some("bob:bob-pw"))
            .status
            .success()
    );
    assert!(
        !skopeo
            .try_push_layout(
                layout.path(),
                &format!("{a}/team/app:v2"),
                Some("bob:bob-pw")
            )
            .status
            .success()
    );
    let (status, text) = curl(&[
        "-u",
        "bob:bob-pw",
        "-X",
        "PUT",
        &format!("http://{a}/v2/team/app/manifests/v9"),
    ]);
    assert_eq!(status, 403);
    assert!(body(&text).contains("DENIED"));

    // A private repository that exists and one that does not look the same to bob and to anonymous.
    for who in [vec!["-u", "bob:bob-pw"], vec![]] {
        let get = |repo: &str| {
            let url = format!("http://{a}/v2/{repo}/manifests/v1");
            let mut args = who.clone();
            args.push(&url);
            let (status, text) = curl(&args);
            (status, body(&text).to_owned())
        };
        let (exists, missing) = (get("private/db"), get("private/nothing"));
        assert_eq!(exists, missing);
        assert!(exists.0 == 401 || exists.0 == 403);
    }
    let (_, text) = curl(&["-u", "bob:bob-pw", &format!("http://{a}/v2/_catalog")]);
    assert_eq!(body(&text), r#"{"repositories":["team/app"]}"#);
    let (_, text) = curl(&["-u", "alice:alice-pw", &format!("http://{a}/v2/_catalog")]);
    assert_eq!(body(&text), r#"{"repositories":["private/db","team/app"]}"#);

    Containerd::start().pull(&format!("{}/team/app:v1", reg.addr), Some("bob:bob-pw"));
    // Nodes pull through the proxy, which adds the credentials.
    let proxy = proxy_as_bob(&skopeo, reg.addr);
    Containerd::start().pull(&format!("{}/team/app:v1", proxy.addr), None);
    let (status, _) = curl(&[&format!(
        "http://{}/v2/team/app/manifests/{}",
        proxy.addr, img.manifest.digest
    )]);
    assert_eq!(status, 200);
}

#[test]
fn token_mode_with_two_replicas_anonymous_pulls_and_the_proxy() {
    let (dir, data, layout) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let files = auth_files(dir.path());
    let a = registry(
        data.path(),
        &files,
        "token",
        &["--anonymous-pull", "public/*"],
    );
    let b = registry(
        data.path(),
        &files,
        "token",
        &["--anonymous-pull", "public/*"],
    );
    let skopeo = Skopeo::new();
    seed_layout(layout.path());

    let (status, text) = curl(&[&format!("http://{}/v2/", a.addr)]);
    assert_eq!(status, 401);
    let challenge = format!(
        "bearer realm=\"http://{}/auth/token\",service=\"quayside\"",
        a.addr
    );
    assert!(text.to_lowercase().contains(&challenge), "{text}");

    // skopeo follows the challenge to the token endpoint.
    assert!(
        skopeo
            .try_push_layout(
                layout.path(),
                &format!("{}/team/app:v1", a.addr),
                Some("alice:alice-pw")
            )
            .status
            .success()
    );
    assert!(
        skopeo
            .try_push_layout(
                layout.path(),
                &format!("{}/public/web:v1", a.addr),
                Some("alice:alice-pw")
            )
            .status
            .success()
    );
    assert!(
        !skopeo
            .try_push_layout(
                layout.path(),
                &format!("{}/team/app:v2", a.addr),
                Some("bob:bob-pw")
            )
            .status
            .success()
    );
    assert!(
        skopeo
            .try_inspect(&format!("{}/public/web:v1", b.addr), None)
            .status
            .success()
    );
    assert!(
        !skopeo
            .try_inspect(&format!("{}/team/app:v1", b.addr), None)
            .status
            .success()
    );

    // A token from replica a works on replica b, for exactly its scope.
    let url = format!(
        "http://{}/auth/token?service=quayside&scope=repository:team/app:pull,push",
        a.addr
    );
    let (status, text) = curl(&["-u", "bob:bob-pw", &url]);
    assert_eq!(status, 200);
    let token: serde_json::Value = serde_json::from_str(body(&text)).unwrap();
    let bearer = format!("Authorization: Bearer {}", token["token"].as_str().unwrap());
    let (status, _) = curl(&[
        "-H",
        &bearer,
        &format!("http://{}/v2/team/app/manifests/v1", b.addr),
    ]);
    assert_eq!(status, 200);
    let (status, text) = curl(&[
        "-H",
        &bearer,
        "-X",
        "DELETE",
        &format!("http://{}/v2/team/app/manifests/v1", b.addr),
    ]);
    assert_eq!(status, 401, "bob's token carries pull only: {text}");
    let (status, _) = curl(&["-u", "bob:wrong", &url]);
    assert_eq!(status, 401);

    Containerd::start().pull(&format!("{}/team/app:v1", b.addr), Some("alice:alice-pw"));
    proxy_as_bob(&skopeo, a.addr);
}

/// Basic mode with anonymous pulls: `GET /v2/` still challenges anonymous callers, so skopeo
/// sends alice's credentials and her push works (it failed "unauthorized" when `/v2/` answered
/// 200), while an anonymous pull of `public/*` works without credentials.
#[test]
fn htpasswd_mode_with_anonymous_pulls_still_challenges_at_the_base() {
    let (dir, data, layout) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let files = auth_files(dir.path());
    let reg = registry(
        data.path(),
        &files,
        "htpasswd",
        &["--anonymous-pull", "public/*"],
    );
    let skopeo = Skopeo::new();
    seed_layout(layout.path());
    let a = reg.addr.to_string();
    let (status, text) = curl(&[&format!("http://{a}/v2/")]);
    assert_eq!(status, 401, "{text}");
    assert!(
        text.to_lowercase().contains("www-authenticate: basic"),
        "{text}"
    );
    for repo in ["team/app:v1", "public/web:v1"] {
        let out = skopeo.try_push_layout(
            layout.path(),
            &format!("{a}/{repo}"),
            Some("alice:alice-pw"),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = skopeo.try_inspect(&format!("{a}/public/web:v1"), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !skopeo
            .try_inspect(&format!("{a}/team/app:v1"), None)
            .status
            .success()
    );
    Containerd::start().pull(&format!("{}/public/web:v1", reg.addr), None);
    // Paging counts only what the caller may see, and the Link never names a hidden repository.
    let (_, text) = curl(&[&format!("http://{a}/v2/_catalog?n=1")]);
    assert_eq!(body(&text), r#"{"repositories":["public/web"]}"#);
    assert!(!text.to_lowercase().contains("link:"), "{text}");
    let (_, text) = curl(&[
        "-u",
        "alice:alice-pw",
        &format!("http://{a}/v2/_catalog?n=1"),
    ]);
    assert_eq!(body(&text), r#"{"repositories":["public/web"]}"#);
    assert!(
        text.contains("last=public%2Fweb") || text.contains("last=public/web"),
        "{text}"
    );
}

/// Token mode builds the challenge's realm from a validated `Host` only: a header that tries to
/// close the quoted realm and add a scope is ignored.
#[test]
fn token_mode_realm_ignores_a_hostile_host_header() {
    let (dir, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files = auth_files(dir.path());
    let reg = registry(data.path(), &files, "token", &[]);
    let (status, text) = curl(&[
        "-H",
        "Host: evil.example\",scope=\"repository:x:push",
        &format!("http://{}/v2/team/app/manifests/v1", reg.addr),
    ]);
    assert_eq!(status, 401);
    let challenge = text
        .lines()
        .find(|l| l.to_lowercase().starts_with("www-authenticate:"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.contains("realm=\"http://localhost/auth/token\""),
        "{challenge}"
    );
    assert!(!challenge.contains("evil"), "{challenge}");
    assert_eq!(challenge.matches("scope=").count(), 1, "{challenge}");
}

/// One HTTP/1.1 response read off a kept-alive connection: status, headers (lower-cased), body.
fn read_response(conn: &mut std::io::BufReader<std::net::TcpStream>) -> Option<(u16, String)> {
    use std::io::{BufRead, Read};
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line.to_lowercase());
        if line == "\r\n" {
            break;
        }
    }
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    conn.read_exact(&mut body).ok()?;
    Some((status, head))
}

/// A Go client's pattern: many requests in turn on one kept-alive connection, some of them
/// refused (401) before their body is read. Each refusal says `Connection: close`, or the
/// connection must serve the next request; a client never finds it closed under it.
#[test]
fn refused_requests_with_bodies_never_strand_a_kept_alive_connection() {
    use std::io::Write;
    let (dir, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files = auth_files(dir.path());
    let reg = registry(data.path(), &files, "htpasswd", &[]);
    let body = vec![b'x'; 256 * 1024];
    let alice = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:alice-pw")
    );
    let (mut closed, mut reused) = (0, 0);
    let mut conn = None;
    for i in 0..40 {
        let stream = conn.get_or_insert_with(|| {
            std::io::BufReader::new(std::net::TcpStream::connect(reg.addr).unwrap())
        });
        let refused = format!(
            "PUT /v2/team/app/manifests/t{i} HTTP/1.1\r\nHost: r\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let sock = stream.get_mut();
        sock.write_all(refused.as_bytes()).unwrap();
        // The client sends its body whatever the server does (a Go client writes it while it
        // waits for the answer); the server may already have stopped reading.
        let _ = sock.write_all(&body);
        let (status, head) = read_response(stream).expect("an answer to the refused request");
        assert_eq!(status, 401);
        if head.contains("connection: close") {
            closed += 1;
            conn = None;
            continue;
        }
        let next = format!("GET /v2/ HTTP/1.1\r\nHost: r\r\nAuthorization: {alice}\r\n\r\n");
        stream.get_mut().write_all(next.as_bytes()).unwrap();
        let answer = read_response(stream);
        assert_eq!(
            answer.map(|(s, _)| s),
            Some(200),
            "request {i}: the connection was kept alive but did not serve the next request"
        );
        reused += 1;
    }
    eprintln!("{closed} refusals closed their connection, {reused} kept it usable");
}
