//! Layout compatibility with CNCF distribution (Debian's `docker-registry`, 2.8), both ways, on
//! one directory: each serves what the other wrote.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use testkit::image::{self, Image};
use testkit::process::Quayside;
use testkit::tools::{Distribution, Skopeo};

const BIN: &str = env!("CARGO_BIN_EXE_quayside");

struct Fixture {
    skopeo: Skopeo,
    work: tempfile::TempDir,
    data: tempfile::TempDir,
    images: Vec<Image>,
    index: image::Blob,
}

impl Fixture {
    fn new(seed: u64) -> Fixture {
        let work = tempfile::tempdir().unwrap();
        let images = vec![
            Image::new(seed, &[300_000, 1000], "amd64"),
            Image::new(seed + 10, &[40_000], "arm64"),
        ];
        let index = image::index(&images);
        image::write_layout(&work.path().join("src"), &images, Some(&index), "v1");
        Fixture {
            skopeo: Skopeo::new(),
            work,
            data: tempfile::tempdir().unwrap(),
            images,
            index,
        }
    }

    fn push(&self, addr: std::net::SocketAddr) {
        let src = format!("oci:{}:v1", self.work.path().join("src").display());
        let remote = format!("docker://{addr}/compat/app:v1");
        self.skopeo.copy_all(&src, &remote);
    }

    /// Pulls everything back through `addr` and checks it byte for byte.
    fn pull_and_check(&self, addr: std::net::SocketAddr) {
        let dst = self.work.path().join(format!("dst-{}", addr.port()));
        let remote = format!("docker://{addr}/compat/app:v1");
        let target = format!("oci:{}:v1", dst.display());
        self.skopeo.copy_all(&remote, &target);
        let blobs = self.images.iter().flat_map(|i| i.all());
        image::assert_layout_holds(&dst, blobs.chain(std::iter::once(&self.index)));
        let tags = self.skopeo.run(&[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{addr}/compat/app"),
        ]);
        assert!(tags.contains("\"v1\""), "{tags}");
    }
}

#[test]
fn distribution_serves_what_quayside_wrote() {
    let f = Fixture::new(100);
    {
        let q = Quayside::registry(BIN, f.data.path(), &[]);
        f.push(q.addr);
    }
    let d = Distribution::start(f.data.path());
    f.pull_and_check(d.addr);
}

#[test]
fn quayside_serves_what_distribution_wrote() {
    let f = Fixture::new(200);
    {
        let d = Distribution::start(f.data.path());
        f.push(d.addr);
    }
    let q = Quayside::registry(BIN, f.data.path(), &[]);
    f.pull_and_check(q.addr);
    let (status, body) = testkit::http_get(q.addr, "/v2/_catalog");
    assert_eq!(status, 200);
    let catalog: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!(["compat/app"]));
}
