//! The vocabulary of the OCI Distribution and Image specs, pure and free of I/O.
//!
//! Everything a registry or client needs to agree on before touching the network or the disk lives
//! here: content digests and the hashers that produce them, repository names and references with the
//! spec's grammar, media types, manifest parsing and validation, and the error codes the registry
//! emits (and a client parses) — declared once, each with its HTTP status.
//!
//! Dependencies: `sha2` (RustCrypto; picks SHA-NI at run time and exposes serialisable hash state, so
//! an upload can be resumed by another process without re-reading it), `regex` (the spec states its
//! grammar as regular expressions; compiling those once is clearer than a hand-written matcher),
//! `serde_json` for manifests, `thiserror` for typed errors.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod media;
pub mod name;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::ErrorCode;
pub use manifest::{Descriptor, Manifest, ManifestError};
pub use name::{NameError, Reference, RepoName, Tag};
