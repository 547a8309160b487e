//! Online garbage collection: mark every blob a manifest in any repository references, sweep
//! the rest; optionally delete manifests no tag reaches; purge abandoned upload sessions.
//!
//! Why it is safe while pushes go on (the argument, also in docs/design.md):
//! 1. A push writes blobs before the manifest that references them. A blob younger than the
//!    grace period is never swept, so a push in flight (blobs written, manifest not yet) keeps
//!    its blobs as long as it finishes within the grace period.
//! 2. A push may instead *reuse* an old orphan blob (HEAD says it exists, so it is not uploaded
//!    again) and reference it from a new manifest. Before deleting anything, the sweep lists every
//!    repository's revisions again and marks what manifests that appeared since the mark phase
//!    reference, so a manifest accepted before the re-mark protects its blobs.
//! 3. What remains is a manifest PUT landing between that re-mark and the delete of one of the
//!    orphans it reuses: the manifest is then accepted and its blob deleted a moment later. The
//!    window is the duration of the deletes; running GC when pushes are rare (the default
//!    schedule is daily) makes it unlikely, and a re-push heals it. Closing it fully needs a
//!    lock every replica honours, which the storage layout has no place for.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use oci::{Digest, Manifest, Reference, RepoName};

use crate::backend::BackendError;
use crate::layout::{self, UploadId};
use crate::{Store, StoreError};

#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Report what would go, delete nothing.
    pub dry_run: bool,
    /// Also delete manifests that no tag reaches (directly, through an index, or as a referrer
    /// of a reachable manifest).
    pub delete_untagged: bool,
    /// Blobs and manifests written more recently than this are kept.
    pub grace: Duration,
    /// Upload sessions started longer ago than this are purged.
    pub upload_max_age: Duration,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub repositories: usize,
    pub manifests: usize,
    pub manifests_deleted: usize,
    pub blobs: usize,
    pub blobs_referenced: usize,
    pub blobs_young: usize,
    pub blobs_deleted: usize,
    pub bytes_reclaimed: u64,
    pub uploads_purged: usize,
    pub dry_run: bool,
}

impl Store {
    pub async fn gc(&self, options: &GcOptions) -> Result<GcReport, StoreError> {
        let started = SystemTime::now();
        let cutoff = started
            .checked_sub(options.grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = GcReport {
            dry_run: options.dry_run,
            ..GcReport::default()
        };
        let mut marked = HashSet::new();
        let mut seen = HashSet::new();
        // Repositories without manifests still hold uploads (a first push cut short).
        for repo in self
            .repository_dirs(&["_manifests", "_uploads", "_layers"])
            .await?
        {
            let Ok(name) = repo.parse::<RepoName>() else {
                continue;
            };
            report.repositories += 1;
            self.mark_repository(&name, options, cutoff, &mut marked, &mut seen, &mut report)
                .await?;
            report.uploads_purged += self.purge_uploads(&name, options, started).await?;
        }
        let candidates = self.sweep_candidates(&marked, cutoff, &mut report).await?;
        // Manifests that arrived during the mark phase protect their blobs too.
        let mut late = HashSet::new();
        for repo in self.catalog_page(None, None).await?.items {
            if let Ok(name) = repo.parse::<RepoName>() {
                for d in self.revisions(&name).await? {
                    if !seen.contains(&(name.clone(), d.clone())) {
                        self.mark_manifest(&d, &mut late).await?;
                    }
                }
            }
        }
        for (digest, size) in candidates {
            if late.contains(&digest) {
                continue;
            }
            if !options.dry_run {
                self.backend
                    .delete_prefix(&layout::blob_dir(&digest))
                    .await?;
            }
            report.blobs_deleted += 1;
            report.bytes_reclaimed += size;
        }
        report.blobs_referenced = marked.len();
        Ok(report)
    }

    async fn mark_repository(
        &self,
        name: &RepoName,
        options: &GcOptions,
        cutoff: SystemTime,
        marked: &mut HashSet<Digest>,
        seen: &mut HashSet<(RepoName, Digest)>,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        let mut manifests: HashMap<Digest, Option<Manifest>> = HashMap::new();
        for d in self.revisions(name).await? {
            seen.insert((name.clone(), d.clone()));
            let parsed = self.read_manifest(&d).await?;
            manifests.insert(d, parsed);
        }
        if options.delete_untagged {
            let keep = self.reachable(name, &manifests).await?;
            let doomed: Vec<Digest> = manifests
                .keys()
                .filter(|d| !keep.contains(*d))
                .cloned()
                .collect();
            for d in doomed {
                let link = layout::revision_link(name, &d);
                if self.backend.modified(&link).await.is_ok_and(|t| t > cutoff) {
                    continue;
                }
                if !options.dry_run {
                    self.manifest_delete(name, &Reference::Digest(d.clone()))
                        .await?;
                }
                manifests.remove(&d);
                report.manifests_deleted += 1;
            }
        }
        for (d, parsed) in &manifests {
            report.manifests += 1;
            marked.insert(d.clone());
            if let Some(m) = parsed {
                marked.extend(m.blobs.iter().map(|b| b.digest.clone()));
                marked.extend(m.manifests.iter().map(|c| c.digest.clone()));
            }
        }
        Ok(())
    }

    /// Tagged manifests, their children, and referrers of anything kept, to a fixed point.
    async fn reachable(
        &self,
        name: &RepoName,
        manifests: &HashMap<Digest, Option<Manifest>>,
    ) -> Result<HashSet<Digest>, StoreError> {
        let mut keep = HashSet::new();
        for tag in self.tags(name).await? {
            if let Some(d) = self
                .read_link(&layout::tag_current_link(name, &tag))
                .await?
            {
                keep.insert(d);
            }
        }
        loop {
            let before = keep.len();
            for (d, m) in manifests {
                let Some(m) = m else { continue };
                if keep.contains(d) {
                    keep.extend(m.manifests.iter().map(|c| c.digest.clone()));
                }
                if m.subject.as_ref().is_some_and(|s| keep.contains(&s.digest)) {
                    keep.insert(d.clone());
                }
            }
            if keep.len() == before {
                return Ok(keep);
            }
        }
    }

    async fn mark_manifest(
        &self,
        d: &Digest,
        marked: &mut HashSet<Digest>,
    ) -> Result<(), StoreError> {
        marked.insert(d.clone());
        if let Some(m) = self.read_manifest(d).await? {
            marked.extend(m.blobs.iter().map(|b| b.digest.clone()));
            marked.extend(m.manifests.iter().map(|c| c.digest.clone()));
        }
        Ok(())
    }

    /// A stored manifest, parsed; `None` if its blob is gone or unreadable (it still counts as
    /// referenced, so nothing it might need is swept on a guess).
    async fn read_manifest(&self, d: &Digest) -> Result<Option<Manifest>, StoreError> {
        match self
            .backend
            .read(&layout::blob_data(d), self.max_manifest())
            .await
        {
            Ok(body) => Ok(Manifest::parse(&body, None).ok()),
            Err(BackendError::NotFound | BackendError::TooLarge { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn revisions(&self, name: &RepoName) -> Result<Vec<Digest>, StoreError> {
        let mut out = Vec::new();
        for algorithm in ["sha256", "sha512"] {
            for hex in self
                .backend
                .list(&layout::revisions_dir(name, algorithm))
                .await?
            {
                // A deleted revision can leave its directory behind (filesystem): only a
                // present link counts.
                if let Ok(d) = format!("{algorithm}:{hex}").parse::<Digest>()
                    && self
                        .read_link(&layout::revision_link(name, &d))
                        .await?
                        .is_some()
                {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Every unreferenced blob older than `cutoff`, with its size.
    async fn sweep_candidates(
        &self,
        marked: &HashSet<Digest>,
        cutoff: SystemTime,
        report: &mut GcReport,
    ) -> Result<Vec<(Digest, u64)>, StoreError> {
        let mut candidates = Vec::new();
        let root = layout::blobs_root();
        for algorithm in self.backend.list(&root).await? {
            for prefix in self.backend.list(&format!("{root}/{algorithm}")).await? {
                for hex in self
                    .backend
                    .list(&format!("{root}/{algorithm}/{prefix}"))
                    .await?
                {
                    let Ok(d) = format!("{algorithm}:{hex}").parse::<Digest>() else {
                        continue;
                    };
                    report.blobs += 1;
                    if marked.contains(&d) {
                        continue;
                    }
                    // The size (a second request on object stores) only for blobs that go.
                    let key = layout::blob_data(&d);
                    let Ok(modified) = self.backend.modified(&key).await else {
                        continue;
                    };
                    if modified > cutoff {
                        report.blobs_young += 1;
                    } else if let Ok(size) = self.backend.size(&key).await {
                        candidates.push((d, size));
                    }
                }
            }
        }
        Ok(candidates)
    }

    async fn purge_uploads(
        &self,
        name: &RepoName,
        options: &GcOptions,
        now: SystemTime,
    ) -> Result<usize, StoreError> {
        let mut purged = 0;
        for id in self.backend.list(&layout::uploads_dir(name)).await? {
            let Ok(id) = id.parse::<UploadId>() else {
                continue;
            };
            let started = match self
                .backend
                .read(&layout::upload_started_at(name, id), 64)
                .await
            {
                Ok(b) => std::str::from_utf8(&b)
                    .ok()
                    .and_then(|s| humantime::parse_rfc3339_weak(s.trim()).ok()),
                Err(BackendError::NotFound) => None,
                Err(e) => return Err(e.into()),
            };
            let old = started.is_none_or(|t| {
                now.duration_since(t)
                    .is_ok_and(|age| age > options.upload_max_age)
            });
            if old {
                // Not `upload_cancel`: a kill can leave a session with `startedat` and no data.
                if !options.dry_run {
                    match self.backend.abort(&layout::upload_data(name, id)).await {
                        Ok(()) | Err(BackendError::NotFound) => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.backend
                        .delete_prefix(&layout::upload_dir(name, id))
                        .await?;
                }
                purged += 1;
            }
        }
        Ok(purged)
    }
}
