//! `quayside check` as an operator runs it: one line per check, exit 1 when any failed, no
//! secret printed. On-cluster against the filesystem, moto S3 (up, then stopped), a registry
//! and a node proxy (up, then gone); ecr against moto with future-expiring tokens and the fake
//! API server answering SelfSubjectAccessReviews both ways; gcr against a local OAuth
//! endpoint; off-cluster logging into a Quayside registry with htpasswd; and the chart's
//! `helm test` Pod, rendered by the real helm and run as the kubelet would run it.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::chart::{self, Container, Node};
use testkit::kube::FakeKube;
use testkit::oauth::FakeOAuth;
use testkit::process::Quayside;
use testkit::tools::Moto;

const BIN: &str = env!("CARGO_BIN_EXE_quayside");
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Checked {
    /// The line for `what` that contains `needle`, asserting its verdict.
    fn line(&self, verdict: &str, what: &str, needle: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| {
                let mut words = l.split_whitespace();
                words.next() == Some(verdict) && words.next() == Some(what) && l.contains(needle)
            })
            .unwrap_or_else(|| panic!("no `{verdict} {what} …{needle}…` line in:\n{}", self.stdout))
    }

    fn failures(&self) -> usize {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("failed"))
            .count()
    }
}

fn check(args: &[&str], env: &[(&str, &str)]) -> Checked {
    let out = Command::new(BIN)
        .arg("check")
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("KUBECONFIG", "/nonexistent")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Checked {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn files(entries: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (k, v) in entries {
        std::fs::write(dir.path().join(k), v).unwrap();
    }
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn on_cluster_filesystem_registry_and_proxy() {
    let data = tempfile::tempdir().unwrap();
    let registry = Quayside::registry(BIN, data.path(), &[]);
    let proxy = Quayside::proxy(BIN, registry.addr, &[]);
    let registry_url = format!("http://{}", registry.addr);
    let proxy_url = format!("http://{}", proxy.addr);
    let args = [
        "--location",
        "on-cluster",
        "--data-dir",
        path(data.path()),
        "--registry-url",
        &registry_url,
        "--proxy-url",
        &proxy_url,
    ];
    let out = check(&args, &[]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.failures(), 0);
    out.line("ok", "location", "on-cluster");
    out.line("ok", "storage", "reachable");
    out.line(
        "ok",
        "storage",
        "wrote, read back and deleted quayside-check/",
    );
    out.line("ok", "registry", "answered 200");
    out.line("ok", "proxy", "answered 200");
    // The probe leaves nothing behind.
    let probes = data.path().join("quayside-check");
    assert!(!probes.exists() || std::fs::read_dir(&probes).unwrap().next().is_none());

    drop(proxy);
    drop(registry);
    let out = check(&args, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert_eq!(out.failures(), 2, "{}", out.stdout);
    out.line("failed", "registry", "the registry does not answer");
    out.line("failed", "proxy", "does not reach the registry");
    out.line("ok", "storage", "wrote, read back and deleted");
}

#[test]
fn on_cluster_object_storage_up_and_down() {
    let mut moto = Moto::start();
    let endpoint = moto.endpoint();
    let keyfile = files(&[
        ("accesskey", "AKIAIOSFODNN7EXAMPLE"),
        ("secretkey", SECRET_KEY),
        ("region", "us-west-2"),
        ("registry-bucket", "checked-bucket"),
    ]);
    let args = [
        "--location",
        "on-cluster",
        "--storage",
        "s3",
        "--creds-dir",
        path(keyfile.path()),
        "--s3-endpoint",
        &endpoint,
        "--s3-path-style",
    ];
    let out = check(&args, &[]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    out.line("ok", "storage", "s3:checked-bucket");
    out.line("ok", "storage", "wrote, read back and deleted");
    assert!(!out.stdout.contains(SECRET_KEY) && !out.stderr.contains(SECRET_KEY));

    moto.stop();
    let out = check(&args, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert_eq!(out.failures(), 1, "{}", out.stdout);
    out.line("failed", "storage", "");
    assert!(!out.stdout.contains(SECRET_KEY) && !out.stderr.contains(SECRET_KEY));
}

#[test]
fn ecr_token_and_the_refreshers_permissions() {
    let moto = Moto::with_ecr_tokens_expiring_in(Duration::from_secs(12 * 3600));
    let kube = FakeKube::start();
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = kube.write_kubeconfig(home.path());
    let secret = files(&[
        ("accesskey", "AKIAIOSFODNN7EXAMPLE"),
        ("secretkey", SECRET_KEY),
        ("region", "us-west-2"),
        ("registryid", ""),
        ("hostname", ""),
    ]);
    let args = [
        "--location",
        "ecr",
        "--registry-secret-dir",
        path(secret.path()),
        "--lease-namespace",
        "deis",
    ];
    let endpoint = moto.endpoint();
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("KUBECONFIG", path(&kubeconfig)),
    ];
    let out = check(&args, &env);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    out.line("ok", "location", "ecr: every key it needs");
    out.line(
        "ok",
        "token",
        "123456789012.dkr.ecr.us-west-2.amazonaws.com accepted the credentials: valid for 11h 59m",
    );
    out.line("ok", "rbac", "may watch namespaces in every namespace");
    out.line(
        "ok",
        "rbac",
        "may update leases/quayside-token-refresher in namespace deis",
    );
    assert_eq!(
        kube.requests("POST", "selfsubjectaccessreviews"),
        out.stdout.matches("ok      rbac").count()
    );

    kube.deny("create", "secrets");
    kube.deny("watch", "namespaces");
    let out = check(&args, &env);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert_eq!(out.failures(), 2, "{}", out.stdout);
    out.line(
        "failed",
        "rbac",
        "may not create secrets/private-registry-ecr in every namespace: the token refresher needs it",
    );
    out.line("failed", "rbac", "may not watch namespaces");
    assert!(out.stderr.contains("2 check(s) failed"), "{}", out.stderr);
    assert!(!out.stdout.contains(SECRET_KEY) && !out.stderr.contains(SECRET_KEY));
    assert!(!out.stdout.contains("auth-token"), "the token was printed");

    // No API server reachable: said once, with the way out.
    let out = check(&args, &[("AWS_ENDPOINT_URL", endpoint.as_str())]);
    assert_eq!(out.code, Some(1));
    out.line("failed", "rbac", "set KUBECONFIG, or pass --rbac=false");
    let mut without_rbac = args.to_vec();
    without_rbac.push("--rbac=false");
    let out = check(&without_rbac, &[("AWS_ENDPOINT_URL", endpoint.as_str())]);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}

#[test]
fn a_broken_registry_secret_names_each_file() {
    let secret = files(&[
        ("accesskey", "AKIAIOSFODNN7EXAMPLE"),
        ("secretkey", SECRET_KEY),
    ]);
    let out = check(
        &[
            "--location",
            "ecr",
            "--registry-secret-dir",
            path(secret.path()),
        ],
        &[],
    );
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let region = secret.path().join("region");
    out.line(
        "failed",
        "location",
        &format!("{} does not exist: ECR needs a region", region.display()),
    );
    assert!(!out.stdout.contains(SECRET_KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn gcr_token_from_the_service_account_key() {
    let oauth = FakeOAuth::start(3600).await;
    let secret = files(&[("key.json", oauth.key_json()), ("hostname", "")]);
    let dir = secret.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        check(
            &[
                "--location",
                "gcr",
                "--registry-secret-dir",
                path(&dir),
                "--rbac=false",
            ],
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    out.line(
        "ok",
        "token",
        "gcr.io accepted the credentials: valid for 59m",
    );
    assert!(!out.stdout.contains("ya29."), "the token was printed");
    assert_eq!(oauth.granted(), 1);
}

#[test]
fn off_cluster_login_right_and_wrong() {
    let auth = tempfile::tempdir().unwrap();
    let htpasswd = format!("deploy:{}\n", bcrypt::hash("hub-password", 5).unwrap());
    std::fs::write(auth.path().join("htpasswd"), htpasswd).unwrap();
    std::fs::write(
        auth.path().join("policy.yaml"),
        "rules:\n  - users: [deploy]\n    repositories: [\"*\"]\n    actions: [pull, push]\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let htpasswd_path = auth.path().join("htpasswd");
    let policy_path = auth.path().join("policy.yaml");
    let registry = Quayside::registry(
        BIN,
        data.path(),
        &[
            "--auth",
            "htpasswd",
            "--htpasswd",
            path(&htpasswd_path),
            "--auth-policy",
            path(&policy_path),
        ],
    );
    let host = registry.addr.to_string();
    let run = |password: &str| {
        let secret = files(&[
            ("hostname", &format!("http://{host}/")),
            ("organization", "acme"),
            ("username", "deploy"),
            ("password", password),
        ]);
        check(
            &[
                "--location",
                "off-cluster",
                "--registry-secret-dir",
                path(secret.path()),
            ],
            &[],
        )
    };
    let out = run("hub-password");
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    out.line("ok", "login", &format!("{host}: accepted username deploy"));
    assert!(!out.stdout.contains("hub-password"));

    let out = run("not-the-password");
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    out.line(
        "failed",
        "login",
        &format!("Could not log into {host} with username deploy"),
    );
    assert!(!out.stdout.contains("not-the-password") && !out.stderr.contains("not-the-password"));
}

#[test]
fn an_already_expired_token_is_a_failure() {
    // Stock moto's ECR tokens expired on 1 January 2015.
    let moto = Moto::start();
    let secret = files(&[
        ("accesskey", "AKIAIOSFODNN7EXAMPLE"),
        ("secretkey", SECRET_KEY),
        ("region", "us-west-2"),
    ]);
    let endpoint = moto.endpoint();
    let out = check(
        &[
            "--location",
            "ecr",
            "--registry-secret-dir",
            path(secret.path()),
            "--rbac=false",
        ],
        &[("AWS_ENDPOINT_URL", &endpoint)],
    );
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    out.line(
        "failed",
        "token",
        "handed out a token that has already expired",
    );
}

/// Runs the chart's rendered test Pod as the kubelet would, with `extra` env on top.
fn run_hook(objects: &[serde_json::Value], node: &Node, extra: &[(&str, &str)]) -> Checked {
    let hook = chart::find(objects, "Pod", "deis-registry-check");
    assert_eq!(hook["metadata"]["annotations"]["helm.sh/hook"], "test");
    let container = Container::from_rendered(objects, hook, node);
    assert_eq!(container.args, ["check"]);
    let mut env: Vec<(&str, &str)> = container
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend(extra);
    check(&[], &env)
}

#[test]
fn the_charts_test_hook_checks_the_default_install() {
    let objects = chart::render(None, &[]);
    let hook = chart::find(&objects, "Pod", "deis-registry-check");
    assert_eq!(chart::pod(hook)["automountServiceAccountToken"], false);
    let policy = chart::find(&objects, "NetworkPolicy", "deis-registry");
    assert!(
        policy.to_string().contains("deis-registry-check"),
        "the NetworkPolicy keeps the check out"
    );

    let data = tempfile::tempdir().unwrap();
    let registry = Quayside::registry(BIN, data.path(), &[]);
    let proxy = Quayside::proxy(BIN, registry.addr, &[]);
    let (registry_url, proxy_url) = (
        format!("http://{}", registry.addr),
        format!("http://{}", proxy.addr),
    );
    let node = Node {
        overrides: &[
            ("QUAYSIDE_CHECK_REGISTRY_URL", &registry_url),
            ("QUAYSIDE_CHECK_PROXY_URL", &proxy_url),
        ],
        ..Node::default()
    };
    let container = Container::from_rendered(&objects, hook, &Node::default());
    assert_eq!(
        container.env("QUAYSIDE_CHECK_REGISTRY_URL"),
        Some("http://deis-registry.deis.svc")
    );
    assert_eq!(
        container.env("QUAYSIDE_CHECK_PROXY_URL"),
        Some("http://127.0.0.1:5555")
    );
    let out = run_hook(&objects, &node, &[]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    out.line("ok", "registry", "answered");
    out.line("ok", "proxy", "answered");
    // Filesystem storage is the registry pod's own disk: not checked from the test pod.
    assert!(!out.stdout.contains("storage"), "{}", out.stdout);
}

#[test]
fn the_charts_test_hook_checks_ecr_as_the_refresher() {
    let objects = chart::render(
        Some("examples/ecr.yaml"),
        &[
            "registry-token-refresher.ecr.accesskey=AKIAIOSFODNN7EXAMPLE",
            "registry-token-refresher.ecr.secretkey=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ],
    );
    let hook = chart::find(&objects, "Pod", "deis-registry-check");
    assert_eq!(
        chart::pod(hook)["serviceAccountName"],
        "deis-registry-token-refresher"
    );
    let moto = Moto::with_ecr_tokens_expiring_in(Duration::from_secs(3600));
    let kube = FakeKube::start();
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = kube.write_kubeconfig(home.path());
    let endpoint = moto.endpoint();
    let extra = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("KUBECONFIG", path(&kubeconfig)),
    ];
    let out = run_hook(&objects, &Node::default(), &extra);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    out.line("ok", "token", "valid for 59m");
    out.line(
        "ok",
        "rbac",
        "may patch secrets/private-registry-ecr in every namespace",
    );
    out.line(
        "ok",
        "rbac",
        "may get leases/quayside-token-refresher in namespace deis",
    );
    assert!(!out.stdout.contains(SECRET_KEY));
}
