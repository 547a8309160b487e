//! Media types of the manifests the registry stores and serves.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// The kind of manifest a media type names, or `None` for media types the registry does not store.
pub fn is_index(media_type: &str) -> Option<bool> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(false),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(true),
        _ => None,
    }
}

/// Layers that registries need not hold (their blobs may live at the descriptor's `urls`): OCI's
/// non-distributable layers and Docker's foreign layers.
pub fn is_non_distributable(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}
