//! Quayside's registry store: content-addressed blobs, upload sessions, manifests, tags, referrers
//! and listings, kept in CNCF distribution's layout (see [`layout`]) so that a directory or bucket
//! written by distribution serves unchanged and the other way round.
//!
//! All state lives in the backend, none in process memory: any replica can continue an upload
//! another started, because the hash state after each chunk is stored beside the data.
//!
//! A blob becomes visible in one atomic step ([`Backend::commit`]) after its digest has been
//! verified while streaming; a crash at any instant leaves at most an unfinished upload or an
//! unreferenced blob, never a partial one under a digest's name.
//!
//! Dependencies: `tokio` file I/O for the filesystem backend, `async-trait` so backends are trait
//! objects chosen at start-up, `uuid` for upload ids, `humantime` for distribution's `startedat`,
//! `object_store` for S3, GCS and Azure (one maintained client per service, with signing, retries
//! and multipart uploads; [`open`] builds them), `reqwest` for the provisioning requests
//! object_store lacks, `hmac`/`sha2`/`base64` for Azure's SharedKey signature on them.

pub mod azure;
pub mod backend;
mod blobs;
mod block;
pub mod fs;
mod fsck;
pub mod gc;
pub mod layout;
mod listing;
mod manifests;
pub mod object;
pub mod open;
pub mod provision;
mod resolved;
mod store;
mod uploads;
mod usage;

pub use backend::{Appended, Appender, Backend, BackendError, ByteStream, Claim};
pub use fs::FsBackend;
pub use fsck::FsckReport;
pub use gc::{GcOptions, GcReport};
pub use layout::UploadId;
pub use listing::Page;
pub use manifests::{ManifestContent, PutManifest};
pub use object::ObjectBackend;
pub use open::{OpenError, Options, Setting, Settings, open};
pub use store::{Store, StoreError};
