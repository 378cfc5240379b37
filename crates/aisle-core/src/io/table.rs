//! Row-by-row reading of CSV and JSONL files with line numbers, named fields and precise errors.
//!
//! Both formats yield the same [`Record`]: a map from column name to text, the 1-based line it
//! came from, and the columns the caller did not ask for (kept as extra attributes).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{At, Error, Location, Result};

/// How the bytes of a file are decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8; anything else is an [`Error::InvalidUtf8`] naming the field.
    Utf8,
    /// ISO-8859-1 as Windows-1252 decodes it: bytes 0x80-0x9F are the Windows-1252 punctuation
    /// (dashes, quotes) that files labelled Latin-1 carry in practice; all others are the code
    /// point of the same value.
    Latin1,
}

/// File formats of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    /// The format named by a file's extension (`.csv`, `.jsonl` or `.json`).
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

/// One row: the values of the requested columns plus any other columns.
#[derive(Clone, Debug)]
pub struct Record {
    pub line: u64,
    /// Values in the order of the requested columns; `None` when absent or empty.
    values: Vec<Option<String>>,
    /// Columns that were not requested, in file order (empty values omitted).
    pub extra: Vec<(String, String)>,
}

/// Reads a table whose columns are known in advance.
pub struct TableReader {
    path: PathBuf,
    columns: Vec<&'static str>,
    inner: Inner,
}

enum Inner {
    Csv {
        reader: csv::Reader<Box<dyn Read>>,
        /// For each file column, the requested column it fills (or `None` for extras).
        mapping: Vec<Option<usize>>,
        header: Vec<String>,
        encoding: Encoding,
        record: csv::ByteRecord,
    },
    Jsonl {
        lines: std::io::Split<BufReader<Box<dyn Read>>>,
        line: u64,
    },
}

fn decode(bytes: &[u8], encoding: Encoding, at: impl FnOnce() -> At) -> Result<String> {
    match encoding {
        Encoding::Utf8 => match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(Error::InvalidUtf8 {
                at: at(),
                valid_up_to: e.valid_up_to(),
            }),
        },
        Encoding::Latin1 => Ok(bytes.iter().map(|&b| windows_1252(b)).collect()),
    }
}

/// The Windows-1252 character of a byte.
fn windows_1252(b: u8) -> char {
    const C1: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9F => C1[(b - 0x80) as usize],
        _ => b as char,
    }
}

impl TableReader {
    /// Opens `path` (format from its extension) and checks that `required` columns exist.
    /// `columns` lists every column the caller reads, `required` first or not.
    pub fn open(
        path: &Path,
        columns: &[&'static str],
        required: &[&'static str],
        encoding: Encoding,
    ) -> Result<TableReader> {
        let format = Format::of(path).ok_or_else(|| Error::Malformed {
            at: Location::file(path),
            message: "unknown file extension: expected .csv or .jsonl".into(),
        })?;
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Self::from_reader(Box::new(file), path, format, columns, required, encoding)
    }

    /// Like [`open`](Self::open) over any reader; `path` is used in messages.
    pub fn from_reader(
        input: Box<dyn Read>,
        path: &Path,
        format: Format,
        columns: &[&'static str],
        required: &[&'static str],
        encoding: Encoding,
    ) -> Result<TableReader> {
        let inner = match format {
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .flexible(true)
                    .has_headers(true)
                    .from_reader(input);
                let raw = reader
                    .byte_headers()
                    .map_err(|e| csv_error(path, e))?
                    .clone();
                let mut header = Vec::with_capacity(raw.len());
                for (i, h) in raw.iter().enumerate() {
                    let name = decode(h, encoding, || {
                        Location::field(path, 1, &format!("column {}", i + 1))
                    })?;
                    header.push(name.trim().trim_start_matches('\u{feff}').to_owned());
                }
                for r in required {
                    if !header.iter().any(|h| h == r) {
                        return Err(Error::MissingColumn {
                            at: Location::line(path, 1),
                            column: (*r).to_owned(),
                            header: header.join(","),
                        });
                    }
                }
                let mapping = header
                    .iter()
                    .map(|h| columns.iter().position(|c| c == h))
                    .collect();
                Inner::Csv {
                    reader,
                    mapping,
                    header,
                    encoding,
                    record: csv::ByteRecord::new(),
                }
            }
            Format::Jsonl => Inner::Jsonl {
                lines: BufReader::with_capacity(1 << 16, input).split(b'\n'),
                line: 0,
            },
        };
        Ok(TableReader {
            path: path.to_path_buf(),
            columns: columns.to_vec(),
            inner,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next row, `None` at the end. After a row error the reader goes on with the next row.
    pub fn next_record(&mut self, required: &[&'static str]) -> Option<Result<Record>> {
        let path = &self.path;
        let columns = &self.columns;
        match &mut self.inner {
            Inner::Csv {
                reader,
                mapping,
                header,
                encoding,
                record,
            } => {
                match reader.read_byte_record(record) {
                    Ok(false) => return None,
                    Ok(true) => {}
                    Err(e) => return Some(Err(csv_error(path, e))),
                }
                let line = record.position().map(|p| p.line()).unwrap_or(0);
                if record.len() != header.len() {
                    return Some(Err(Error::Malformed {
                        at: Location::line(path, line),
                        message: format!(
                            "expected {} fields as in the header, found {}",
                            header.len(),
                            record.len()
                        ),
                    }));
                }
                let mut values = vec![None; columns.len()];
                let mut extra = Vec::new();
                for (i, bytes) in record.iter().enumerate() {
                    let text = match decode(bytes, *encoding, || {
                        Location::field(path, line, &header[i])
                    }) {
                        Ok(t) => t,
                        Err(e) => return Some(Err(e)),
                    };
                    if text.is_empty() {
                        continue;
                    }
                    match mapping[i] {
                        Some(c) => values[c] = Some(text),
                        None => extra.push((header[i].clone(), text)),
                    }
                }
                Some(Ok(Record {
                    line,
                    values,
                    extra,
                }))
            }
            Inner::Jsonl { lines, line } => loop {
                let bytes = match lines.next()? {
                    Ok(b) => b,
                    Err(e) => return Some(Err(Error::io(path, e))),
                };
                *line += 1;
                let ln = *line;
                let text = match std::str::from_utf8(&bytes) {
                    Ok(t) => t.trim(),
                    Err(e) => {
                        return Some(Err(Error::InvalidUtf8 {
                            at: Location::line(path, ln),
                            valid_up_to: e.valid_up_to(),
                        }))
                    }
                };
                if text.is_empty() {
                    continue;
                }
                return Some(json_record(path, ln, text, columns, required));
            },
        }
    }
}

fn json_record(
    path: &Path,
    line: u64,
    text: &str,
    columns: &[&'static str],
    required: &[&'static str],
) -> Result<Record> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Malformed {
        at: Location::line(path, line),
        message: format!("not valid JSON: {e}"),
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err(Error::Malformed {
            at: Location::line(path, line),
            message: "expected a JSON object per line".into(),
        });
    };
    let mut values = vec![None; columns.len()];
    let mut extra = Vec::new();
    for (k, v) in map {
        let s = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        if s.is_empty() {
            continue;
        }
        match columns.iter().position(|c| *c == k) {
            Some(c) => values[c] = Some(s),
            None => extra.push((k, s)),
        }
    }
    for r in required {
        if let Some(c) = columns.iter().position(|c| c == r) {
            if values[c].is_none() {
                return Err(Error::MissingColumn {
                    at: Location::line(path, line),
                    column: (*r).to_owned(),
                    header: "the keys of this JSON object".into(),
                });
            }
        }
    }
    Ok(Record {
        line,
        values,
        extra,
    })
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    let line = e.position().map(|p| p.line());
    let message = match e.kind() {
        csv::ErrorKind::Io(io) => {
            return Error::io(path, std::io::Error::new(io.kind(), io.to_string()))
        }
        _ => e.to_string(),
    };
    Error::Malformed {
        at: Location::new(path, line, None),
        message,
    }
}

impl Record {
    /// The value of requested column `i` (its position in the `columns` given to the reader).
    pub fn get(&self, i: usize) -> Option<&str> {
        self.values.get(i).and_then(|v| v.as_deref())
    }

    /// Takes the value of requested column `i` out of the record.
    pub fn take(&mut self, i: usize) -> Option<String> {
        self.values.get_mut(i).and_then(Option::take)
    }
}

/// Field-level helpers that turn a text into a typed value or a located error.
pub struct FieldCtx<'a> {
    pub path: &'a Path,
    pub line: u64,
}

impl FieldCtx<'_> {
    pub fn at(&self, field: &str) -> At {
        Location::field(self.path, self.line, field)
    }

    /// A required text field.
    pub fn required(&self, value: Option<String>, field: &str, what: &str) -> Result<String> {
        value.ok_or_else(|| Error::Field {
            at: self.at(field),
            expected: what.to_owned(),
            found: String::new(),
        })
    }

    /// An optional number; an unparsable value is an error, not a silent `None`.
    pub fn opt_f32(&self, value: Option<&str>, field: &str) -> Result<Option<f32>> {
        match value.map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => match v.parse::<f32>() {
                Ok(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(Error::Field {
                    at: self.at(field),
                    expected: "a finite number".into(),
                    found: v.to_owned(),
                }),
            },
        }
    }

    /// An integer (an integral float such as `3.0` is accepted too).
    pub fn int(&self, value: Option<&str>, field: &str) -> Result<i64> {
        let v = value.map(str::trim).unwrap_or("");
        if let Ok(x) = v.parse::<i64>() {
            return Ok(x);
        }
        match v.parse::<f64>() {
            Ok(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Ok(x as i64),
            _ => Err(Error::Field {
                at: self.at(field),
                expected: "an integer".into(),
                found: v.to_owned(),
            }),
        }
    }

    /// An optional integer.
    pub fn opt_int(&self, value: Option<&str>, field: &str) -> Result<Option<i64>> {
        match value.map(str::trim) {
            None | Some("") => Ok(None),
            v => self.int(v, field).map(Some),
        }
    }
}

/// Reads every row of a table, calling `row` for each (with the report, for rows it merges or
/// drops on purpose); row errors are skipped or returned
/// according to `report`/`strictness` (see [`crate::error::ImportReport::skip_or_fail`]).
pub fn for_each_record(
    reader: &mut TableReader,
    required: &[&'static str],
    strictness: crate::error::Strictness,
    report: &mut crate::error::ImportReport,
    mut row: impl FnMut(Record, &mut crate::error::ImportReport) -> Result<()>,
) -> Result<()> {
    while let Some(rec) = reader.next_record(required) {
        let result = rec.and_then(|r| row(r, report));
        if let Err(e) = result {
            report.skip_or_fail(strictness, e)?;
        }
    }
    Ok(())
}

/// Reads a whole file's lines for formats that need it (e.g. JSON arrays); maps errors to `path`.
pub fn read_to_string(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = 1 + bytes[..valid].iter().filter(|&&b| b == b'\n').count() as u64;
        Error::InvalidUtf8 {
            at: Location::line(path, line),
            valid_up_to: valid
                - bytes[..valid]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map(|p| p + 1)
                    .unwrap_or(0),
        }
    })
}

/// Opens a buffered reader; used by adapters with their own parsing.
pub fn open_buffered(path: &Path) -> Result<BufReader<File>> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| Error::io(path, e))
}
