//! Manifests, tags and referrers. A manifest's bytes are stored as a blob; the repository links
//! it as a revision, tags point at revisions, and a manifest with a `subject` is linked as a
//! referrer of that subject.

use bytes::Bytes;
use futures_util::future::try_join_all;
use oci::{Algorithm, Descriptor, Digest, Manifest, Reference, RepoName, Tag};

use crate::layout;
use crate::store::{CachedManifest, Store, StoreError};

/// A stored manifest, as served.
#[derive(Clone, Debug)]
pub struct ManifestContent {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
}

/// The outcome of a manifest push.
#[derive(Clone, Debug)]
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// The extra tags applied (a PUT's `?tag=` parameters).
    pub tags: Vec<Tag>,
}

impl Store {
    /// Resolves a tag or digest to a manifest digest the repository holds.
    pub async fn manifest_resolve(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<Digest, StoreError> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(tag) => self
                .read_link(&layout::tag_current_link(name, tag))
                .await?
                .ok_or(StoreError::ManifestUnknown)?,
        };
        match self
            .read_link(&layout::revision_link(name, &digest))
            .await?
        {
            Some(_) => Ok(digest),
            None => Err(StoreError::ManifestUnknown),
        }
    }

    /// A manifest as served to pulls: resolved through the in-memory resolutions when they are
    /// fresh (see [`Store::with_resolution_ttl`]), from storage otherwise.
    pub async fn manifest_get(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestContent, StoreError> {
        let lookup = self.manifest_resolve(name, reference);
        let digest = self.resolved.resolve(name, reference, lookup).await?;
        self.manifest_content(digest).await
    }

    /// The bytes and media type of a manifest known to be stored.
    async fn manifest_content(&self, digest: Digest) -> Result<ManifestContent, StoreError> {
        let cached = match self.manifests.get(&digest) {
            Some(hit) => hit,
            None => {
                let body = self.manifest_body(&digest).await?;
                let media_type = Manifest::sniff_media_type(&body)
                    .ok_or_else(|| StoreError::CorruptLink(layout::blob_data(&digest)))?;
                let entry = CachedManifest {
                    media_type: media_type.into(),
                    body,
                };
                self.manifests.insert(digest.clone(), entry.clone());
                entry
            }
        };
        Ok(ManifestContent {
            digest,
            media_type: cached.media_type.to_string(),
            body: cached.body,
        })
    }

    /// A stored manifest parsed as it is served (media type sniffed as a GET reports it, within
    /// the registry's size limit). Garbage collection reads manifests only through this, so the
    /// two cannot disagree about what a manifest references.
    pub(crate) async fn stored_manifest(&self, digest: &Digest) -> Result<Manifest, StoreError> {
        let invalid = |reason: String| StoreError::StoredManifestInvalid {
            digest: digest.clone(),
            reason,
        };
        let body = match self.manifest_body(digest).await {
            Err(StoreError::Backend(crate::BackendError::TooLarge { limit })) => {
                return Err(invalid(format!("larger than {limit} bytes")));
            }
            other => other?,
        };
        Manifest::parse_stored(&body).map_err(|e| invalid(e.to_string()))
    }

    async fn manifest_body(&self, digest: &Digest) -> Result<Bytes, StoreError> {
        match self
            .backend
            .read(&layout::blob_data(digest), self.max_manifest)
            .await
        {
            Err(crate::BackendError::NotFound) => Err(StoreError::ManifestUnknown),
            other => Ok(other?),
        }
    }

    /// Validates and stores a manifest, then points `reference` (if a tag) and every one of
    /// `tags` at it.
    pub async fn manifest_put(
        &self,
        name: &RepoName,
        reference: &Reference,
        tags: &[Tag],
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PutManifest, StoreError> {
        let (manifest, digest) = self.validate(reference, content_type, &body)?;
        // Checked before anything is written, so a refused manifest leaves nothing behind; then
        // held against collection, and the blobs' presence read again under that hold.
        self.check_references(name, &manifest).await?;
        self.hold_references(&digest, &manifest).await?;
        self.check_still_present(&manifest).await?;
        self.write_manifest(name, reference, tags, digest, manifest, body)
            .await
    }

    /// Stores a manifest a mirror fetched from its upstream, without the push rule that what it
    /// references be present: a pull-through cache fetches blobs when they are asked for, and
    /// holding the manifest back until the whole image is cached would stall every first pull.
    /// The digest is still verified, and collection treats missing references as it treats
    /// those of a deleted blob.
    pub async fn manifest_put_mirrored(
        &self,
        name: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PutManifest, StoreError> {
        let (manifest, digest) = self.validate(reference, content_type, &body)?;
        self.hold_references(&digest, &manifest).await?;
        self.write_manifest(name, reference, &[], digest, manifest, body)
            .await
    }

    /// Within the size limit, a manifest we serve, under the digest `reference` names (verified)
    /// or, for a tag, its sha256.
    fn validate(
        &self,
        reference: &Reference,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(Manifest, Digest), StoreError> {
        if body.len() as u64 > self.max_manifest {
            return Err(StoreError::ManifestTooBig {
                limit: self.max_manifest,
            });
        }
        let manifest = Manifest::parse(body, content_type)?;
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), body);
                if actual != *expected {
                    return Err(StoreError::DigestMismatch {
                        expected: expected.clone(),
                        actual,
                    });
                }
                actual
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, body),
        };
        Ok((manifest, digest))
    }

    async fn write_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        tags: &[Tag],
        digest: Digest,
        manifest: Manifest,
        body: Bytes,
    ) -> Result<PutManifest, StoreError> {
        self.backend.put(&layout::blob_data(&digest), body).await?;
        let subject = manifest.subject.map(|s| s.digest);
        let named = match reference {
            Reference::Tag(tag) => Some(tag),
            Reference::Digest(_) => None,
        };
        let all_tags: Vec<&Tag> = named.into_iter().chain(tags).collect();
        let linked = self
            .link_manifest(name, &digest, subject.as_ref(), &all_tags)
            .await;
        // Also after a failure: some of the links may be in storage.
        self.resolved.changed();
        linked?;
        Ok(PutManifest {
            digest,
            subject,
            tags: tags.to_vec(),
        })
    }

    /// Links a stored manifest into the repository as a revision, a referrer of `subject`, and
    /// what `tags` now point at.
    async fn link_manifest(
        &self,
        name: &RepoName,
        digest: &Digest,
        subject: Option<&Digest>,
        tags: &[&Tag],
    ) -> Result<(), StoreError> {
        self.write_link(&layout::revision_link(name, digest), digest)
            .await?;
        if let Some(subject) = subject {
            self.write_link(&layout::referrer_link(name, subject, digest), digest)
                .await?;
        }
        for tag in tags {
            self.write_link(&layout::tag_index_link(name, tag, digest), digest)
                .await?;
            self.write_link(&layout::tag_current_link(name, tag), digest)
                .await?;
        }
        Ok(())
    }

    /// Holds (see `gc`) the manifest's own bytes and everything it references, before checking
    /// that they exist, so that a collection running now cannot delete them after the check.
    async fn hold_references(&self, own: &Digest, m: &Manifest) -> Result<(), StoreError> {
        let referenced = m.stored_blobs().chain(&m.manifests).map(|d| &d.digest);
        try_join_all(
            std::iter::once(own)
                .chain(referenced)
                .map(|d| self.hold_blob(d)),
        )
        .await?;
        Ok(())
    }

    /// After [`Store::hold_references`]: a collection that decided before the hold may have
    /// deleted a blob since [`Store::check_references`] saw it.
    async fn check_still_present(&self, m: &Manifest) -> Result<(), StoreError> {
        let present = m.stored_blobs().chain(&m.manifests).map(|desc| async move {
            match self.exists(&layout::blob_data(&desc.digest)).await? {
                Some(_) => Ok(()),
                None => Err(StoreError::ManifestBlobUnknown(desc.digest.clone())),
            }
        });
        try_join_all(present).await?;
        Ok(())
    }

    /// Every blob (but non-distributable layers, which may live elsewhere) must be linked in the
    /// repository with the declared size, every child manifest must be a revision of it. The
    /// subject need not exist (the spec allows referrers first).
    async fn check_references(&self, name: &RepoName, m: &Manifest) -> Result<(), StoreError> {
        let blobs = m.stored_blobs().map(|desc| async move {
            match self.blob_size(name, &desc.digest).await {
                Ok(actual) if actual != desc.size => Err(StoreError::ManifestSizeMismatch {
                    digest: desc.digest.clone(),
                    declared: desc.size,
                    actual,
                }),
                Ok(_) => Ok(()),
                Err(StoreError::BlobUnknown) => {
                    Err(StoreError::ManifestBlobUnknown(desc.digest.clone()))
                }
                Err(e) => Err(e),
            }
        });
        try_join_all(blobs).await?;
        let children = m.manifests.iter().map(|desc| async move {
            match self
                .read_link(&layout::revision_link(name, &desc.digest))
                .await?
            {
                Some(_) => Ok(()),
                None => Err(StoreError::ManifestBlobUnknown(desc.digest.clone())),
            }
        });
        try_join_all(children).await?;
        Ok(())
    }

    /// Deletes by digest (the revision, every tag pointing at it, its referrer link) or by tag
    /// (the tag only).
    pub async fn manifest_delete(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<(), StoreError> {
        let deleted = match reference {
            Reference::Tag(tag) => {
                self.manifest_resolve(name, reference).await?;
                self.backend
                    .delete_prefix(&layout::tag_dir(name, tag))
                    .await
                    .map_err(StoreError::from)
            }
            Reference::Digest(digest) => self.delete_revision(name, digest).await,
        };
        // Also after a failure: part of the change may be in storage.
        self.resolved.changed();
        deleted
    }

    async fn delete_revision(&self, name: &RepoName, digest: &Digest) -> Result<(), StoreError> {
        let digest_ref = Reference::Digest(digest.clone());
        let stored = self.manifest_resolve(name, &digest_ref).await?;
        let content = self.manifest_content(stored).await?;
        for tag in self.tags(name).await? {
            let current = self
                .read_link(&layout::tag_current_link(name, &tag))
                .await?;
            if current.as_ref() == Some(digest) {
                self.backend
                    .delete_prefix(&layout::tag_dir(name, &tag))
                    .await?;
            }
        }
        if let Ok(m) = Manifest::parse_stored(&content.body)
            && let Some(subject) = m.subject
        {
            self.backend
                .delete(&layout::referrer_link(name, &subject.digest, digest))
                .await?;
        }
        Ok(self
            .backend
            .delete(&layout::revision_link(name, digest))
            .await?)
    }

    /// The manifests in `name` whose subject is `subject`, optionally only those of one artifact
    /// type, sorted by digest.
    pub async fn referrers(
        &self,
        name: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, StoreError> {
        let dir = layout::referrers_dir(name, subject);
        let mut digests = Vec::new();
        for alg in self.backend.list(&dir).await? {
            for hex in self.backend.list(&format!("{dir}/{alg}")).await? {
                if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() {
                    digests.push(d);
                }
            }
        }
        digests.sort();
        let mut out = Vec::new();
        for digest in digests {
            if let Some(desc) = self.referrer_descriptor(name, digest).await?
                && artifact_type.is_none_or(|t| desc.artifact_type.as_deref() == Some(t))
            {
                out.push(desc);
            }
        }
        Ok(out)
    }

    async fn referrer_descriptor(
        &self,
        name: &RepoName,
        digest: Digest,
    ) -> Result<Option<Descriptor>, StoreError> {
        let content = match self.manifest_get(name, &Reference::Digest(digest)).await {
            Err(StoreError::ManifestUnknown) => return Ok(None),
            other => other?,
        };
        let Ok(m) = Manifest::parse_stored(&content.body) else {
            return Ok(None);
        };
        Ok(Some(Descriptor {
            media_type: content.media_type,
            digest: content.digest,
            size: content.body.len() as u64,
            artifact_type: m.artifact_type,
            annotations: m.annotations,
            platform: None,
        }))
    }

    /// The repository's tags, unsorted.
    pub(crate) async fn tags(&self, name: &RepoName) -> Result<Vec<Tag>, StoreError> {
        let names = self.backend.list(&layout::tags_dir(name)).await?;
        Ok(names.into_iter().filter_map(|t| t.parse().ok()).collect())
    }
}
