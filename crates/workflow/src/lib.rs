//! Deis Workflow compatibility: reading the secrets Workflow mounts into its pods, and turning
//! Workflow's settings into typed configuration: `REGISTRY_STORAGE` with the
//! `objectstorage-keyfile` secret ([`storage`]), `DEIS_REGISTRY_LOCATION` with the
//! `registry-secret` ([`location`]), and the controller's and builder's registry decisions:
//! image names and pull secrets ([`images`]), the port an app gets ([`port`]). Pure apart from reading the mounted files; no
//! network, no cloud SDKs: those live with the parts that use them.
//!
//! Dependencies: `serde_json` (key files, dockerconfigjson), `base64` (docker `auth` values).

pub mod images;
pub mod location;
pub mod port;
pub mod secret;
pub mod storage;

pub use location::Location;
pub use secret::{Secret, SecretDir};
pub use storage::{StorageError, StorageInputs, StorageSettings};
