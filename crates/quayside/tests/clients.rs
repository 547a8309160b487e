//! Real registry clients against the `quayside registry` binary: skopeo and containerd's `ctr`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use testkit::image::{self, Image};
use testkit::process::Quayside;
use testkit::tools::{Containerd, Skopeo};

const BIN: &str = env!("CARGO_BIN_EXE_quayside");

fn registry() -> (Quayside, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    (Quayside::registry(BIN, data.path(), &[]), data)
}

#[test]
fn skopeo_round_trips_a_multi_layer_image() {
    let (reg, _data) = registry();
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let img = Image::new(1, &[1 << 20, 100_000, 10], "amd64");
    image::write_layout(
        &work.path().join("src"),
        std::slice::from_ref(&img),
        None,
        "v1",
    );

    let remote = format!("docker://{}/apps/web:v1", reg.addr);
    let src = format!("oci:{}:v1", work.path().join("src").display());
    let dst = format!("oci:{}:v1", work.path().join("dst").display());
    skopeo.copy(&src, &remote);
    skopeo.copy(&remote, &dst);

    image::assert_layout_holds(&work.path().join("dst"), img.all());

    let inspect: serde_json::Value =
        serde_json::from_str(&skopeo.run(&["inspect", "--tls-verify=false", &remote])).unwrap();
    assert_eq!(inspect["Digest"], img.manifest.digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    let layers: Vec<&str> = img.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(inspect["Layers"], serde_json::json!(layers));
    assert_eq!(inspect["RepoTags"], serde_json::json!(["v1"]));
}

#[test]
fn skopeo_round_trips_a_two_platform_index() {
    let (reg, _data) = registry();
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let images = [
        Image::new(2, &[50_000, 20], "amd64"),
        Image::new(3, &[60_000], "arm64"),
    ];
    let index = image::index(&images);
    image::write_layout(&work.path().join("src"), &images, Some(&index), "multi");

    let remote = format!("docker://{}/apps/multi:multi", reg.addr);
    let src = format!("oci:{}:multi", work.path().join("src").display());
    let dst = format!("oci:{}:multi", work.path().join("dst").display());
    skopeo.copy_all(&src, &remote);
    skopeo.copy_all(&remote, &dst);

    let blobs = images.iter().flat_map(|i| i.all());
    image::assert_layout_holds(
        &work.path().join("dst"),
        blobs.chain(std::iter::once(&index)),
    );
    let raw = skopeo.run(&["inspect", "--raw", "--tls-verify=false", &remote]);
    assert_eq!(raw.as_bytes(), index.data.as_slice());
}

#[test]
fn skopeo_deletes_an_image() {
    let (reg, _data) = registry();
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let img = Image::new(4, &[1000], "amd64");
    image::write_layout(work.path(), std::slice::from_ref(&img), None, "v1");
    let remote = format!("docker://{}/gone:v1", reg.addr);
    let src = format!("oci:{}:v1", work.path().display());
    skopeo.copy(&src, &remote);
    skopeo.run(&["delete", "--tls-verify=false", &remote]);
    let status = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &remote])
        .output()
        .unwrap()
        .status;
    assert!(!status.success(), "the deleted image is still there");
}

#[test]
fn containerd_pulls_unpacks_and_pushes() {
    let (reg, _data) = registry();
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let img = Image::new(5, &[200_000, 3000], "amd64");
    image::write_layout(work.path(), std::slice::from_ref(&img), None, "v1");
    let reference = format!("{}/ctr/app:v1", reg.addr);
    let src = format!("oci:{}:v1", work.path().display());
    skopeo.copy(&src, &format!("docker://{reference}"));

    let ctd = Containerd::start();
    ctd.pull(&reference, None);
    let listed = ctd.ctr(&["images", "list"]);
    assert!(listed.contains(&img.manifest.digest), "{listed}");

    let copy = format!("{}/ctr/copy:v1", reg.addr);
    ctd.ctr(&["images", "tag", &reference, &copy]);
    ctd.ctr(&["images", "push", "--plain-http", &copy]);
    let inspect: serde_json::Value = serde_json::from_str(&skopeo.run(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{copy}"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], img.manifest.digest.as_str());
}
