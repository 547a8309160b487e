//! Real OCI images: tar layers, an image config naming their diff ids, manifests and indexes, and
//! OCI image layouts on disk that skopeo can copy from.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::json;

use crate::{random_bytes, sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Pushes `data` as one monolithic upload to `repo` of the registry at `addr`; its digest.
pub async fn push_blob(addr: SocketAddr, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let resp = crate::http_client()
        .post(format!(
            "http://{addr}/v2/{repo}/blobs/uploads/?digest={digest}"
        ))
        .body(data.to_vec())
        .send()
        .await
        .expect("blob upload");
    let status = resp.status();
    assert_eq!(status, 201, "{}", resp.text().await.unwrap_or_default());
    digest
}

/// Pushes an image's config and layers, then its manifest as `repo:tag`.
pub async fn push_image(addr: SocketAddr, repo: &str, img: &Image, tag: &str) {
    for b in img.blobs() {
        push_blob(addr, repo, &b.data).await;
    }
    let resp = crate::http_client()
        .put(format!("http://{addr}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(img.manifest.data.clone())
        .send()
        .await
        .expect("manifest push");
    let status = resp.status();
    assert_eq!(status, 201, "{}", resp.text().await.unwrap_or_default());
}

/// A blob with its digest.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub data: Vec<u8>,
}

impl Blob {
    pub fn new(data: Vec<u8>) -> Blob {
        Blob {
            digest: sha256(&data),
            data,
        }
    }

    pub fn descriptor(&self, media_type: &str) -> serde_json::Value {
        json!({"mediaType": media_type, "digest": self.digest, "size": self.data.len()})
    }
}

/// A single-platform image.
#[derive(Clone, Debug)]
pub struct Image {
    pub layers: Vec<Blob>,
    pub config: Blob,
    pub manifest: Blob,
    pub platform: (String, String),
}

impl Image {
    /// An image whose layers are gzipped tar archives (as clients push them; skopeo would
    /// compress plain tar layers on the way, changing the manifest), each holding one file of
    /// `size` random bytes.
    pub fn new(seed: u64, layer_sizes: &[usize], arch: &str) -> Image {
        Image::exposing(seed, layer_sizes, arch, &["8080/tcp"])
    }

    /// The same, with these `ExposedPorts` in its config (none: an image without EXPOSE).
    pub fn exposing(seed: u64, layer_sizes: &[usize], arch: &str, ports: &[&str]) -> Image {
        let exposed: serde_json::Map<String, serde_json::Value> =
            ports.iter().map(|p| ((*p).to_owned(), json!({}))).collect();
        let tars: Vec<Vec<u8>> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| tar_layer(&format!("file{i}"), &random_bytes(size, seed + i as u64)))
            .collect();
        let diff_ids: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
        let layers: Vec<Blob> = tars.iter().map(|t| Blob::new(gzip(t))).collect();
        let config = Blob::new(
            serde_json::to_vec(&json!({
                "architecture": arch,
                "os": "linux",
                "config": {"ExposedPorts": exposed, "Cmd": ["/file0"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }))
            .expect("json"),
        );
        let manifest = Blob::new(
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(OCI_CONFIG),
                "layers": layers.iter().map(|l| l.descriptor(OCI_LAYER_GZIP)).collect::<Vec<_>>(),
            }))
            .expect("json"),
        );
        Image {
            layers,
            config,
            manifest,
            platform: ("linux".into(), arch.into()),
        }
    }

    /// Config and layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    /// Config, layers and the manifest: everything a copy of the image must hold.
    pub fn all(&self) -> impl Iterator<Item = &Blob> {
        self.blobs().chain(std::iter::once(&self.manifest))
    }
}

/// An image index over `images`.
pub fn index(images: &[Image]) -> Blob {
    let manifests: Vec<_> = images
        .iter()
        .map(|img| {
            let mut d = img.manifest.descriptor(OCI_MANIFEST);
            d["platform"] = json!({"os": img.platform.0, "architecture": img.platform.1});
            d
        })
        .collect();
    Blob::new(
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
        )
        .expect("json"),
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

/// One tar archive holding one regular file.
pub fn tar_layer(name: &str, content: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_cksum();
    builder
        .append_data(&mut header, name, content)
        .expect("tar append");
    builder.into_inner().expect("tar finish")
}

/// Writes an OCI image layout at `dir` holding `images` (and `top`, an index over them, if given),
/// with `tag` naming `top` or else the first image.
pub fn write_layout(dir: &Path, images: &[Image], top: Option<&Blob>, tag: &str) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let mut write = |b: &Blob| {
        let hex = b.digest.trim_start_matches("sha256:");
        std::fs::write(blobs.join(hex), &b.data).expect("write blob");
    };
    for img in images {
        img.blobs().for_each(&mut write);
        write(&img.manifest);
    }
    let (named, media_type) = match top {
        Some(index) => {
            write(index);
            (index, OCI_INDEX)
        }
        None => (&images[0].manifest, OCI_MANIFEST),
    };
    let mut entry = named.descriptor(media_type);
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let index_json = json!({"schemaVersion": 2, "manifests": [entry]});
    std::fs::write(dir.join("index.json"), index_json.to_string()).expect("index.json");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
}

/// Panics unless the OCI layout at `dir` holds every one of `blobs`, byte for byte.
pub fn assert_layout_holds<'a>(dir: &Path, blobs: impl IntoIterator<Item = &'a Blob>) {
    for b in blobs {
        let path = dir
            .join("blobs/sha256")
            .join(b.digest.trim_start_matches("sha256:"));
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(got == b.data, "{} differs after the round trip", b.digest);
    }
}
