//! The replay of a committed fuzz corpus, shared by each crate's `tests/fuzz_corpus.rs`
//! (included with `#[path]`, so that `CARGO_MANIFEST_DIR` is the including crate's).

use std::path::Path;

/// Runs every file of `fuzz/corpus/TARGET/` through `run`; fails on a missing or empty corpus
/// and names each input that panicked.
pub fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the corpus is committed)", dir.display()));
    let mut replayed = 0;
    let mut panicked = Vec::new();
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| run(&bytes)).is_err() {
            panicked.push(path.display().to_string());
        }
        replayed += 1;
    }
    assert!(replayed > 0, "{}: an empty corpus", dir.display());
    assert!(
        panicked.is_empty(),
        "{target}: these inputs panicked: {panicked:#?}"
    );
    println!("{target}: replayed {replayed} inputs");
}
