//! Manifest parsing with and without a Content-Type: never panic; a parsed manifest's media
//! type is one the registry stores, and an index has no blobs.
#![no_main]

use libfuzzer_sys::fuzz_target;

const TYPES: &[Option<&str>] = &[
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
];

fuzz_target!(|data: &[u8]| {
    let _ = oci::Manifest::sniff_media_type(data);
    for content_type in TYPES {
        if let Ok(m) = oci::Manifest::parse(data, *content_type) {
            let is_index = oci::media::is_index(&m.media_type);
            assert!(is_index.is_some(), "stored media type {}", m.media_type);
            if is_index == Some(true) {
                assert!(m.blobs.is_empty());
            }
        }
    }
});
