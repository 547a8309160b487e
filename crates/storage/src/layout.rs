//! Where everything lives: CNCF distribution's storage layout, built in this one module.
//!
//! ```text
//! docker/registry/v2/
//! ├── blobs/<alg>/<hex[0..2]>/<hex>/data                  content, global, written once
//! ├── blobs/<alg>/<hex[0..2]>/<hex>/data.quayside-used    touched before a push relies on it
//! ├── blobs/<alg>/<hex[0..2]>/<hex>/data.quayside-gc      gc is deciding whether to delete it
//! ├── repositories/<name>/
//! │   ├── _layers/<alg>/<hex>/link                         blob is part of the repository
//! │   ├── _manifests/revisions/<alg>/<hex>/link            manifest is part of the repository
//! │   ├── _manifests/tags/<tag>/current/link               what the tag points at
//! │   ├── _manifests/tags/<tag>/index/<alg>/<hex>/link     every digest the tag has pointed at
//! │   ├── _uploads/<id>/{data,startedat}                   an unfinished upload
//! │   ├── _uploads/<id>/data.quayside-meta                 length + hash state (filesystem)
//! │   ├── _uploads/<id>/data.quayside-{upload,lock}        state, lease (object stores)
//! │   ├── _quayside/referrers/<alg>/<hex>/<alg>/<hex>/link referrer (second) of subject (first)
//! │   ├── _quayside/fetch/<alg>/<hex>                      held while one process fetches it
//! │   └── _quayside/used                                   last pull of a mirrored repository
//! └── _quayside/tmp/<id>                                   staging for atomic writes
//! ```
//! Distribution skips every directory whose name starts with `_` that it does not know, so the
//! Quayside-only parts are invisible to it, and a bucket moves between the two unchanged.
//!
//! Every key is built from validated types ([`RepoName`], [`Digest`], [`Tag`], [`UploadId`]), so no
//! client input can put `..` or an absolute path into a key.

use std::fmt;
use std::str::FromStr;

use oci::{Digest, RepoName, Tag};

const ROOT: &str = "docker/registry/v2";

/// An upload session's id: a UUID, the only form the registry hands out. New ids are version 7,
/// which carry their creation time, so garbage collection knows a session's age before anything
/// of it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadId(uuid::Uuid);

impl UploadId {
    pub fn new() -> UploadId {
        UploadId(uuid::Uuid::now_v7())
    }

    /// When the session was created, for ids that say (version 7; distribution's are version 4).
    pub fn created(&self) -> Option<std::time::SystemTime> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        Some(std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos))
    }
}

impl Default for UploadId {
    fn default() -> Self {
        UploadId::new()
    }
}

impl FromStr for UploadId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::try_parse(s).map(UploadId)
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

pub fn blob_data(d: &Digest) -> String {
    let hex = d.hex();
    format!(
        "{ROOT}/blobs/{}/{}/{hex}/data",
        d.algorithm().as_str(),
        &hex[..2]
    )
}

/// Written by garbage collection while it decides whether to delete the blob (holds the time
/// until which the mark counts); see `gc`.
pub fn blob_gc_mark(d: &Digest) -> String {
    format!("{}.quayside-gc", blob_data(d))
}

/// Where the blobs of every algorithm live: `<this>/<alg>/<hex[0..2]>/<hex>/data`.
pub fn blobs_root() -> String {
    format!("{ROOT}/blobs")
}

/// The directory of one blob (its `data` and nothing else).
pub fn blob_dir(d: &Digest) -> String {
    let hex = d.hex();
    format!(
        "{ROOT}/blobs/{}/{}/{hex}",
        d.algorithm().as_str(),
        &hex[..2]
    )
}

pub fn revisions_dir(name: &RepoName, algorithm: &str) -> String {
    format!("{}/_manifests/revisions/{algorithm}", repo(name))
}

pub fn uploads_dir(name: &RepoName) -> String {
    format!("{}/_uploads", repo(name))
}

pub fn repositories() -> String {
    format!("{ROOT}/repositories")
}

fn repo(name: &RepoName) -> String {
    format!("{ROOT}/repositories/{name}")
}

pub fn layer_link(name: &RepoName, d: &Digest) -> String {
    format!(
        "{}/_layers/{}/{}/link",
        repo(name),
        d.algorithm().as_str(),
        d.hex()
    )
}

pub fn manifests_dir(name: &RepoName) -> String {
    format!("{}/_manifests", repo(name))
}

pub fn revision_link(name: &RepoName, d: &Digest) -> String {
    format!(
        "{}/_manifests/revisions/{}/{}/link",
        repo(name),
        d.algorithm().as_str(),
        d.hex()
    )
}

pub fn tags_dir(name: &RepoName) -> String {
    format!("{}/_manifests/tags", repo(name))
}

pub fn tag_dir(name: &RepoName, tag: &Tag) -> String {
    format!("{}/{tag}", tags_dir(name))
}

pub fn tag_current_link(name: &RepoName, tag: &Tag) -> String {
    format!("{}/current/link", tag_dir(name, tag))
}

pub fn tag_index_link(name: &RepoName, tag: &Tag, d: &Digest) -> String {
    format!(
        "{}/index/{}/{}/link",
        tag_dir(name, tag),
        d.algorithm().as_str(),
        d.hex()
    )
}

pub fn upload_dir(name: &RepoName, id: UploadId) -> String {
    format!("{}/_uploads/{id}", repo(name))
}

pub fn upload_data(name: &RepoName, id: UploadId) -> String {
    format!("{}/data", upload_dir(name, id))
}

/// An upload assembled but not yet verified (when no hash state could be carried through it).
pub fn upload_assembled(name: &RepoName, id: UploadId) -> String {
    format!("{}/assembled", upload_dir(name, id))
}

pub fn upload_started_at(name: &RepoName, id: UploadId) -> String {
    format!("{}/startedat", upload_dir(name, id))
}

pub fn referrers_dir(name: &RepoName, subject: &Digest) -> String {
    format!(
        "{}/_quayside/referrers/{}/{}",
        repo(name),
        subject.algorithm().as_str(),
        subject.hex()
    )
}

pub fn referrer_link(name: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!(
        "{}/{}/{}/link",
        referrers_dir(name, subject),
        referrer.algorithm().as_str(),
        referrer.hex()
    )
}

/// When a mirrored repository was last pulled (RFC 3339).
pub fn repository_used(name: &RepoName) -> String {
    format!("{}/_quayside/used", repo(name))
}

/// Held by the one process fetching `d` from the repository's upstream (a mirror).
pub fn fetch_lock(name: &RepoName, d: &Digest) -> String {
    format!(
        "{}/_quayside/fetch/{}/{}",
        repo(name),
        d.algorithm().as_str(),
        d.hex()
    )
}

/// What a repository holds of its own (nested repositories live beside these).
pub fn repository_contents(name: &RepoName) -> [String; 3] {
    let r = repo(name);
    [
        format!("{r}/_manifests"),
        format!("{r}/_layers"),
        format!("{r}/_quayside"),
    ]
}

/// Staging area for atomic writes; distribution ignores it.
pub fn staging(id: &str) -> String {
    format!("{ROOT}/_quayside/tmp/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_distribution() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        let name: RepoName = "library/alpine".parse().unwrap();
        assert_eq!(
            blob_data(&d),
            "docker/registry/v2/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/data"
        );
        assert_eq!(
            layer_link(&name, &d),
            format!(
                "docker/registry/v2/repositories/library/alpine/_layers/sha256/{}/link",
                d.hex()
            )
        );
        assert_eq!(
            tag_current_link(&name, &"latest".parse().unwrap()),
            "docker/registry/v2/repositories/library/alpine/_manifests/tags/latest/current/link"
        );
    }
}
