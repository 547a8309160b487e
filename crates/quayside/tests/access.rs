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

fn push(skopeo: &Skopeo, layout: &Path, reference: &str, creds: &str) -> std::process::Output {
    skopeo.try_run(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        creds,
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{reference}"),
    ])
}

fn inspect(skopeo: &Skopeo, reference: &str, creds: Option<&str>) -> std::process::Output {
    let mut args = vec!["inspect", "--tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--creds", c]);
    } else {
        args.push("--no-creds");
    }
    let r = format!("docker://{reference}");
    args.push(&r);
    skopeo.try_run(&args)
}

fn seed_layout(dir: &Path) -> Image {
    let img = Image::new(3, &[100_000], "amd64");
    image::write_layout(dir, std::slice::from_ref(&img), None, "v1");
    img
}

fn ctr_pull(addr: SocketAddr, repo: &str, user: Option<&str>) {
    let ctd = Containerd::start();
    let reference = format!("{addr}/{repo}:v1");
    let mut args = vec![
        "images",
        "pull",
        "--plain-http",
        "--platform",
        "linux/amd64",
    ];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    args.push(&reference);
    ctd.ctr(&args);
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
    let through = inspect(skopeo, &format!("{}/team/app:v1", proxy.addr), None);
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
        push(
            &skopeo,
            layout.path(),
            &format!("{a}/team/app:v1"),
            "alice:alice-pw"
        )
        .status
        .success()
    );
    assert!(
        push(
            &skopeo,
            layout.path(),
            &format!("{a}/private/db:v1"),
            "alice:alice-pw"
        )
        .status
        .success()
    );
    assert!(
        !push(
            &skopeo,
            layout.path(),
            &format!("{a}/team/app:v2"),
            "alice:wrong"
        )
        .status
        .success()
    );
    // bob may pull team/*, not push.
    assert!(
        inspect(&skopeo, &format!("{a}/team/app:v1"), Some("bob:bob-pw"))
            .status
            .success()
    );
    assert!(
        !push(
            &skopeo,
            layout.path(),
            &format!("{a}/team/app:v2"),
            "bob:bob-pw"
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

    ctr_pull(reg.addr, "team/app", Some("bob:bob-pw"));
    // Nodes pull through the proxy, which adds the credentials.
    let proxy = proxy_as_bob(&skopeo, reg.addr);
    ctr_pull(proxy.addr, "team/app", None);
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
        push(
            &skopeo,
            layout.path(),
            &format!("{}/team/app:v1", a.addr),
            "alice:alice-pw"
        )
        .status
        .success()
    );
    assert!(
        push(
            &skopeo,
            layout.path(),
            &format!("{}/public/web:v1", a.addr),
            "alice:alice-pw"
        )
        .status
        .success()
    );
    assert!(
        !push(
            &skopeo,
            layout.path(),
            &format!("{}/team/app:v2", a.addr),
            "bob:bob-pw"
        )
        .status
        .success()
    );
    assert!(
        inspect(&skopeo, &format!("{}/public/web:v1", b.addr), None)
            .status
            .success()
    );
    assert!(
        !inspect(&skopeo, &format!("{}/team/app:v1", b.addr), None)
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

    ctr_pull(b.addr, "team/app", Some("alice:alice-pw"));
    proxy_as_bob(&skopeo, a.addr);
}
