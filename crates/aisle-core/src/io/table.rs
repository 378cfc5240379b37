//! Row-by-row reading of CSV and JSONL files with line numbers, named fields and precise errors.
//!
//! Both formats yield the same [`Record`]: a map from column name to text, the 1-based line it
//! came from, and the columns the caller did not ask for (kept as extra attributes).
//!
//! A CSV quote that is opened and never properly closed (`p1,"Bad title,tv` followed by good
//! rows) would make the csv crate read the following lines into that one field: the good rows
//! would be lost, or a wrong row loaded. So a record one of whose quoted fields holds a line
//! break is looked at again in its raw bytes ([`quoted_line_breaks`]): if the file ends inside
//! that quote, or the quote that ends it is followed by more text (a well-formed field's closing
//! quote is followed by a comma or a line end; a quote that opens a later field is followed by
//! that field's text), the record is an [`Error::UnclosedQuote`] at the line where the quote
//! opened, and reading goes on from the next line, so that a lenient import skips that one row
//! and keeps the ones after it. A quoted field with a line break that closes properly (a
//! description of several lines) is legal CSV and loads as it is.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
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

/// What a table is read from: a file or bytes in memory. Seekable, so that a CSV record whose
/// quoted field spans lines can be checked in its raw bytes and the lines after an unclosed quote
/// read again (see the module's documentation).
pub trait Input: Read + Seek {}

impl<T: Read + Seek> Input for T {}

/// Reads a table whose columns are known in advance.
pub struct TableReader {
    path: PathBuf,
    columns: Vec<&'static str>,
    inner: Inner,
}

enum Inner {
    Csv {
        reader: csv::Reader<Box<dyn Input>>,
        /// For each file column, the requested column it fills (or `None` for extras).
        mapping: Vec<Option<usize>>,
        header: Vec<String>,
        encoding: Encoding,
        record: csv::ByteRecord,
    },
    Jsonl {
        lines: std::io::Split<BufReader<Box<dyn Input>>>,
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
        input: Box<dyn Input>,
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
                // Only quoting puts a line break into a field: then look at the raw record.
                let mut spans = String::new();
                if record.as_slice().iter().any(|&b| b == b'\n' || b == b'\r') {
                    match check_quotes(reader, record, header, path) {
                        Ok(s) => spans = s,
                        Err(e) => return Some(Err(e)),
                    }
                }
                if record.len() != header.len() {
                    return Some(Err(Error::Malformed {
                        at: Location::line(path, line),
                        message: format!(
                            "expected {} fields as in the header, found {}{spans}",
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

/// Checks a CSV record that holds a line break against its raw bytes (see the module's
/// documentation). An unclosed quote is an [`Error::UnclosedQuote`], after the reader has been
/// moved to the line after the one where the quote opened. Otherwise returns a note on the quoted
/// fields that span lines (`; field `description` spans lines 4-5`), for a field-count error.
fn check_quotes(
    reader: &mut csv::Reader<Box<dyn Input>>,
    record: &csv::ByteRecord,
    header: &[String],
    path: &Path,
) -> Result<String> {
    let start = record
        .position()
        .cloned()
        .unwrap_or_else(csv::Position::new);
    let end = reader.position().byte();
    let raw =
        raw_bytes(&mut **reader.get_mut(), start.byte(), end).map_err(|e| Error::io(path, e))?;
    let fields = quoted_line_breaks(&raw, start.line());
    let name = |f: usize| {
        header
            .get(f)
            .cloned()
            .unwrap_or_else(|| format!("column {}", f + 1))
    };
    if let Some(bad) = fields.iter().find(|f| !matches!(f.end, QuoteEnd::Clean(_))) {
        let (skip, lines) = after_line_end(&raw, bad.open);
        let mut next = csv::Position::new();
        next.set_byte(start.byte() + skip as u64)
            .set_line(bad.line + lines)
            .set_record(start.record());
        reader
            .seek_raw(SeekFrom::Start(next.byte()), next)
            .map_err(|e| csv_error(path, e))?;
        let detail = match &bad.end {
            QuoteEnd::Eof => "the file ends inside it".to_owned(),
            QuoteEnd::Junk(line, text) => format!(
                "the quote that ends it, on line {line}, is followed by `{text}` instead of a comma or a line end"
            ),
            QuoteEnd::Clean(_) => unreachable!("found by not being clean"),
        };
        return Err(Error::UnclosedQuote {
            at: Location::field(path, bad.line, &name(bad.field)),
            detail,
        });
    }
    Ok(fields
        .iter()
        .map(|f| match f.end {
            QuoteEnd::Clean(last) => format!(
                "; quoted field `{}` spans lines {}-{last}",
                name(f.field),
                f.line
            ),
            _ => String::new(),
        })
        .collect())
}

/// The bytes `from..to` of `input`, leaving its position where it was (so that the csv reader's
/// buffer stays valid).
fn raw_bytes(input: &mut dyn Input, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
    let here = input.stream_position()?;
    input.seek(SeekFrom::Start(from))?;
    let mut raw = Vec::new();
    input.take(to.saturating_sub(from)).read_to_end(&mut raw)?;
    input.seek(SeekFrom::Start(here))?;
    Ok(raw)
}

/// The offset just past the first line end (`\n`, `\r\n` or `\r`) at or after `from` in
/// `raw`, and how many `\n` that passes (the csv crate counts lines by `\n`).
fn after_line_end(raw: &[u8], from: usize) -> (usize, u64) {
    let Some(j) = raw[from..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map(|j| from + j)
    else {
        return (raw.len(), 0);
    };
    match (raw[j], raw.get(j + 1)) {
        (b'\r', Some(b'\n')) => (j + 2, 1),
        (b'\n', _) => (j + 1, 1),
        _ => (j + 1, 0),
    }
}

/// How a quoted field that holds a line break ends.
#[derive(Clone, Debug, PartialEq, Eq)]
enum QuoteEnd {
    /// With a quote followed by a comma, a line end or the end of the input (blanks allowed
    /// before them), on this line.
    Clean(u64),
    /// With a quote followed by other text (on this line, that text): never so in a well-formed
    /// file, and what happens when the "closing" quote is really a later field's opening one.
    Junk(u64, String),
    /// Not at all: the input ends inside the quotes.
    Eof,
}

/// A quoted field of a raw CSV record that holds a line break.
#[derive(Clone, Debug, PartialEq, Eq)]
struct QuotedBreak {
    /// Its index in the record.
    field: usize,
    /// The offset of its opening quote in the raw record, and that quote's line.
    open: usize,
    line: u64,
    end: QuoteEnd,
}

/// The quoted fields that hold a line break in the raw bytes of one CSV record, split as the
/// csv crate splits it (`,` between fields, a `"` at the start of a field opens a quote, `""`
/// inside is a quote, `\r` or `\n` outside quotes ends the record; empty lines before it are
/// skipped). `line` is the line of `raw[0]`.
fn quoted_line_breaks(raw: &[u8], mut line: u64) -> Vec<QuotedBreak> {
    let is_end = |b: u8| b == b'\n' || b == b'\r';
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() && is_end(raw[i]) {
        line += u64::from(raw[i] == b'\n');
        i += 1;
    }
    let mut field = 0;
    loop {
        if raw.get(i) == Some(&b'"') {
            let (open, open_line) = (i, line);
            let mut broke = false;
            i += 1;
            let end = loop {
                match raw.get(i) {
                    None => break QuoteEnd::Eof,
                    Some(b'"') if raw.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => {
                        i += 1;
                        let rest = &raw[i..];
                        let text = rest
                            .iter()
                            .position(|&b| b == b',' || is_end(b))
                            .map_or(rest, |n| &rest[..n]);
                        break if text.iter().all(|&b| b == b' ' || b == b'\t') {
                            QuoteEnd::Clean(line)
                        } else {
                            let shown: String =
                                String::from_utf8_lossy(text).chars().take(24).collect();
                            QuoteEnd::Junk(line, shown)
                        };
                    }
                    Some(&b) => {
                        if is_end(b) {
                            broke = true;
                            line += u64::from(b == b'\n');
                        }
                        i += 1;
                    }
                }
            };
            if broke {
                out.push(QuotedBreak {
                    field,
                    open,
                    line: open_line,
                    end,
                });
            }
        }
        while raw.get(i).is_some_and(|&b| b != b',' && !is_end(b)) {
            i += 1;
        }
        if raw.get(i) == Some(&b',') {
            i += 1;
            field += 1;
        } else {
            return out;
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
