//! Deis Workflow compatibility: reading the secrets Workflow mounts into its pods, and turning
//! Workflow's settings (`REGISTRY_STORAGE` and the `objectstorage-keyfile` secret, as rendered by
//! the original chart) into typed configuration. Pure apart from reading the mounted files; no
//! network, no cloud SDKs: those live with the parts that use them.

pub mod secret;
pub mod storage;

pub use secret::{Secret, SecretDir};
pub use storage::{StorageError, StorageInputs, StorageSettings};
