//! Where default output folders go, said in full.
//!
//! `out/...` and `reports/...` are relative to the working directory: run from a source
//! checkout, they land inside it. Each command that falls back to one says so once, with the
//! absolute path and the flag that chooses another.

use std::path::{Path, PathBuf};

/// `path` made absolute against the working directory (left as is if that cannot be read).
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Prints, on stderr, that `what` goes to the default `path` and how to choose another.
pub(crate) fn announce_default(what: &str, path: &Path, flag: &str) {
    eprintln!(
        "{what}: {} (the default, under the working directory; {flag} DIR to choose)",
        absolute(path).display()
    );
}
