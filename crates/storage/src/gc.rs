//! Online garbage collection: mark every blob a manifest in any repository references, sweep
//! the rest; optionally delete manifests no tag reaches; purge abandoned upload sessions.
//!
//! Why it never deletes what an accepted push relies on, whatever the timing, on every backend
//! and across replicas (the protocol, also in docs/design.md):
//! 1. A blob (or a touch of it) younger than the grace period is never swept, so an upload that
//!    answered 201 keeps its blob for that long before a manifest must reference it.
//! 2. Every writer that is about to rely on a blob — an upload committing it, a mount linking
//!    it, a manifest PUT referencing it (and writing its own bytes) — first *touches* it
//!    ([`crate::Backend::touch`]) and then reads its *collection mark*; if a collector is
//!    deciding about it, the writer waits until the mark is gone and touches again
//!    ([`Store::hold_blob`]).
//! 3. The collector first writes the collection mark of each candidate, then re-reads what the
//!    writers write: manifests that appeared since the mark phase, and the blob's last write or
//!    touch. Only a blob still unreferenced and untouched within the grace period is deleted.
//!
//! Writer: touch, then read mark. Collector: write mark, then read touch. On storage that reads
//! its own and others' writes (every backend here), at least one of the two sees the other: the
//! collector spares the blob, or the writer waits for it to be decided and then finds it present
//! (spared) or absent (the manifest PUT then fails with `MANIFEST_BLOB_UNKNOWN`; an upload
//! commits it anew). A mark counts for [`MARK_TTL`] only, so a collector that died does not
//! block writers for longer, and a collector deletes only within half that time of writing the
//! mark (clocks of replicas may differ by up to that half).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use oci::{Digest, Manifest, Reference, RepoName};

use crate::backend::{BackendError, unix_ms};
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

/// How long a collection mark counts.
pub const MARK_TTL: Duration = Duration::from_secs(600);
/// Candidates marked at once: writers needing one of them wait for the whole batch.
const SWEEP_BATCH: usize = 256;
/// How long a writer waits for a collector before giving up (the collector must have stalled).
const HOLD_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub repositories: usize,
    pub manifests: usize,
    pub manifests_deleted: usize,
    pub blobs: usize,
    pub blobs_referenced: usize,
    pub blobs_young: usize,
    /// Candidates a push touched or referenced while the collector was deciding.
    pub blobs_kept_in_use: usize,
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
        for batch in candidates.chunks(SWEEP_BATCH) {
            if options.dry_run {
                report.blobs_deleted += batch.len();
                report.bytes_reclaimed += batch.iter().map(|(_, size)| size).sum::<u64>();
            } else {
                self.sweep(batch, cutoff, &mut seen, &mut report).await?;
            }
        }
        report.blobs_referenced = marked.len();
        Ok(report)
    }

    /// Deletes blobs of one batch of candidates, unless a writer shows up (see the module doc).
    async fn sweep(
        &self,
        batch: &[(Digest, u64)],
        cutoff: SystemTime,
        seen: &mut HashSet<(RepoName, Digest)>,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        let marked_at = Instant::now();
        let decided = self
            .sweep_marked(batch, cutoff, marked_at, seen, report)
            .await;
        if decided.is_err() {
            // Storage failed part-way: take the marks back, so writers do not wait on them.
            for (d, _) in batch {
                let _ = self.backend.delete(&layout::blob_gc_mark(d)).await;
            }
        }
        decided
    }

    async fn sweep_marked(
        &self,
        batch: &[(Digest, u64)],
        cutoff: SystemTime,
        marked_at: Instant,
        seen: &mut HashSet<(RepoName, Digest)>,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        for (d, _) in batch {
            self.write_gc_mark(d).await?;
        }
        // Manifests that arrived since the mark phase protect their blobs too (also those of a
        // writer from before this protocol, which does not touch).
        let late = self.mark_late(seen).await?;
        for (d, size) in batch {
            let in_use = late.contains(d)
                || self.touched_since(d, cutoff).await?
                || marked_at.elapsed() > MARK_TTL / 2;
            if in_use {
                report.blobs_kept_in_use += 1;
            } else {
                self.backend.delete(&layout::blob_data(d)).await?;
                report.blobs_deleted += 1;
                report.bytes_reclaimed += size;
            }
            self.backend.delete(&layout::blob_gc_mark(d)).await?;
            if !in_use {
                // Markers and, on disk, the directory; a touch racing in may keep them.
                let _ = self.backend.delete_prefix(&layout::blob_dir(d)).await;
            }
        }
        Ok(())
    }

    /// Deletes an untagged manifest unless a push of it shows up meanwhile. Returns whether it
    /// was deleted.
    async fn delete_untagged(
        &self,
        name: &RepoName,
        d: &Digest,
        cutoff: SystemTime,
    ) -> Result<bool, StoreError> {
        self.write_gc_mark(d).await?;
        let link = layout::revision_link(name, d);
        let in_use = self.touched_since(d, cutoff).await?
            || self.backend.modified(&link).await.is_ok_and(|t| t > cutoff);
        if !in_use {
            self.manifest_delete(name, &Reference::Digest(d.clone()))
                .await?;
        }
        self.backend.delete(&layout::blob_gc_mark(d)).await?;
        Ok(!in_use)
    }

    async fn write_gc_mark(&self, d: &Digest) -> Result<(), StoreError> {
        let until = unix_ms(SystemTime::now() + MARK_TTL);
        Ok(self
            .backend
            .put(&layout::blob_gc_mark(d), until.to_string().into())
            .await?)
    }

    /// Whether the blob was written or touched after `cutoff` (a missing blob was not).
    async fn touched_since(&self, d: &Digest, cutoff: SystemTime) -> Result<bool, StoreError> {
        match self.backend.modified(&layout::blob_data(d)).await {
            Ok(t) => Ok(t > cutoff),
            Err(BackendError::NotFound) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// What manifests that are in no repository's `seen` revisions reference; adds them to it.
    async fn mark_late(
        &self,
        seen: &mut HashSet<(RepoName, Digest)>,
    ) -> Result<HashSet<Digest>, StoreError> {
        let mut late = HashSet::new();
        for repo in self.repository_dirs(&["_manifests"]).await? {
            let Ok(name) = repo.parse::<RepoName>() else {
                continue;
            };
            for d in self.revisions(&name).await? {
                if seen.insert((name.clone(), d.clone())) {
                    self.mark_manifest(&d, &mut late).await?;
                }
            }
        }
        Ok(late)
    }

    /// Marks `d` as about to be relied on, once no collector is deciding about it: the writer's
    /// half of the protocol in the module doc. Returns when the caller may check that the blob
    /// exists and rely on it.
    pub(crate) async fn hold_blob(&self, d: &Digest) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            self.backend.touch(&layout::blob_data(d)).await?;
            if !self.being_collected(d).await? {
                return Ok(());
            }
            if started.elapsed() > HOLD_WAIT {
                return Err(StoreError::Collecting(d.clone()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    async fn being_collected(&self, d: &Digest) -> Result<bool, StoreError> {
        match self.backend.read(&layout::blob_gc_mark(d), 64).await {
            Ok(until) => {
                let until = std::str::from_utf8(&until)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                Ok(until > unix_ms(SystemTime::now()))
            }
            Err(BackendError::NotFound) => Ok(false),
            Err(e) => Err(e.into()),
        }
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
                if options.dry_run || self.delete_untagged(name, &d, cutoff).await? {
                    manifests.remove(&d);
                    report.manifests_deleted += 1;
                }
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

    /// A stored manifest as the registry serves it; `None` if its bytes are gone. One that
    /// cannot be read or parsed stops the run: what it references is unknown.
    async fn read_manifest(&self, d: &Digest) -> Result<Option<Manifest>, StoreError> {
        match self.stored_manifest(d).await {
            Ok(m) => Ok(Some(m)),
            Err(StoreError::ManifestUnknown) => Ok(None),
            Err(e) => Err(e),
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
        for d in self.blob_digests().await? {
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
        Ok(candidates)
    }

    /// Every digest with a blob directory, whether or not its data is still there.
    pub(crate) async fn blob_digests(&self) -> Result<Vec<Digest>, StoreError> {
        let mut digests = Vec::new();
        let root = layout::blobs_root();
        for algorithm in self.backend.list(&root).await? {
            for prefix in self.backend.list(&format!("{root}/{algorithm}")).await? {
                let dir = format!("{root}/{algorithm}/{prefix}");
                for hex in self.backend.list(&dir).await? {
                    if let Ok(d) = format!("{algorithm}:{hex}").parse::<Digest>() {
                        digests.push(d);
                    }
                }
            }
        }
        Ok(digests)
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
            if !self
                .upload_abandoned(name, id, options.upload_max_age, now)
                .await?
            {
                continue;
            }
            if options.dry_run {
                purged += 1;
                continue;
            }
            // A request working on it now holds its claim: then it is not abandoned.
            match self.backend.claim(&layout::upload_data(name, id)).await {
                Ok(claim) => {
                    let discarded = self.discard_upload(name, id).await;
                    claim.release().await;
                    discarded?;
                }
                Err(BackendError::Busy) => continue,
                // No data (a kill between `startedat` and the first write): nothing to claim.
                Err(BackendError::NotFound) => self.discard_upload(name, id).await?,
                Err(e) => return Err(e.into()),
            }
            purged += 1;
        }
        Ok(purged)
    }

    /// Older than `max_age` by the id's own time (version 7 ids), else by `startedat`, else by
    /// its last write; a session with none of these is a leftover.
    async fn upload_abandoned(
        &self,
        name: &RepoName,
        id: UploadId,
        max_age: Duration,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let started = match id.created() {
            Some(t) => Some(t),
            None => self.upload_started(name, id).await?,
        };
        let started = match started {
            Some(t) => Some(t),
            None => match self.backend.modified(&layout::upload_data(name, id)).await {
                Ok(t) => Some(t),
                Err(BackendError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
        };
        Ok(started.is_none_or(|t| now.duration_since(t).is_ok_and(|age| age > max_age)))
    }

    async fn upload_started(
        &self,
        name: &RepoName,
        id: UploadId,
    ) -> Result<Option<SystemTime>, StoreError> {
        match self
            .backend
            .read(&layout::upload_started_at(name, id), 64)
            .await
        {
            Ok(b) => Ok(std::str::from_utf8(&b)
                .ok()
                .and_then(|s| humantime::parse_rfc3339_weak(s.trim()).ok())),
            Err(BackendError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
