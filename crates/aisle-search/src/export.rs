//! Vectors out of a model (an n-gram model file or a MiniLM folder, [`crate::model_file`]):
//! a catalog's product vectors or a list of queries' vectors, written as `.npy` or `.jsonl`
//! ([`aisle_core::io::write_vectors`]) for other tools (`aisle encode`).

use std::path::Path;

use aisle_core::io::{write_vectors, VectorsWritten};
use aisle_core::stats::fmt_n;
use aisle_core::Dataset;
use aisle_model::Encoder;

use crate::error::Result;

/// What to embed.
pub enum Texts<'a> {
    /// Every product of the dataset's catalog, through the product tower; ids are product ids.
    Catalog(&'a Dataset),
    /// The non-empty lines of a text, trimmed, through the query tower; ids are the queries.
    Queries(&'a str),
}

/// What [`export`] wrote.
#[derive(Clone, Debug)]
pub struct Exported {
    pub written: VectorsWritten,
    /// Vectors written, and their dimension.
    pub rows: usize,
    pub dim: usize,
}

/// Embeds `texts` with `encoder` and writes the vectors to `out`, in the format its extension
/// names ([`write_vectors`]: another extension is refused, after the encoding).
pub fn export(encoder: &dyn Encoder, texts: Texts, out: &Path) -> Result<Exported> {
    let (ids, vectors) = match texts {
        Texts::Catalog(ds) => {
            let ids: Vec<String> = ds.catalog.iter().map(|(_, p)| p.id.clone()).collect();
            (ids, encoder.encode_catalog(&ds.catalog, &ds.taxonomy)?)
        }
        Texts::Queries(text) => {
            let queries: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            let texts: Vec<&str> = queries.iter().map(String::as_str).collect();
            let vectors = encoder.encode_queries(&texts)?;
            (queries, vectors)
        }
    };
    let dim = encoder.dim();
    let written = write_vectors(out, &ids, &vectors, dim)?;
    Ok(Exported {
        written,
        rows: ids.len(),
        dim,
    })
}

impl Exported {
    /// `wrote N x D float32 to FILE and their ids to FILE.ids.txt`, or `wrote N vectors of D to
    /// FILE` for `.jsonl`.
    pub fn line(&self) -> String {
        let (n, d) = (fmt_n(self.rows), self.dim);
        match &self.written.ids_path {
            Some(ids) => format!(
                "wrote {n} x {d} float32 to {} and their ids to {}",
                self.written.path.display(),
                ids.display()
            ),
            None => format!(
                "wrote {n} vectors of {d} to {}",
                self.written.path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_the_trimmed_non_empty_lines_and_the_line_says_what_was_written() {
        let mut cfg = aisle_model::ModelConfig::default();
        cfg.featurizer.buckets_log2 = 8;
        cfg.tower.dim = 4;
        let model = aisle_model::Model::new(cfg);
        let dir = std::env::temp_dir().join(format!("aisle-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let out = dir.join("q.jsonl");
        let e =
            export(&model, Texts::Queries("red shoes\n\n  blue hat \n"), &out).expect("written");
        assert_eq!(e.rows, 2);
        let text = std::fs::read_to_string(&out).expect("read");
        assert!(text.starts_with("{\"id\":\"red shoes\""), "{text}");
        assert!(e.line().starts_with("wrote 2 vectors of "));
        let bad = export(&model, Texts::Queries("x"), &dir.join("q.txt"));
        assert!(matches!(
            bad,
            Err(crate::SearchError::Vectors(
                aisle_core::io::WriteVectorsError::UnknownExtension(_)
            ))
        ));
        std::fs::remove_dir_all(&dir).expect("removed");
    }
}
