//! Deis Workflow's inputs turned into the typed settings of the crates below: the secrets Workflow
//! mounts into its pods and the env vars it sets. `DEIS_REGISTRY_LOCATION` with the
//! `registry-secret` becomes an [`images::Location`] ([`location`]); `REGISTRY_STORAGE` with the
//! `objectstorage-keyfile` secret becomes storage settings ([`storage`]). This is the edge
//! adapter: nothing below the binary and Workflow's own components depends on it. Pure apart
//! from reading the mounted files.
//!
//! Dependencies: `images` (the location types), `storage` (its settings type), `secrets` (mounted secret directories, redacted
//! values), `serde_json` (the GCS key's project_id).

pub mod location;
pub mod storage;

pub use self::storage::{StorageError, StorageInputs};
