//! `--upstream-cache-max-age`: a mirrored repository nobody pulled for that long is forgotten
//! (tags, manifests, blob links), and the next garbage collection reclaims what only it held.
//!
//! Each pull marks its repository as used in storage, at most once per tenth of the max age per
//! process (so a busy repository costs one small write now and then, and replicas sharing a
//! bucket see each other's pulls). A pass walks each upstream's namespace; a repository with no
//! mark yet (cached before the setting) is marked then, so it gets the whole max age.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use oci::RepoName;
use storage::{Store, StoreError};

/// Remembered marks above this count are forgotten (the next pull of each writes again).
const MAX_REMEMBERED: usize = 100_000;

pub(crate) struct Expiry {
    pub(crate) max_age: Duration,
    /// When this process last marked each repository.
    marked: Mutex<HashMap<RepoName, Instant>>,
}

impl Expiry {
    pub(crate) fn new(max_age: Duration) -> Expiry {
        Expiry {
            max_age,
            marked: Mutex::new(HashMap::new()),
        }
    }

    /// How often a pass runs: often enough that a repository outlives its max age by at most a
    /// quarter of it.
    pub(crate) fn pass_interval(&self) -> Duration {
        (self.max_age / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }

    /// Marks `name` used unless this process did so recently; the write happens off the
    /// request's path.
    pub(crate) fn touch(&self, store: &Store, name: &RepoName) {
        let due = {
            let mut marked = self.marked.lock().unwrap_or_else(|p| p.into_inner());
            let recent = marked
                .get(name)
                .is_some_and(|at| at.elapsed() < self.max_age / 10);
            if !recent {
                if marked.len() >= MAX_REMEMBERED {
                    marked.clear();
                }
                marked.insert(name.clone(), Instant::now());
            }
            !recent
        };
        if due {
            let (store, name) = (store.clone(), name.clone());
            tokio::spawn(async move {
                if let Err(e) = store.mark_used(&name, SystemTime::now()).await {
                    tracing::warn!(repository = %name, error = %e, "cannot mark a mirrored repository used");
                }
            });
        }
    }

    /// One pass over `namespace`: the names of the repositories it forgot.
    pub(crate) async fn pass(
        &self,
        store: &Store,
        namespace: &str,
    ) -> Result<Vec<String>, StoreError> {
        let now = SystemTime::now();
        let mut forgotten = Vec::new();
        for name in store.repositories_under(namespace).await? {
            let Ok(repo) = name.parse::<RepoName>() else {
                continue;
            };
            match store.last_used(&repo).await? {
                None => store.mark_used(&repo, now).await?,
                Some(at) if now.duration_since(at).unwrap_or_default() > self.max_age => {
                    store.forget_repository(&repo).await?;
                    forgotten.push(name);
                }
                Some(_) => {}
            }
        }
        Ok(forgotten)
    }
}
