//! aisle-fixtures is test support: every crate of the workspace names it under
//! `[dev-dependencies]` only, so that no library or binary ships it.

use std::path::Path;

#[test]
fn aisle_fixtures_is_only_ever_a_dev_dependency() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut users = Vec::new();
    for entry in std::fs::read_dir(&crates).expect("crates/") {
        let manifest = entry.expect("entry").path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_owned();
            } else if line.starts_with("aisle-fixtures") {
                assert_eq!(
                    section,
                    "[dev-dependencies]",
                    "{} names aisle-fixtures outside [dev-dependencies]",
                    manifest.display()
                );
                users.push(manifest.clone());
            }
        }
    }
    assert!(users.len() >= 2, "{users:?}");
}
