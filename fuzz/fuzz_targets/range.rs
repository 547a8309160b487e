//! `Range` (blob GETs) and `Content-Range` (upload PATCHes): never panic; accepted ranges lie
//! inside the blob and are not empty.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, u64)| {
    let (text, size) = input;
    if let Ok(range) = registry::parsers::parse_range(text, size) {
        assert!(range.start < range.end && range.end <= size, "{text:?} {size} -> {range:?}");
    }
    if let Ok((start, end)) = registry::parsers::parse_content_range(text) {
        assert!(start <= end, "{text:?} -> {start}-{end}");
    }
});
