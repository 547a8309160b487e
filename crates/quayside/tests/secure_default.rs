//! The chart's default on-cluster install, run as processes: `quayside registry` and `quayside
//! proxy` started with exactly the env and mounts the rendered Deployment and DaemonSet give
//! them (Secrets written as the kubelet writes them, `secretKeyRef`s resolved, Service links
//! pointing at the registry's loopback port). A client without credentials pulls through the
//! proxy (skopeo, containerd) and is refused every push, tag overwrite and delete, directly and
//! through the proxy; the builder identity pushes, directly and through the proxy; an open
//! install upgraded to the default keeps every image.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use testkit::chart::{Container, Node, find, render, secret_data};
use testkit::image::{self, Image};
use testkit::process::Quayside;
use testkit::tools::{Containerd, Skopeo};

const BIN: &str = env!("CARGO_BIN_EXE_quayside");

/// The registry and the node proxy of one rendered install, on loopback.
struct Install {
    registry: Quayside,
    proxy: Quayside,
    objects: Vec<Value>,
    _containers: [Container; 2],
}

impl Install {
    /// Renders the chart with `sets` and starts both workloads, the registry's storage volume
    /// on `data` (a persistent volume that outlives the install).
    fn start(sets: &[&str], data: &Path) -> Install {
        let objects = render(None, sets);
        let registry_pod = Container::from_rendered(
            &objects,
            find(&objects, "Deployment", "deis-registry"),
            &Node {
                overrides: &[("QUAYSIDE_LISTEN", "127.0.0.1:0")],
                volumes: &[("registry-storage", data)],
                ..Node::default()
            },
        );
        let registry = registry_pod.spawn(BIN, "registry serving");
        let (host, port) = (
            registry.addr.ip().to_string(),
            registry.addr.port().to_string(),
        );
        let proxy_pod = Container::from_rendered(
            &objects,
            find(&objects, "DaemonSet", "deis-registry-proxy"),
            &Node {
                service_env: &[
                    ("DEIS_REGISTRY_SERVICE_HOST", &host),
                    ("DEIS_REGISTRY_SERVICE_PORT", &port),
                ],
                overrides: &[("BIND_ADDR", "127.0.0.1:0")],
                ..Node::default()
            },
        );
        let proxy = proxy_pod.spawn(BIN, "proxy serving");
        Install {
            registry,
            proxy,
            objects,
            _containers: [registry_pod, proxy_pod],
        }
    }

    /// `user:password` of an identity Secret.
    fn creds(&self, secret: &str) -> String {
        let data = secret_data(find(&self.objects, "Secret", secret));
        format!("{}:{}", data["username"], data["password"])
    }
}

fn layout(dir: &Path, seed: u64) -> Image {
    let img = Image::new(seed, &[50_000, 7_000], "amd64");
    image::write_layout(dir, std::slice::from_ref(&img), None, "v1");
    img
}

/// Whether `skopeo copy` of the layout's `v1` to `reference` succeeds; `creds` None sends none.
fn push(skopeo: &Skopeo, layout: &Path, reference: &str, creds: Option<&str>) -> bool {
    skopeo
        .try_push_layout(layout, reference, creds)
        .status
        .success()
}

/// The manifest digest `skopeo inspect` reports for `reference`, if it can read it.
fn inspect(skopeo: &Skopeo, reference: &str, creds: Option<&str>) -> Option<String> {
    let out = skopeo.try_inspect(reference, creds);
    if !out.status.success() {
        return None;
    }
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(info["Digest"].as_str().unwrap().to_owned())
}

/// `curl` status of one request, optionally with Basic credentials and a body file.
fn status(method: &str, url: &str, creds: Option<&str>, body: Option<(&Path, &str)>) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method]);
    if let Some(c) = creds {
        cmd.args(["-u", c]);
    }
    if let Some((file, content_type)) = body {
        cmd.arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .args(["-H", &format!("content-type: {content_type}")]);
    }
    let out = cmd.arg(url).output().unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap()
}

#[test]
fn the_default_install_lets_anonymous_clients_pull_and_only_the_builder_push() {
    let (data, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let install = Install::start(&[], data.path());
    let (builder, node) = (
        install.creds("deis-registry-push"),
        install.creds("deis-registry-pull"),
    );
    let skopeo = Skopeo::new();
    let (direct, proxy) = (
        install.registry.addr.to_string(),
        install.proxy.addr.to_string(),
    );
    let first = layout(&dir.path().join("first"), 1);
    let second = layout(&dir.path().join("second"), 2);

    // The builder pushes directly and, logged in, through the node proxy.
    assert!(push(
        &skopeo,
        &dir.path().join("first"),
        &format!("{direct}/web:v1"),
        Some(&builder)
    ));
    assert!(push(
        &skopeo,
        &dir.path().join("first"),
        &format!("{proxy}/api:v1"),
        Some(&builder)
    ));

    // Without credentials: pulls through the proxy work, skopeo's and containerd's.
    let web = first.manifest.digest.clone();
    assert_eq!(
        inspect(&skopeo, &format!("{proxy}/web:v1"), None),
        Some(web.clone())
    );
    assert_eq!(
        inspect(&skopeo, &format!("{proxy}/api:v1"), None),
        Some(web.clone())
    );
    assert_eq!(inspect(&skopeo, &format!("{direct}/web:v1"), None), None);
    let ctd = Containerd::start();
    ctd.pull(&format!("{proxy}/web:v1"), None);

    // ... and every write is refused: a new image, a tag overwrite with other bytes, both
    // directly and through the proxy; with no credentials, or with the pull-only identity.
    let other = dir.path().join("second");
    for (host, creds) in [
        (&direct, None),
        (&proxy, None),
        (&direct, Some(node.as_str())),
        (&proxy, Some(node.as_str())),
    ] {
        for reference in [format!("{host}/web:v1"), format!("{host}/intruder:v1")] {
            assert!(
                !push(&skopeo, &other, &reference, creds),
                "{reference} {creds:?} pushed"
            );
        }
    }
    let manifest_file = dir.path().join("manifest.json");
    std::fs::write(&manifest_file, &second.manifest.data).unwrap();
    let manifest = (
        manifest_file.as_path(),
        "application/vnd.oci.image.manifest.v1+json",
    );
    for host in [&direct, &proxy] {
        for creds in [None, Some(node.as_str())] {
            let refused = |code: u16| [401, 403, 405].contains(&code);
            let put = status(
                "PUT",
                &format!("http://{host}/v2/web/manifests/v1"),
                creds,
                Some(manifest),
            );
            let delete = status(
                "DELETE",
                &format!("http://{host}/v2/web/manifests/{web}"),
                creds,
                None,
            );
            let upload = status(
                "POST",
                &format!("http://{host}/v2/web/blobs/uploads/"),
                creds,
                None,
            );
            let mount = status(
                "POST",
                &format!("http://{host}/v2/evil/blobs/uploads/?mount={web}&from=web"),
                creds,
                None,
            );
            for (what, code) in [
                ("tag overwrite", put),
                ("delete", delete),
                ("upload", upload),
                ("mount", mount),
            ] {
                assert!(refused(code), "{what} via {host} with {creds:?}: {code}");
            }
        }
    }
    // Anonymous writes are challenged (401) so a client with a login can retry with it; the
    // pull identity is authenticated and denied (403).
    assert_eq!(
        status(
            "PUT",
            &format!("http://{proxy}/v2/web/manifests/v1"),
            None,
            Some(manifest)
        ),
        401
    );
    assert_eq!(
        status(
            "PUT",
            &format!("http://{direct}/v2/web/manifests/v1"),
            Some(&node),
            Some(manifest)
        ),
        403
    );
    // Nothing moved: the tag still names the builder's image, no intruder repository exists.
    assert_eq!(
        inspect(&skopeo, &format!("{proxy}/web:v1"), None),
        Some(web.clone())
    );
    assert_eq!(
        inspect(&skopeo, &format!("{direct}/intruder:v1"), Some(&builder)),
        None
    );
    // The builder moves the tag; it may not delete (nothing in the platform needs it; gc does).
    assert!(push(
        &skopeo,
        &other,
        &format!("{direct}/web:v1"),
        Some(&builder)
    ));
    assert_eq!(
        inspect(&skopeo, &format!("{proxy}/web:v1"), None),
        Some(second.manifest.digest.clone())
    );
    assert_eq!(
        status(
            "DELETE",
            &format!("http://{direct}/v2/web/manifests/{web}"),
            Some(&builder),
            None
        ),
        403
    );
    // No credential reached a log line.
    let password = builder.split_once(':').unwrap().1;
    let pull_password = node.split_once(':').unwrap().1;
    for process in [&install.registry, &install.proxy] {
        let log = process.log.lock().unwrap();
        assert!(
            !log.iter()
                .any(|l| l.contains(password) || l.contains(pull_password))
        );
    }
}

#[test]
fn upgrading_an_open_install_to_the_secure_default_keeps_every_image() {
    let (data, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let skopeo = Skopeo::new();
    let mut pushed = Vec::new();
    {
        // Workflow's open registry: builders push through the node proxy without a login.
        let open = Install::start(&["registry.insecure_anonymous_push=true"], data.path());
        for (n, app) in ["web", "api", "worker"].into_iter().enumerate() {
            let path = dir.path().join(app);
            let img = layout(&path, 10 + n as u64);
            assert!(push(
                &skopeo,
                &path,
                &format!("{}/{app}:v1", open.proxy.addr),
                None
            ));
            pushed.push((app, img.manifest.digest.clone()));
        }
    }
    let secure = Install::start(&[], data.path());
    let builder = secure.creds("deis-registry-push");
    for (app, digest) in &pushed {
        let through_proxy = inspect(&skopeo, &format!("{}/{app}:v1", secure.proxy.addr), None);
        assert_eq!(
            through_proxy.as_ref(),
            Some(digest),
            "{app} through the proxy"
        );
        let direct = inspect(
            &skopeo,
            &format!("{}/{app}:v1", secure.registry.addr),
            Some(&builder),
        );
        assert_eq!(
            direct.as_ref(),
            Some(digest),
            "{app} with the builder identity"
        );
    }
    let path = dir.path().join("web");
    assert!(!push(
        &skopeo,
        &path,
        &format!("{}/web:v2", secure.proxy.addr),
        None
    ));
}

/// `quayside image <args>` as the builder runs it on-cluster.
fn image_cmd(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .arg("image")
        .args(args)
        .env("DEIS_REGISTRY_LOCATION", "on-cluster")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn image_publish_and_port_use_the_push_identity_from_the_mounted_secret() {
    let (data, dir, source_data) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let install = Install::start(&[], data.path());
    // The builder's mount of deis-registry-push: one file per key.
    let mounted = dir.path().join("push");
    std::fs::create_dir(&mounted).unwrap();
    for (key, value) in secret_data(find(&install.objects, "Secret", "deis-registry-push")) {
        std::fs::write(mounted.join(key), value).unwrap();
    }
    let source = Quayside::registry(BIN, source_data.path(), &[]);
    let img = Image::exposing(3, &[20_000], "amd64", &["8080/tcp"]);
    let layout = dir.path().join("layout");
    image::write_layout(&layout, std::slice::from_ref(&img), None, "v1");
    Skopeo::new().copy(
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}/base:v1", source.addr),
    );
    let from = format!("{}/base:v1", source.addr);
    let proxy = install.proxy.addr.to_string();
    let publish = |env: &[(&str, &str)]| {
        image_cmd(
            &[
                "publish",
                &from,
                "--app",
                "web",
                "--version",
                "3",
                "--push-to",
                &proxy,
            ],
            env,
        )
    };

    let refused = publish(&[]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.to_lowercase().contains("unauthorized") || message.contains("401"),
        "{message}"
    );

    let dir_env = mounted.display().to_string();
    let published = publish(&[("QUAYSIDE_REGISTRY_CREDENTIALS_DIR", &dir_env)]);
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&published.stdout).trim(),
        "127.0.0.1:5555/web:v3"
    );
    let skopeo = Skopeo::new();
    assert_eq!(
        inspect(&skopeo, &format!("{proxy}/web:v3"), None),
        Some(img.manifest.digest.clone())
    );

    // `image port` reads the config from the registry itself with the identity from env.
    let (user, password) = install
        .creds("deis-registry-push")
        .split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .unwrap();
    let direct = format!("{}/web:v3", install.registry.addr);
    let port = image_cmd(
        &["port", &direct],
        &[
            ("QUAYSIDE_REGISTRY_USERNAME", &user),
            ("QUAYSIDE_REGISTRY_PASSWORD", &password),
        ],
    );
    assert!(
        port.status.success(),
        "{}",
        String::from_utf8_lossy(&port.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&port.stdout).trim(), "8080");
    let half = image_cmd(&["port", &direct], &[("QUAYSIDE_REGISTRY_USERNAME", &user)]);
    assert_eq!(half.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&half.stderr).contains("QUAYSIDE_REGISTRY_PASSWORD"));
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = image_cmd(
        &[
            "port",
            &direct,
            "--registry-credentials-dir",
            empty.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(missing.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("needs the files username and password")
    );
    // The password is in no output.
    for out in [&published, &port, &half] {
        assert!(!String::from_utf8_lossy(&out.stderr).contains(&password));
    }
}

/// `registry.mirror.upstreams` as an operator sets it: nodes pull an upstream's image through
/// their proxy from the install's cache, and nobody, the builder included, can push over it.
#[test]
fn a_mirroring_install_serves_upstream_images_to_nodes_and_keeps_them_read_only() {
    let (upstream_data, data, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let upstream = Quayside::registry(BIN, upstream_data.path(), &[]);
    let skopeo = Skopeo::new();
    let img = layout(work.path(), 61);
    let original = format!("{}/lib/app:v1", upstream.addr);
    assert!(push(&skopeo, work.path(), &original, None));
    let declared = format!(
        "registry.mirror.upstreams[0]=up.test=http://{}",
        upstream.addr
    );
    let install = Install::start(&[&declared], data.path());

    let mirrored = format!("{}/up.test/lib/app:v1", install.proxy.addr);
    assert_eq!(
        inspect(&skopeo, &mirrored, None),
        Some(img.manifest.digest.clone())
    );
    let builder = install.creds("deis-registry-push");
    let over = format!("{}/up.test/lib/app:v1", install.registry.addr);
    assert!(!push(&skopeo, work.path(), &over, Some(&builder)));
    assert_eq!(inspect(&skopeo, &mirrored, None), Some(img.manifest.digest));
}
