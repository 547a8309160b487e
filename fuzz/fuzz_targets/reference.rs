//! Repository names, tags, references and full image references: never panic, and what
//! parses prints back to something that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = text.parse::<oci::RepoName>() {
        assert_eq!(name.as_str().parse::<oci::RepoName>().ok().as_ref(), Some(&name));
        assert!(!name.as_str().split('/').any(|c| c == ".." || c == "." || c.is_empty()));
    }
    if let Ok(reference) = text.parse::<oci::Reference>() {
        assert_eq!(reference.to_string().parse::<oci::Reference>().ok(), Some(reference));
    }
    if let Ok(image) = registry_client::ImageRef::parse(text) {
        let again = registry_client::ImageRef::parse(&image.to_string()).expect("printed reference parses");
        assert_eq!(again, image);
    }
    let _ = registry::route::parse(text);
});
