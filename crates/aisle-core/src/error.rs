//! Errors of aisle-core: every import error names the file, the line and the field, and says what
//! was expected.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::taxonomy::TaxonomyError;

/// Where in an input a problem is: file, 1-based line, and field (column) when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub field: Option<String>,
}

/// Locations are boxed inside [`Error`] so that `Result<T, Error>` stays small on the hot path.
pub type At = Box<Location>;

impl Location {
    pub fn new(file: &Path, line: Option<u64>, field: Option<&str>) -> At {
        Box::new(Location {
            file: file.to_path_buf(),
            line,
            field: field.map(str::to_owned),
        })
    }

    pub fn file(file: &Path) -> At {
        Location::new(file, None, None)
    }

    pub fn line(file: &Path, line: u64) -> At {
        Location::new(file, Some(line), None)
    }

    pub fn field(file: &Path, line: u64, field: &str) -> At {
        Location::new(file, Some(line), Some(field))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        Ok(())
    }
}

/// An error of aisle-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A required column is absent from a header (or a required key from a JSON line).
    #[error("{at}: missing column `{column}` (the header has: {header})")]
    MissingColumn {
        at: At,
        column: String,
        header: String,
    },
    /// A row that cannot be split into fields, or a line that is not a JSON object.
    #[error("{at}: malformed row: {message}")]
    Malformed { at: At, message: String },
    /// A quoted CSV field that runs past the end of its line and is never properly closed (the
    /// file ends inside it, or the quote that ends it is followed by more text, as when it is
    /// really the opening quote of a later field): the lines after it would be read into it.
    /// `at` names the line where the quote opened and the field.
    #[error("{at}: a quote opened here is not closed before the next line's record ({detail})")]
    UnclosedQuote { at: At, detail: String },
    /// A field whose value is not what the format says.
    #[error("{at}: expected {expected}, found {found:?}")]
    Field {
        at: At,
        expected: String,
        found: String,
    },
    /// Bytes that are not UTF-8 where UTF-8 is expected.
    #[error("{at}: invalid UTF-8 after {valid_up_to} valid bytes (expected UTF-8 text)")]
    InvalidUtf8 { at: At, valid_up_to: usize },
    /// An id defined twice.
    #[error("{at}: duplicate {what} id `{id}`{}", first_line.map(|l| format!(" (first defined on line {l})")).unwrap_or_default())]
    Duplicate {
        at: At,
        what: &'static str,
        id: String,
        first_line: Option<u64>,
    },
    /// A reference to an id that is not defined.
    #[error("{at}: unknown {what} id `{id}` ({hint})")]
    UnknownRef {
        at: At,
        what: &'static str,
        id: String,
        hint: String,
    },
    /// The taxonomy is not a tree. Shown as `FILE:LINE: reason` (the reason is part of this
    /// message, not a separate source, so that an error chain does not print it twice).
    #[error("{}{}: {error}", .file.display(), .error.line().map(|l| format!(":{l}")).unwrap_or_default())]
    Taxonomy {
        file: PathBuf,
        error: Box<TaxonomyError>,
    },
    /// A dataset name or folder that aisle does not know how to read.
    #[error("{0}")]
    Dataset(String),
    /// An invalid setting (generator sizes, split fractions, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A split asked for by a name the dataset does not have; `available` lists the ones it has.
    #[error("dataset `{dataset}` has no split `{name}` (it has: {})", .available.join(", "))]
    UnknownSplit {
        dataset: String,
        name: String,
        available: Vec<String>,
    },
    /// The default split asked for of a dataset that has none (no interactions to split).
    #[error("dataset `{dataset}` has no interactions to train on")]
    NoSplits { dataset: String },
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A short stable reason, used to count rows skipped by lenient imports.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Io { .. } => "i/o error",
            Error::MissingColumn { .. } => "missing column",
            Error::Malformed { .. } => "malformed row",
            Error::UnclosedQuote { .. } => "unclosed quote",
            Error::Field { .. } => "invalid field value",
            Error::InvalidUtf8 { .. } => "invalid UTF-8",
            Error::Duplicate { what, .. } => match *what {
                "product" => "duplicate product id",
                "user" => "duplicate user id",
                _ => "duplicate id",
            },
            Error::UnknownRef { what, .. } => match *what {
                "product" => "unknown product id",
                "user" => "unknown user id",
                "category" => "unknown category id",
                _ => "unknown id",
            },
            Error::Taxonomy { error, .. } => error.reason(),
            Error::Dataset(_) => "unknown dataset",
            Error::Config(_) => "invalid configuration",
            Error::UnknownSplit { .. } => "unknown split",
            Error::NoSplits { .. } => "no splits",
        }
    }

    /// True for errors about one row, which a lenient import may skip.
    pub fn is_row_error(&self) -> bool {
        matches!(
            self,
            Error::Malformed { .. }
                | Error::UnclosedQuote { .. }
                | Error::Field { .. }
                | Error::InvalidUtf8 { .. }
                | Error::Duplicate { .. }
                | Error::UnknownRef { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How an import treats bad rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strictness {
    /// The first bad row stops the import with an error.
    #[default]
    Strict,
    /// Bad rows are skipped and counted per reason.
    Lenient,
}

/// `e` and each of its sources, joined by ": ", as the `aisle` binary prints an error: for
/// messages that carry an error on (a failed reload's answer, why a model is trained again).
pub fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// What an import skipped or repaired, by reason, with the first example of each.
#[derive(Clone, Debug, Default)]
pub struct ImportReport {
    counts: BTreeMap<String, (u64, String)>,
}

impl ImportReport {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one event under `reason`, remembering the first example.
    pub fn count(&mut self, reason: &str, example: impl FnOnce() -> String) {
        match self.counts.get_mut(reason) {
            Some(e) => e.0 += 1,
            None => {
                self.counts.insert(reason.to_owned(), (1, example()));
            }
        }
    }

    /// Skips a row for `err` in lenient mode, or returns `err` in strict mode.
    pub fn skip_or_fail(&mut self, strictness: Strictness, err: Error) -> Result<()> {
        if strictness == Strictness::Lenient && err.is_row_error() {
            self.count(err.reason(), || err.to_string());
            Ok(())
        } else {
            Err(err)
        }
    }

    /// `(reason, count, first example)` in reason order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, u64, &str)> {
        self.counts
            .iter()
            .map(|(r, (n, ex))| (r.as_str(), *n, ex.as_str()))
    }

    pub fn total(&self) -> u64 {
        self.counts.values().map(|(n, _)| n).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn merge(&mut self, other: ImportReport) {
        for (r, (n, ex)) in other.counts {
            self.counts
                .entry(r)
                .and_modify(|e| e.0 += n)
                .or_insert((n, ex));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_shown_with_its_sources() {
        let e = Error::io(
            Path::new("shop/products.csv"),
            std::io::Error::other("disk gone"),
        );
        assert_eq!(with_sources(&e), format!("{e}: disk gone"));
    }
}
