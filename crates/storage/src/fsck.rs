//! Verification of stored content: every blob's bytes must hash to its name. Blobs written by
//! versions before verified commits (or damaged by the medium) are found here; removing one
//! makes it absent, which a push of the genuine bytes heals, rather than served wrong.

use oci::Digest;

use crate::backend::BackendError;
use crate::layout;
use crate::{Store, StoreError};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FsckReport {
    pub blobs: usize,
    pub bytes_read: u64,
    /// Blobs whose bytes do not hash to their digest.
    pub corrupt: Vec<Digest>,
    pub removed: usize,
}

impl Store {
    /// Hashes every blob; with `remove`, deletes those that do not match their digest.
    pub async fn fsck(&self, remove: bool) -> Result<FsckReport, StoreError> {
        let mut report = FsckReport::default();
        for d in self.blob_digests().await? {
            let key = layout::blob_data(&d);
            let (actual, read) = match self.hash_object(&key, d.algorithm()).await {
                Ok(hashed) => hashed,
                // A directory left without data (a gc racing a touch): nothing to verify.
                Err(StoreError::Backend(BackendError::NotFound)) => continue,
                Err(e) => return Err(e),
            };
            report.blobs += 1;
            report.bytes_read += read;
            if actual != d {
                tracing::warn!(digest = %d, "blob does not hash to its digest");
                if remove {
                    self.backend.delete(&key).await?;
                    report.removed += 1;
                }
                report.corrupt.push(d);
            }
        }
        Ok(report)
    }
}
