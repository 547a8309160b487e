//! Copying an image (an image manifest, or an index with every platform) from one registry to
//! another with no Docker daemon: blobs the target has are skipped, blobs in the same registry
//! are mounted, the rest stream through with no blob held in memory; children before parents,
//! so the target never holds a manifest whose references are missing.

use crate::{Client, Error, ImageRef, Manifest};

/// What happened to one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobFate {
    AlreadyThere,
    Mounted,
    Copied,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub manifests: usize,
    pub blobs: usize,
    pub copied: usize,
    pub mounted: usize,
    pub already_there: usize,
    /// Bytes that crossed from the source to the target.
    pub bytes_copied: u64,
}

/// Copies `from` (on `src`) to `to` (on `dst`); `progress` hears about each blob as it is done.
/// Returns the digest of the top manifest, identical on both sides.
pub async fn copy(
    src: &Client,
    from: &ImageRef,
    dst: &Client,
    to: &ImageRef,
    progress: &mut (dyn FnMut(&oci::Descriptor, BlobFate) + Send),
) -> Result<(oci::Digest, CopyReport), Error> {
    let mut report = CopyReport::default();
    let top = src.manifest(from).await?;
    let parsed = parse(src, from, &top)?;
    for child in &parsed.manifests {
        let reference = child.digest.to_string();
        let manifest = src.manifest(&from.at(&reference)).await?;
        let inner = parse(src, from, &manifest)?;
        copy_blobs(src, from, dst, to, &inner.blobs, &mut report, progress).await?;
        dst.put_manifest(&to.at(&reference), &manifest).await?;
        report.manifests += 1;
    }
    copy_blobs(src, from, dst, to, &parsed.blobs, &mut report, progress).await?;
    dst.put_manifest(to, &top).await?;
    report.manifests += 1;
    Ok((top.digest, report))
}

fn parse(src: &Client, image: &ImageRef, manifest: &Manifest) -> Result<oci::Manifest, Error> {
    oci::Manifest::parse(&manifest.body, Some(&manifest.media_type)).map_err(|e| {
        src.protocol(format!(
            "manifest of {image} ({}) cannot be read: {e}",
            manifest.digest
        ))
    })
}

async fn copy_blobs(
    src: &Client,
    from: &ImageRef,
    dst: &Client,
    to: &ImageRef,
    blobs: &[oci::Descriptor],
    report: &mut CopyReport,
    progress: &mut (dyn FnMut(&oci::Descriptor, BlobFate) + Send),
) -> Result<(), Error> {
    for blob in blobs {
        let fate = if dst.has_blob(&to.repository, &blob.digest).await? {
            report.already_there += 1;
            BlobFate::AlreadyThere
        } else if src.registry() == dst.registry()
            && dst
                .mount(&to.repository, &from.repository, &blob.digest)
                .await?
        {
            report.mounted += 1;
            BlobFate::Mounted
        } else {
            let body = src.blob(&from.repository, &blob.digest).await?;
            dst.push_blob(&to.repository, &blob.digest, blob.size, body)
                .await?;
            report.copied += 1;
            report.bytes_copied += blob.size;
            BlobFate::Copied
        };
        report.blobs += 1;
        progress(blob, fate);
    }
    Ok(())
}

/// The image config of `image`, for an index the linux/amd64 image's (else the first): small
/// JSON, read whole (refused above 4 MiB).
pub async fn image_config(client: &Client, image: &ImageRef) -> Result<serde_json::Value, Error> {
    use futures_util::StreamExt as _;
    const LIMIT: usize = 4 << 20;
    let mut manifest = client.manifest(image).await?;
    let mut parsed = parse(client, image, &manifest)?;
    if let Some(child) = pick_platform(&parsed.manifests) {
        manifest = client
            .manifest(&image.at(&child.digest.to_string()))
            .await?;
        parsed = parse(client, image, &manifest)?;
    }
    let config = parsed
        .blobs
        .first()
        .ok_or_else(|| client.protocol(format!("{image} has no image config")))?;
    if config.size > LIMIT as u64 {
        return Err(client.protocol(format!("the config of {image} is {} bytes", config.size)));
    }
    let mut body = Vec::with_capacity(config.size as usize);
    let mut stream = Box::pin(client.blob(&image.repository, &config.digest).await?);
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.map_err(|e| client.http_error(e))?);
        if body.len() > LIMIT {
            return Err(client.protocol(format!("the config of {image} is over 4 MiB")));
        }
    }
    serde_json::from_slice(&body)
        .map_err(|e| client.protocol(format!("the config of {image} is not JSON: {e}")))
}

fn pick_platform(manifests: &[oci::Descriptor]) -> Option<&oci::Descriptor> {
    manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p["os"] == "linux" && p["architecture"] == "amd64")
        })
        .or_else(|| manifests.first())
}
