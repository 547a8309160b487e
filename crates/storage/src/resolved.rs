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
//!
//! Requests that miss one entry at once (every GET of a popular tag the moment its entry
//! expires) share one storage read: the first leads, the others follow its answer. A follower
//! takes the answer only on the terms a cache hit has (same epoch, lookup begun less than `ttl`
//! ago); if the leader finds nothing, fails or is dropped with its client, each follower reads
//! storage itself, so sharing never turns into an error or an "unknown" a request would not
//! have had alone.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use oci::{Digest, Reference, RepoName};
use tokio::sync::watch;

use crate::store::StoreError;

/// Resolutions kept (each ~200 bytes).
const ENTRIES: usize = 16_384;

type Key = (RepoName, Reference);

pub(crate) struct Resolutions {
    ttl: Duration,
    epoch: AtomicU64,
    entries: quick_cache::sync::Cache<Key, Resolved>,
    flights: Mutex<HashMap<Key, Flight>>,
    next_flight: AtomicU64,
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

/// A storage lookup in flight; its leader sends the digest it found.
#[derive(Clone)]
struct Flight {
    id: u64,
    epoch: u64,
    read_at: Instant,
    answer: watch::Receiver<Option<Digest>>,
}

/// What a request that missed does: look storage up for all, or wait for the one who does.
enum Role<'a> {
    Lead(Leading<'a>),
    Follow(watch::Receiver<Option<Digest>>),
}

/// The leader's side of a [`Flight`]: dropping it, answered or not, ends the flight.
struct Leading<'a> {
    resolutions: &'a Resolutions,
    key: Key,
    id: u64,
    answer: watch::Sender<Option<Digest>>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut flights = self.resolutions.flights();
        if flights.get(&self.key).is_some_and(|f| f.id == self.id) {
            flights.remove(&self.key);
        }
    }
}

impl Resolutions {
    pub(crate) fn new(ttl: Duration) -> Resolutions {
        Resolutions {
            ttl,
            epoch: AtomicU64::new(0),
            entries: quick_cache::sync::Cache::new(ENTRIES),
            flights: Mutex::new(HashMap::new()),
            next_flight: AtomicU64::new(0),
        }
    }

    /// The digest `reference` names: cached, another request's lookup in flight, or `lookup`.
    pub(crate) async fn resolve(
        &self,
        name: &RepoName,
        reference: &Reference,
        lookup: impl Future<Output = Result<Digest, StoreError>>,
    ) -> Result<Digest, StoreError> {
        let ticket = match self.get(name, reference) {
            Ok(digest) => return Ok(digest),
            Err(_) if self.ttl.is_zero() => return lookup.await,
            Err(ticket) => ticket,
        };
        let key = (name.clone(), reference.clone());
        match self.lead_or_follow(key, &ticket) {
            Role::Lead(leading) => {
                let digest = lookup.await?;
                self.insert(name, reference, &digest, ticket);
                leading.answer.send_replace(Some(digest.clone()));
                Ok(digest)
            }
            Role::Follow(mut answer) => {
                let shared = answer.wait_for(Option::is_some).await.ok();
                if let Some(digest) = shared.and_then(|answer| (*answer).clone()) {
                    return Ok(digest);
                }
                let digest = lookup.await?;
                self.insert(name, reference, &digest, ticket);
                Ok(digest)
            }
        }
    }

    /// Leads a new flight for `key`, or follows the one in flight if a hit could be.
    fn lead_or_follow(&self, key: Key, ticket: &Ticket) -> Role<'_> {
        let mut flights = self.flights();
        if let Some(flight) = flights.get(&key)
            && flight.epoch == ticket.epoch
            && flight.read_at.elapsed() < self.ttl
        {
            return Role::Follow(flight.answer.clone());
        }
        let (answer, receiver) = watch::channel(None);
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let flight = Flight {
            id,
            epoch: ticket.epoch,
            read_at: ticket.read_at,
            answer: receiver,
        };
        flights.insert(key.clone(), flight);
        Role::Lead(Leading {
            resolutions: self,
            key,
            id,
            answer,
        })
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Flight>> {
        // The map is consistent at every instruction, so a panic elsewhere leaves it usable.
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached digest, or a ticket to [`Resolutions::insert`] what storage answers.
    fn get(&self, name: &RepoName, reference: &Reference) -> Result<Digest, Ticket> {
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

    fn insert(&self, name: &RepoName, reference: &Reference, digest: &Digest, ticket: Ticket) {
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

    /// A lookup that counts its calls, waits for `gate` (if any), then answers `answer`.
    async fn counted(
        calls: &AtomicU64,
        gate: Option<&tokio::sync::Notify>,
        answer: Result<Digest, StoreError>,
    ) -> Result<Digest, StoreError> {
        calls.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = gate {
            gate.notified().await;
        }
        answer
    }

    /// `request` pinned and polled once: it has begun its lookup and waits at the lookup's gate.
    async fn started<F: Future>(request: F) -> std::pin::Pin<Box<F>> {
        let mut request = Box::pin(request);
        assert!(futures_util::poll!(request.as_mut()).is_pending());
        request
    }

    fn other_digest() -> Digest {
        Digest::of(oci::Algorithm::Sha256, b"n")
    }

    #[tokio::test]
    async fn requests_missing_one_entry_at_once_share_one_lookup() {
        let r = Resolutions::new(Duration::from_secs(60));
        let (name, tag, digest) = repo();
        let calls = AtomicU64::new(0);
        let gate = tokio::sync::Notify::new();
        let requests = (0..50).map(|_| {
            r.resolve(
                &name,
                &tag,
                counted(&calls, Some(&gate), Ok(digest.clone())),
            )
        });
        let all = futures_util::future::join_all(requests);
        let release = async {
            while calls.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            tokio::task::yield_now().await;
            gate.notify_waiters();
        };
        let (answers, ()) = tokio::join!(all, release);
        assert!(answers.iter().all(|a| a.as_ref().ok() == Some(&digest)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(r.flights().is_empty(), "the flight ended with its leader");
    }

    #[tokio::test]
    async fn followers_read_storage_themselves_when_the_leader_finds_nothing_or_is_dropped() {
        let r = Resolutions::new(Duration::from_secs(60));
        let (name, tag, digest) = repo();
        let calls = AtomicU64::new(0);
        let gate = tokio::sync::Notify::new();
        // The leader will answer "unknown"; the follower, reading after it, finds the tag.
        let leader = started(r.resolve(
            &name,
            &tag,
            counted(&calls, Some(&gate), Err(StoreError::ManifestUnknown)),
        ))
        .await;
        let follower = r.resolve(&name, &tag, counted(&calls, None, Ok(digest.clone())));
        let release = async {
            tokio::task::yield_now().await;
            gate.notify_waiters();
        };
        let (led, followed, ()) = tokio::join!(leader, follower, release);
        assert!(matches!(led, Err(StoreError::ManifestUnknown)));
        assert_eq!(followed.ok(), Some(digest.clone()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // A leader dropped mid-lookup (its client went away) leaves no follower waiting.
        let (name, tag) = (
            "other".parse().unwrap(),
            Reference::Tag("v2".parse().unwrap()),
        );
        let leader = started(r.resolve(
            &name,
            &tag,
            counted(&calls, Some(&gate), Ok(digest.clone())),
        ))
        .await;
        let follower = r.resolve(&name, &tag, counted(&calls, None, Ok(other_digest())));
        let dropping = async {
            tokio::task::yield_now().await;
            drop(leader);
        };
        let (followed, ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(follower, dropping)
        })
        .await
        .expect("a follower of a dropped leader finished");
        assert_eq!(followed.ok(), Some(other_digest()));
        assert!(r.flights().is_empty());
    }

    #[tokio::test]
    async fn a_request_after_a_change_never_follows_a_lookup_from_before_it() {
        let r = Resolutions::new(Duration::from_secs(60));
        let (name, tag, old) = repo();
        let calls = AtomicU64::new(0);
        let gate = tokio::sync::Notify::new();
        let before =
            started(r.resolve(&name, &tag, counted(&calls, Some(&gate), Ok(old.clone())))).await;
        r.changed();
        let after = r.resolve(&name, &tag, counted(&calls, None, Ok(other_digest())));
        assert_eq!(after.await.ok(), Some(other_digest()));
        gate.notify_waiters();
        assert_eq!(before.await.ok(), Some(old));
        // The lookup from before the change was not kept; the one after it was.
        assert_eq!(r.get(&name, &tag).ok(), Some(other_digest()));
    }
}
