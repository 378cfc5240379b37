//! MiniLM as an [`Encoder`]: the same Searcher, evaluation and server as the n-gram towers.
//!
//! One shared tower reads both sides: a query's text, and a product's [`product_text`] (its
//! title, then its category path). A model folder that aisle fine-tuned also holds
//! [`TUNED_FILE`], saying which dataset it was trained on, so that `serve`, `eval` and `index`
//! can refuse it on another one, as they refuse an n-gram model file; a pretrained folder has
//! none, and was trained on no retailer's data.

use std::path::Path;

use serde::{Deserialize, Serialize};

use aisle_core::{Catalog, Product, Taxonomy};
use aisle_model::{EncodeError, Encoder};

use crate::{MiniLm, Result, TransformerError};

/// Texts per call of [`MiniLm::encode`] (it runs them as passes of 32 side by side).
const BATCH: usize = 64;

/// The file in a fine-tuned model folder that says what it was tuned on ([`TunedOn`]).
pub const TUNED_FILE: &str = "aisle.json";

/// What a transformer tower reads for a product: its title, then its category path, as
/// `title (a > b > c)`. Fine-tuning, evaluation and serving all read this one text.
pub fn product_text(p: &Product, taxonomy: &Taxonomy) -> String {
    let path = taxonomy.path_string(p.category);
    if path.is_empty() {
        p.title.clone()
    } else {
        format!("{} ({path})", p.title)
    }
}

/// The dataset a model folder was fine-tuned on, as [`TUNED_FILE`] records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunedOn {
    /// The dataset's name.
    pub dataset: String,
    /// [`aisle_core::Dataset::digest`] of the data it was tuned on.
    pub dataset_digest: String,
    /// The folder it was fine-tuned from.
    pub base: String,
    /// The negative sampler, as `--sampler` spells it.
    pub sampler: String,
    /// Optimiser steps.
    pub steps: u64,
}

impl TunedOn {
    /// What `dir` says it was tuned on: `None` for a folder without [`TUNED_FILE`] (a pretrained
    /// model); an error names the file when it is there but unreadable.
    pub fn read(dir: &Path) -> Result<Option<TunedOn>> {
        let path = dir.join(TUNED_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(TransformerError::Io { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| TransformerError::Invalid {
                path,
                why: e.to_string(),
            })
    }

    /// Writes it into the model folder `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(TUNED_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| TransformerError::Invalid {
            path: path.clone(),
            why: e.to_string(),
        })?;
        std::fs::write(&path, json).map_err(|source| TransformerError::Io { path, source })
    }
}

fn failed(e: TransformerError) -> EncodeError {
    EncodeError {
        encoder: "MiniLM",
        message: e.to_string(),
    }
}

impl Encoder for MiniLm {
    fn kind(&self) -> &'static str {
        "MiniLM"
    }

    fn dim(&self) -> usize {
        MiniLm::dim(self)
    }

    fn encode_queries(&self, texts: &[&str]) -> std::result::Result<Vec<f32>, EncodeError> {
        let rows = self.encode(texts, BATCH).map_err(failed)?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn encode_catalog(
        &self,
        catalog: &Catalog,
        taxonomy: &Taxonomy,
    ) -> std::result::Result<Vec<f32>, EncodeError> {
        let texts: Vec<String> = catalog
            .products()
            .iter()
            .map(|p| product_text(p, taxonomy))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        self.encode_queries(&refs)
    }
}
