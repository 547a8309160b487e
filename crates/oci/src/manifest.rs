//! Manifest parsing and validation: what a registry must know about a manifest to store it (the
//! blobs and child manifests it references, its subject) and to list it as a referrer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media;

/// A content descriptor, as it appears in manifests and in referrers responses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

/// The parts of a manifest (image manifest or index, OCI or Docker) the registry acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The media type it is stored and served with.
    pub media_type: String,
    /// Blobs it references (config and layers); empty for an index.
    pub blobs: Vec<Descriptor>,
    /// Child manifests it references; empty for an image manifest.
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for an image manifest without one, its config's media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("Content-Type {header:?} does not match the manifest's mediaType {body:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("manifest media type cannot be determined: set mediaType or Content-Type")]
    UnknownKind,
    #[error("image manifest has no config descriptor")]
    MissingConfig,
    #[error("index has no manifests array")]
    MissingManifests,
    /// Fields of the other kind: a reader that guessed the kind from the fields would see
    /// different references than the media type says.
    #[error("{media_type} must not have a {field:?} field")]
    ShapeMismatch {
        media_type: String,
        field: &'static str,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

impl Manifest {
    /// Parses `body`, sent with `content_type` (the request's header, if any).
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        let raw: Raw =
            serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
        if raw.schema_version != Some(2) {
            return Err(ManifestError::SchemaVersion);
        }
        let media_type = resolve_media_type(&raw, content_type)?;
        let is_index = media::is_index(&media_type)
            .ok_or_else(|| ManifestError::UnsupportedMediaType(media_type.clone()))?;
        let stray = if is_index {
            let config = raw.config.as_ref().map(|_| "config");
            config.or(raw.layers.as_ref().map(|_| "layers"))
        } else {
            raw.manifests.as_ref().map(|_| "manifests")
        };
        if let Some(field) = stray {
            return Err(ManifestError::ShapeMismatch { media_type, field });
        }
        if is_index {
            let manifests = raw.manifests.ok_or(ManifestError::MissingManifests)?;
            Ok(Manifest {
                media_type,
                blobs: Vec::new(),
                manifests,
                subject: raw.subject,
                artifact_type: raw.artifact_type,
                annotations: raw.annotations,
            })
        } else {
            let config = raw.config.ok_or(ManifestError::MissingConfig)?;
            let artifact_type = raw
                .artifact_type
                .or_else(|| Some(config.media_type.clone()));
            let mut blobs = vec![config];
            blobs.extend(raw.layers.unwrap_or_default());
            Ok(Manifest {
                media_type,
                blobs,
                manifests: Vec::new(),
                subject: raw.subject,
                artifact_type,
                annotations: raw.annotations,
            })
        }
    }

    /// Parses stored manifest bytes as they are served: with the media type
    /// [`Manifest::sniff_media_type`] gives them. Garbage collection and the registry both read
    /// stored manifests through this.
    pub fn parse_stored(body: &[u8]) -> Result<Manifest, ManifestError> {
        let media_type = Manifest::sniff_media_type(body).ok_or(ManifestError::UnknownKind)?;
        Manifest::parse(body, Some(&media_type))
    }

    /// The blobs a registry must hold for this manifest: all but non-distributable layers.
    pub fn stored_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.blobs
            .iter()
            .filter(|b| !media::is_non_distributable(&b.media_type))
    }

    /// The media type of stored manifest bytes that were validated when pushed. Cheaper than
    /// [`Manifest::parse`]: only the top-level fields are looked at.
    pub fn sniff_media_type(body: &[u8]) -> Option<String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Top {
            media_type: Option<String>,
            manifests: Option<serde::de::IgnoredAny>,
        }
        let top: Top = serde_json::from_slice(body).ok()?;
        Some(match (top.media_type, top.manifests) {
            (Some(m), _) => m,
            (None, Some(_)) => media::OCI_INDEX.to_owned(),
            (None, None) => media::OCI_MANIFEST.to_owned(),
        })
    }
}

fn resolve_media_type(raw: &Raw, content_type: Option<&str>) -> Result<String, ManifestError> {
    // Parameters such as `; charset=utf-8` are not part of the type.
    let header = content_type
        .map(|h| h.split(';').next().unwrap_or("").trim())
        .filter(|h| media::is_index(h).is_some());
    match (&raw.media_type, header) {
        (Some(body), Some(header)) if body != header => Err(ManifestError::MediaTypeMismatch {
            header: header.to_owned(),
            body: body.clone(),
        }),
        (Some(body), _) => Ok(body.clone()),
        (None, Some(header)) => Ok(header.to_owned()),
        (None, None) if raw.manifests.is_some() => Ok(media::OCI_INDEX.to_owned()),
        (None, None) if raw.config.is_some() => Ok(media::OCI_MANIFEST.to_owned()),
        (None, None) => Err(ManifestError::UnknownKind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":0}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D}","size":0}}]{extra}}}"#,
            media::OCI_MANIFEST
        )
    }

    #[test]
    fn image_manifest_lists_config_and_layers() {
        let m = Manifest::parse(image("").as_bytes(), Some(media::OCI_MANIFEST)).unwrap();
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(m.subject, None);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn subject_and_artifact_type() {
        let body = image(&format!(
            r#","artifactType":"application/x-sig","subject":{{"mediaType":"{}","digest":"{D}","size":1}}"#,
            media::OCI_MANIFEST
        ));
        let m = Manifest::parse(body.as_bytes(), None).unwrap();
        assert_eq!(m.subject.unwrap().size, 1);
        assert_eq!(m.artifact_type.as_deref(), Some("application/x-sig"));
    }

    #[test]
    fn refuses_fields_of_the_other_kind() {
        let with_manifests = image(r#","manifests":[]"#)
            .replace(&format!(r#""mediaType":"{}","#, media::OCI_MANIFEST), "");
        assert!(matches!(
            Manifest::parse(with_manifests.as_bytes(), Some(media::OCI_MANIFEST)),
            Err(ManifestError::ShapeMismatch {
                field: "manifests",
                ..
            })
        ));
        let index_with_layers = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[],"layers":[]}}"#,
            media::OCI_INDEX
        );
        assert!(matches!(
            Manifest::parse(index_with_layers.as_bytes(), None),
            Err(ManifestError::ShapeMismatch {
                field: "layers",
                ..
            })
        ));
    }

    #[test]
    fn rejects_mismatch_and_garbage() {
        assert!(matches!(
            Manifest::parse(image("").as_bytes(), Some(media::OCI_INDEX)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert!(matches!(
            Manifest::parse(b"{", None),
            Err(ManifestError::Json(_))
        ));
        assert_eq!(
            Manifest::parse(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::SchemaVersion)
        );
        let deep = "[".repeat(10_000);
        assert!(matches!(
            Manifest::parse(deep.as_bytes(), None),
            Err(ManifestError::Json(_))
        ));
        let bad_digest = image("").replace(D, "sha256:abc");
        assert!(matches!(
            Manifest::parse(bad_digest.as_bytes(), None),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn index_without_media_type_is_inferred() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{D}","size":3}}]}}"#,
            media::OCI_MANIFEST
        );
        let m = Manifest::parse(body.as_bytes(), None).unwrap();
        assert_eq!(m.media_type, media::OCI_INDEX);
        assert_eq!(m.manifests.len(), 1);
        assert_eq!(
            Manifest::sniff_media_type(body.as_bytes()).as_deref(),
            Some(media::OCI_INDEX)
        );
    }
}
