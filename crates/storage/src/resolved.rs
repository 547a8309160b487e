//! Tag and digest resolutions kept in memory for a short time, so that a manifest GET by tag, the
//! registry's most frequent request, costs no storage read at all.
//!
//! Staleness is bounded both ways:
//! - Every manifest or tag change made through this [`Store`](crate::Store) (push, delete, a
//!   mirror's refresh, garbage collection) bumps an epoch, and an entry is used only in the epoch
//!   it was read in. The epoch is read *before* storage is, so a read racing a change stores an
//!   entry that is already outdated: this process never serves a tag older than its own last
//!   change.
//! - A change made by another process (another replica, `quayside gc`) cannot be seen, so every
//!   entry expires `ttl` after it was read: that is the most a replica can lag behind another.
//!
//! Only found references are kept: a tag just pushed through another replica is never hidden by
//! an earlier "unknown".

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use oci::{Digest, Reference, RepoName};

/// Resolutions kept (each ~200 bytes).
const ENTRIES: usize = 16_384;

pub(crate) struct Resolutions {
    ttl: Duration,
    epoch: AtomicU64,
    entries: quick_cache::sync::Cache<(RepoName, Reference), Resolved>,
}

#[derive(Clone)]
struct Resolved {
    digest: Digest,
    read_at: Instant,
    epoch: u64,
}

/// Where a lookup that missed must leave its answer, from before it read storage.
pub(crate) struct Ticket {
    epoch: u64,
    read_at: Instant,
}

impl Resolutions {
    pub(crate) fn new(ttl: Duration) -> Resolutions {
        Resolutions {
            ttl,
            epoch: AtomicU64::new(0),
            entries: quick_cache::sync::Cache::new(ENTRIES),
        }
    }

    /// The cached digest, or a ticket to [`Resolutions::insert`] what storage answers.
    pub(crate) fn get(&self, name: &RepoName, reference: &Reference) -> Result<Digest, Ticket> {
        let ticket = Ticket {
            epoch: self.epoch.load(Ordering::Acquire),
            read_at: Instant::now(),
        };
        if self.ttl.is_zero() {
            return Err(ticket);
        }
        match self.entries.get(&(name.clone(), reference.clone())) {
            Some(hit) if hit.epoch == ticket.epoch && hit.read_at.elapsed() < self.ttl => {
                Ok(hit.digest)
            }
            _ => Err(ticket),
        }
    }

    pub(crate) fn insert(
        &self,
        name: &RepoName,
        reference: &Reference,
        digest: &Digest,
        ticket: Ticket,
    ) {
        if self.ttl.is_zero() || ticket.epoch != self.epoch.load(Ordering::Acquire) {
            return;
        }
        let entry = Resolved {
            digest: digest.clone(),
            read_at: ticket.read_at,
            epoch: ticket.epoch,
        };
        self.entries
            .insert((name.clone(), reference.clone()), entry);
    }

    /// Called once a change to manifests or tags is in storage: every entry read before is void.
    pub(crate) fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (RepoName, Reference, Digest) {
        let digest = Digest::of(oci::Algorithm::Sha256, b"m");
        (
            "app".parse().unwrap(),
            Reference::Tag("v1".parse().unwrap()),
            digest,
        )
    }

    #[test]
    fn a_change_voids_entries_and_answers_read_before_it() {
        let r = Resolutions::new(Duration::from_secs(60));
        let (name, tag, digest) = repo();
        let ticket = r.get(&name, &tag).unwrap_err();
        r.insert(&name, &tag, &digest, ticket);
        assert_eq!(r.get(&name, &tag).ok(), Some(digest.clone()));
        r.changed();
        assert!(r.get(&name, &tag).is_err(), "entry from before the change");
        // A read that began before a change finishes after it: its answer is not kept.
        let ticket = r.get(&name, &tag).unwrap_err();
        r.changed();
        r.insert(&name, &tag, &digest, ticket);
        assert!(r.get(&name, &tag).is_err());
    }

    #[test]
    fn entries_expire_after_the_ttl_and_a_zero_ttl_keeps_none() {
        let (name, tag, digest) = repo();
        let r = Resolutions::new(Duration::from_millis(30));
        let ticket = r.get(&name, &tag).unwrap_err();
        r.insert(&name, &tag, &digest, ticket);
        assert!(r.get(&name, &tag).is_ok());
        std::thread::sleep(Duration::from_millis(40));
        assert!(r.get(&name, &tag).is_err());
        let off = Resolutions::new(Duration::ZERO);
        let ticket = off.get(&name, &tag).unwrap_err();
        off.insert(&name, &tag, &digest, ticket);
        assert!(off.get(&name, &tag).is_err());
    }
}
