//! Blobs as seen through a repository: a blob is readable in a repository only while the
//! repository links it (distribution's "linked blob store").

use std::ops::Range;

use oci::{Digest, RepoName};

use crate::backend::ByteStream;
use crate::layout;
use crate::store::{Store, StoreError, or_unknown};

impl Store {
    /// The size of a blob the repository links.
    pub async fn blob_size(&self, name: &RepoName, d: &Digest) -> Result<u64, StoreError> {
        if self
            .read_link(&layout::layer_link(name, d))
            .await?
            .is_none()
            && self
                .read_link(&layout::revision_link(name, d))
                .await?
                .is_none()
        {
            return Err(StoreError::BlobUnknown);
        }
        or_unknown(
            self.backend.size(&layout::blob_data(d)).await,
            StoreError::BlobUnknown,
        )
    }

    /// Streams a blob (or a range of it, already checked against [`Store::blob_size`]).
    pub async fn blob_get(
        &self,
        d: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StoreError> {
        or_unknown(
            self.backend.get(&layout::blob_data(d), range).await,
            StoreError::BlobUnknown,
        )
    }

    /// The blob's content as an open file, where storage is a filesystem; `None`: stream it
    /// with [`Store::blob_get`].
    pub async fn blob_file(&self, d: &Digest) -> Result<Option<std::fs::File>, StoreError> {
        or_unknown(
            self.backend.open_file(&layout::blob_data(d)).await,
            StoreError::BlobUnknown,
        )
    }

    /// A presigned URL for the blob's content, where the backend can make one. Call after
    /// [`Store::blob_size`]: the URL itself does not check that the repository links the blob.
    pub async fn blob_url(&self, d: &Digest) -> Result<Option<String>, StoreError> {
        // Long enough for a slow client to start a multi-GB download; distribution uses 20 min.
        let expires = std::time::Duration::from_secs(20 * 60);
        Ok(self
            .backend
            .presigned_get(&layout::blob_data(d), expires)
            .await?)
    }

    /// Unlinks a blob from a repository. The content stays until garbage collection, since other
    /// repositories may link it.
    pub async fn blob_delete(&self, name: &RepoName, d: &Digest) -> Result<(), StoreError> {
        let link = layout::layer_link(name, d);
        if self.read_link(&link).await?.is_none() {
            return Err(StoreError::BlobUnknown);
        }
        Ok(self.backend.delete(&link).await?)
    }

    /// Links into `name` a blob that `from` links; `false` when `from` has no such blob.
    pub async fn blob_mount(
        &self,
        name: &RepoName,
        from: &RepoName,
        d: &Digest,
    ) -> Result<bool, StoreError> {
        let linked = self
            .read_link(&layout::layer_link(from, d))
            .await?
            .is_some();
        if !linked {
            return Ok(false);
        }
        self.hold_blob(d).await?;
        if self.exists(&layout::blob_data(d)).await?.is_none() {
            return Ok(false);
        }
        self.write_link(&layout::layer_link(name, d), d).await?;
        Ok(true)
    }
}
