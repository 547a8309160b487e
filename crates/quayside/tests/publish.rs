//! `quayside image publish`, `image port` and `image ensure-repo` as the controller and builder
//! call them: images copied between real registries (Quayside and Debian's docker-registry with
//! htpasswd Basic auth), ports read from image configs, ECR repositories created on moto.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use testkit::image::{self, Image};
use testkit::process::Quayside;
use testkit::tools::{Distribution, Skopeo};

const BIN: &str = env!("CARGO_BIN_EXE_quayside");
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn image_cmd(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(["--log-format", "json", "image"])
        .args(args)
        .env("DEIS_REGISTRY_LOCATION", "on-cluster")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn failed(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `published` log line's fields.
fn report(o: &Output) -> Value {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "published")
        .expect("a published line")
}

/// Pushes a two-platform index (one without EXPOSE) to `registry` as `repo:tag` with skopeo.
fn seed(
    dir: &Path,
    registry: &str,
    repo: &str,
    tag: &str,
    creds: Option<&str>,
) -> (Vec<Image>, image::Blob) {
    let images = vec![
        Image::new(11, &[300_000, 5_000], "amd64"),
        Image::exposing(21, &[200_000], "arm64", &[]),
    ];
    let index = image::index(&images);
    image::write_layout(dir, &images, Some(&index), tag);
    let from = format!("oci:{}:{tag}", dir.display());
    let to = format!("docker://{registry}/{repo}:{tag}");
    let mut args = vec!["copy", "--all", "--dest-tls-verify=false"];
    let creds_arg;
    if let Some(c) = creds {
        creds_arg = c.to_owned();
        args.extend(["--dest-creds", &creds_arg]);
    }
    args.extend([from.as_str(), to.as_str()]);
    Skopeo::new().run(&args);
    (images, index)
}

/// The manifest bytes `addr` serves for `repo:reference`, and whether every blob is there.
fn manifest(addr: SocketAddr, repo: &str, reference: &str) -> (u16, String) {
    let url = format!("http://{addr}/v2/{repo}/manifests/{reference}");
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/stdout", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Accept: {INDEX}"))
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

#[test]
fn publish_copies_every_platform_between_quaysides_then_mounts_within_one() {
    let (a_dir, b_dir, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = Quayside::registry(BIN, a_dir.path(), &[]);
    let b = Quayside::registry(BIN, b_dir.path(), &[]);
    let (images, index) = seed(work.path(), &a.addr.to_string(), "src/app", "1.0", None);

    let source = format!("{}/src/app:1.0", a.addr);
    let out = image_cmd(
        &[
            "publish",
            &source,
            "--app",
            "web",
            "--version",
            "3",
            "--push-to",
            &b.addr.to_string(),
        ],
        &[],
    );
    assert_eq!(ok(&out), "127.0.0.1:5555/web:v3");
    let r = report(&out);
    assert_eq!(
        (
            r["manifests"].as_u64(),
            r["copied"].as_u64(),
            r["mounted"].as_u64()
        ),
        (Some(3), Some(5), Some(0))
    );
    let (code, body) = manifest(b.addr, "web", "v3");
    assert_eq!(code, 200);
    assert_eq!(
        body.as_bytes(),
        index.data.as_slice(),
        "the index arrives byte-identical"
    );
    for img in &images {
        let (code, body) = manifest(b.addr, "web", &img.manifest.digest);
        assert_eq!((code, body.as_bytes()), (200, img.manifest.data.as_slice()));
        for blob in img.blobs() {
            let (status, _) =
                testkit::http(b.addr, "HEAD", &format!("/v2/web/blobs/{}", blob.digest));
            assert_eq!(status, 200);
        }
    }

    // Within one registry blobs are mounted, not copied.
    let source = format!("{}/web:v3", b.addr);
    let out = image_cmd(
        &[
            "publish",
            &source,
            "--app",
            "api",
            "--version",
            "1",
            "--push-to",
            &b.addr.to_string(),
        ],
        &[],
    );
    ok(&out);
    let r = report(&out);
    assert_eq!(
        (
            r["copied"].as_u64(),
            r["mounted"].as_u64(),
            r["bytes"].as_u64()
        ),
        (Some(0), Some(5), Some(0))
    );
    assert_eq!(
        manifest(b.addr, "api", "v1").1.as_bytes(),
        index.data.as_slice()
    );

    // Publishing again finds everything in place.
    let out = image_cmd(
        &[
            "publish",
            &source,
            "--app",
            "api",
            "--version",
            "2",
            "--push-to",
            &b.addr.to_string(),
        ],
        &[],
    );
    assert_eq!(report(&out)["already_there"].as_u64(), Some(5));
}

fn htpasswd_distribution(dir: &Path) -> Distribution {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(dir.join("htpasswd"), format!("bob:{hash}\n")).unwrap();
    let data = dir.join("data");
    Distribution::start_with_storage(&format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        data.display(),
        dir.join("htpasswd").display()
    ))
}

#[test]
fn publish_and_port_from_a_private_registry_need_its_credentials() {
    let (peer_dir, q_dir, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let peer = htpasswd_distribution(peer_dir.path());
    let q = Quayside::registry(BIN, q_dir.path(), &[]);
    let (_, index) = seed(
        work.path(),
        &peer.addr.to_string(),
        "acme/app",
        "v7",
        Some("bob:s3cret"),
    );
    let source = format!("{}/acme/app:v7", peer.addr);
    let publish = |creds: &[&str]| {
        let mut args = vec![
            "publish",
            &source,
            "--app",
            "web",
            "--version",
            "4",
            "--push-to",
        ];
        let to = q.addr.to_string();
        args.push(&to);
        args.extend(creds);
        image_cmd(&args, &[])
    };

    let e = failed(&publish(&[]));
    assert!(
        e.contains("unauthorized: authentication required to pull"),
        "{e}"
    );
    let e = failed(&publish(&["--username", "bob", "--password", "wrong"]));
    assert!(
        e.contains(&format!(
            "Could not log into {} with username bob",
            peer.addr
        )),
        "{e}"
    );
    assert!(!e.contains("wrong"));
    let e = failed(&publish(&["--username", "bob"]));
    assert!(
        e.contains("Registry auth requires a username and a password"),
        "{e}"
    );
    ok(&publish(&["--username", "bob", "--password", "s3cret"]));
    assert_eq!(
        manifest(q.addr, "web", "v4").1.as_bytes(),
        index.data.as_slice()
    );

    // The controller's PORT rule: an app with its own credentials needs PORT in its config
    // (Kubernetes, not the controller, pulls its image), which wins unread.
    let e = failed(&image_cmd(&["port", &source], &[]));
    assert!(e.contains("unauthorized"), "{e}");
    let private = ["port", &source, "--username", "bob"];
    let password = [("QUAYSIDE_APP_REGISTRY_PASSWORD", "s3cret")];
    let e = failed(&image_cmd(&private, &password));
    assert!(
        e.contains("PORT needs to be set in the application config when using a private registry"),
        "{e}"
    );
    let mut with_port = private.to_vec();
    with_port.extend(["--config-port", "9000"]);
    assert_eq!(ok(&image_cmd(&with_port, &password)), "9000");
    let mut worker = private.to_vec();
    worker.push("--not-routable");
    assert_eq!(ok(&image_cmd(&worker, &password)), "");
    // On-cluster without credentials the image is read: its amd64 config exposes 8080.
    assert_eq!(
        ok(&image_cmd(&["port", &format!("{}/web:v4", q.addr)], &[])),
        "8080"
    );
}

#[test]
fn port_without_expose_and_refusals_keep_the_original_messages() {
    let (q_dir, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let q = Quayside::registry(BIN, q_dir.path(), &[]);
    let (images, _) = seed(work.path(), &q.addr.to_string(), "app", "v1", None);
    let arm = format!("{}/app@{}", q.addr, images[1].manifest.digest);
    let e = failed(&image_cmd(&["port", &arm], &[]));
    assert!(
        e.contains("Expose a port or make the app non routable by changing the process type"),
        "{e}"
    );
    assert_eq!(
        ok(&image_cmd(&["port", &format!("{}/app:v1", q.addr)], &[])),
        "8080"
    );
    // Not routable: no EXPOSE is fine and nothing is printed; PORT wins unread; buildpack 5000
    // without an image; a PORT that is no port number is refused.
    assert_eq!(ok(&image_cmd(&["port", &arm, "--not-routable"], &[])), "");
    assert_eq!(
        ok(&image_cmd(&["port", &arm, "--config-port", "3000"], &[])),
        "3000"
    );
    assert_eq!(
        ok(&image_cmd(&["port", "--build-type", "buildpack"], &[])),
        "5000"
    );
    let e = failed(&image_cmd(&["port", &arm, "--config-port", "70000"], &[]));
    assert!(
        e.contains("70000") && e.contains("must be a number from 1 to 65535"),
        "{e}"
    );
    let off = image_cmd(
        &[
            "port",
            "--location",
            "off-cluster",
            "--registry-secret-dir",
            "/nonexistent",
        ],
        &[],
    );
    assert_eq!(
        off.status.code(),
        Some(64),
        "off-cluster needs its registry-secret"
    );
    let out = image_cmd(&["port"], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(failed(&out).contains("give IMAGE"));

    let out = image_cmd(
        &[
            "publish",
            "deis/controller:v2.18.0",
            "--app",
            "x",
            "--version",
            "1",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        failed(&out)
            .contains("Repository name deis/controller is not allowed, as it is reserved by Deis")
    );
    let missing = format!("{}/app:nope", q.addr);
    let e = failed(&image_cmd(
        &[
            "publish",
            &missing,
            "--app",
            "x",
            "--version",
            "1",
            "--push-to",
            &q.addr.to_string(),
        ],
        &[],
    ));
    assert!(e.contains("not found"), "{e}");
}

#[test]
fn ensure_repo_creates_the_ecr_repository_once() {
    let dir = tempfile::tempdir().unwrap();
    for (k, v) in [
        ("accesskey", "AKIAIOSFODNN7EXAMPLE"),
        ("secretkey", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ("region", "eu-central-1"),
    ] {
        std::fs::write(dir.path().join(k), v).unwrap();
    }
    let app = format!("app-{}", std::process::id());
    let run = || {
        image_cmd(
            &[
                "--registry-secret-dir",
                dir.path().to_str().unwrap(),
                "ensure-repo",
                "--app",
                &app,
            ],
            &[
                ("DEIS_REGISTRY_LOCATION", "ecr"),
                ("AWS_ENDPOINT_URL", &testkit::s3_endpoint()),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        )
    };
    assert_eq!(ok(&run()), format!("created {app}"));
    assert_eq!(ok(&run()), format!("exists {app}"));
    assert_eq!(ok(&image_cmd(&["ensure-repo", "--app", "web"], &[])), "");
}
