//! Skip outside CI, fail under CI.

use std::path::PathBuf;

/// Whether this run is CI: `CI` is set to something other than ``, `0` or `false` (CI systems
/// set `CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A test cannot run because `reason` (which names what is missing and where): under CI this
/// panics with the reason, elsewhere it prints `skipped: <reason>` and returns, and the test
/// then returns early.
#[track_caller]
pub fn skip_or_fail(reason: &str) {
    assert!(
        !in_ci(),
        "CI is set, so this test must run, but {reason} (CI always has ../shared and the tools \
         the test needs)"
    );
    eprintln!("skipped: {reason}");
}

/// `path` when it exists; otherwise [`skip_or_fail`] saying it is missing, with `hint` (how to
/// get it), and `None`.
#[track_caller]
pub fn need_path(path: impl Into<PathBuf>, hint: &str) -> Option<PathBuf> {
    let path = path.into();
    if path.exists() {
        return Some(path);
    }
    skip_or_fail(&format!("{} is missing ({hint})", path.display()));
    None
}

/// The real data folder (`aisle_core::adapters::data_dir`: `$AISLE_DATA_DIR`, else
/// `../shared/data`) when it holds the dataset `name`; otherwise [`skip_or_fail`] and `None`.
#[track_caller]
pub fn real_data(name: &str) -> Option<PathBuf> {
    let dir = aisle_core::adapters::data_dir(None);
    need_path(
        dir.join(name),
        &format!("the real dataset `{name}`; set AISLE_DATA_DIR to the folder holding {name}/"),
    )
    .map(|_| dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Both branches in one test: the environment is the process's, and tests run in parallel.
    #[test]
    fn present_paths_pass_and_missing_ones_skip_or_fail() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(
            need_path(here, "it is this crate"),
            Some(here.to_path_buf())
        );
        let missing = here.join("no-such-file");
        let outcome = std::panic::catch_unwind(|| need_path(&missing, "a hint"));
        if in_ci() {
            let err = outcome.expect_err("CI must fail");
            let msg = err.downcast_ref::<String>().expect("a formatted message");
            assert!(msg.contains(&*missing.to_string_lossy()), "{msg}");
            assert!(msg.contains("a hint"), "{msg}");
        } else {
            assert_eq!(outcome.expect("outside CI it skips"), None);
        }
    }
}
