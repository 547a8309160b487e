//! Digests: never panic; what parses is canonical (prints back identically).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(digest) = text.parse::<oci::Digest>() {
        assert_eq!(digest.to_string(), text);
        assert!(digest.hex().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
});
