//! What a pull-through cache needs of the store besides content: one fetch per blob across
//! processes, when a repository was last used (`--upstream-cache-max-age`), and forgetting a
//! repository so that gc reclaims its blobs.

use std::time::SystemTime;

use oci::{Digest, RepoName};

use crate::layout;
use crate::store::{Store, StoreError};
use crate::{BackendError, Claim};

/// Names per catalog page while listing a namespace.
const PAGE: usize = 100;

impl Store {
    pub async fn mark_used(&self, name: &RepoName, at: SystemTime) -> Result<(), StoreError> {
        let stamp = humantime::format_rfc3339_micros(at).to_string();
        Ok(self
            .backend
            .put(&layout::repository_used(name), stamp.into())
            .await?)
    }

    /// `None`: never marked (or the mark is unreadable, which the next mark repairs).
    pub async fn last_used(&self, name: &RepoName) -> Result<Option<SystemTime>, StoreError> {
        match self.backend.read(&layout::repository_used(name), 64).await {
            Ok(bytes) => Ok(std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| humantime::parse_rfc3339(s.trim()).ok())),
            Err(BackendError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Claims the fetch of `d` into `name` for this process, across every process sharing the
    /// storage (a mirror's replicas); `None` while another holds it. A holder that dies gives
    /// it up as its upload claims go (the kernel's lock; an object store's lease running out).
    pub async fn claim_fetch(
        &self,
        name: &RepoName,
        d: &Digest,
    ) -> Result<Option<Box<dyn Claim>>, StoreError> {
        let key = layout::fetch_lock(name, d);
        self.backend.create_empty(&key).await?;
        match self.backend.claim(&key).await {
            Ok(claim) => Ok(Some(claim)),
            Err(BackendError::Busy) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The repositories below `namespace/`, in catalog order. The catalog puts a name's
    /// children right after it, so the walk stops at the first name outside.
    pub async fn repositories_under(&self, namespace: &str) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{namespace}/");
        let mut names = Vec::new();
        let mut last = namespace.to_owned();
        loop {
            let page = self
                .catalog_page(Some(PAGE), Some(&last), &|_| true)
                .await?;
            for name in &page.items {
                if !name.starts_with(&prefix) {
                    return Ok(names);
                }
                names.push(name.clone());
            }
            match page.items.last() {
                Some(name) if page.more => last = name.clone(),
                _ => return Ok(names),
            }
        }
    }

    /// Removes a repository's tags, manifests, blob links and referrers (not its unfinished
    /// uploads, which gc purges by age, nor repositories nested below it); what only it
    /// referenced is then garbage for the next collection.
    pub async fn forget_repository(&self, name: &RepoName) -> Result<(), StoreError> {
        let mut forgotten = Ok(());
        for dir in layout::repository_contents(name) {
            forgotten = self.backend.delete_prefix(&dir).await;
            if forgotten.is_err() {
                break;
            }
        }
        self.resolved.changed();
        Ok(forgotten?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use crate::{FsBackend, Store};

    /// A repository with one tag, written as distribution lays it out.
    async fn repository(store: &Store, name: &str) {
        let digest = format!("sha256:{}", "a".repeat(64));
        let link =
            format!("docker/registry/v2/repositories/{name}/_manifests/tags/v1/current/link");
        store.backend.put(&link, Bytes::from(digest)).await.unwrap();
    }

    #[tokio::test]
    async fn a_namespace_lists_its_repositories_only_and_forgetting_keeps_nested_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Arc::new(FsBackend::new(dir.path(), false)), 1 << 20);
        for name in [
            "up.test/a",
            "up.test/a/b",
            "up.test-x/c",
            "up.testing/d",
            "up/e",
            "x/f",
        ] {
            repository(&store, name).await;
        }
        assert_eq!(
            store.repositories_under("up.test").await.unwrap(),
            ["up.test/a", "up.test/a/b"]
        );
        let a = "up.test/a".parse().unwrap();
        assert_eq!(store.last_used(&a).await.unwrap(), None);
        let at = std::time::UNIX_EPOCH + Duration::from_micros(1_764_000_000_123_456);
        store.mark_used(&a, at).await.unwrap();
        assert_eq!(store.last_used(&a).await.unwrap(), Some(at));
        store.forget_repository(&a).await.unwrap();
        assert_eq!(store.last_used(&a).await.unwrap(), None);
        assert_eq!(
            store.repositories_under("up.test").await.unwrap(),
            ["up.test/a/b"]
        );
    }
}
