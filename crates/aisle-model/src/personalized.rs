//! Any encoder with a personalized query tower fitted over its vectors.
//!
//! The [`Personalizer`] reads a query vector and the vectors of the customer's earlier products;
//! it does not care which towers made them. The n-gram model trains it together with its towers;
//! for an encoder whose towers stay fixed (MiniLM, pretrained or fine-tuned), aisle-train fits it
//! over the encoder's own vectors and writes it as [`PERSONAL_FILE`] into the model folder.
//! [`Personalized`] then serves it: the encoder's vectors, and [`Encoder::personal`] set, so
//! that the Searcher personalizes queries as it does for an n-gram model.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use aisle_core::{Catalog, Taxonomy};

use crate::encoder::{EncodeError, Encoder};
use crate::error::{ModelError, Result};
use crate::personal::{PersonalizeConfig, Personalizer};

/// The file in a model folder holding a personalized tower fitted over the folder's encoder.
pub const PERSONAL_FILE: &str = "personal.json";

/// The format of [`PERSONAL_FILE`] this build reads and writes.
pub const PERSONAL_FORMAT: u32 = 1;

/// What [`PERSONAL_FILE`] holds: the tower, its settings, and what it was fitted on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonalFile {
    /// [`PERSONAL_FORMAT`].
    pub format: u32,
    /// The dataset it was fitted on, and its [`aisle_core::Dataset::digest`].
    pub dataset: String,
    pub dataset_digest: String,
    /// The split whose training part it was fitted on.
    pub split: String,
    /// The encoder it was fitted over (`Encoder::kind`), and its width.
    pub encoder: String,
    pub dim: usize,
    /// The tower's settings; serving reads `history` from here.
    pub personalize: PersonalizeConfig,
    /// Optimiser steps, and the step whose tower was kept (the best on validation).
    pub steps: u64,
    pub kept_step: u64,
    /// Validation Recall@10 of the encoder's plain queries, and of the kept tower's.
    pub validation_plain: f64,
    pub validation_personalized: f64,
    pub tower: Personalizer,
}

impl PersonalFile {
    /// The file in `dir`, `None` when there is none; an unreadable or inconsistent file is an
    /// error naming it.
    pub fn read(dir: &Path) -> Result<Option<PersonalFile>> {
        let path = dir.join(PERSONAL_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ModelError::Io { path, source }),
        };
        let corrupt = |why: String| ModelError::Corrupt {
            path: path.clone(),
            why,
        };
        let de = &mut serde_json::Deserializer::from_str(&text);
        let file: PersonalFile =
            serde_path_to_error::deserialize(de).map_err(|e| corrupt(e.to_string()))?;
        if file.format != PERSONAL_FORMAT {
            return Err(corrupt(format!(
                "format {}, this build reads {PERSONAL_FORMAT}",
                file.format
            )));
        }
        if !file.tower.fits(file.dim) {
            return Err(corrupt(format!(
                "the tower's parameters do not fit vectors of {}",
                file.dim
            )));
        }
        if file.personalize.history == 0 {
            return Err(corrupt(
                "field `personalize.history`: must be at least 1".into(),
            ));
        }
        Ok(Some(file))
    }

    /// Writes the file into `dir`, atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(PERSONAL_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| ModelError::Corrupt {
            path: path.clone(),
            why: format!("encoding: {e}"),
        })?;
        aisle_core::io::write_atomic(&path, |w| w.write_all(&json))
            .map_err(|source| ModelError::Io { path, source })
    }
}

/// An encoder whose queries a fitted [`Personalizer`] personalizes: the inner encoder's vectors,
/// unchanged, with [`Encoder::personal`] set.
pub struct Personalized {
    inner: Arc<dyn Encoder>,
    tower: Personalizer,
}

impl Personalized {
    /// `tower` over `inner`; refused when its parameters do not fit the encoder's width.
    pub fn new(inner: Arc<dyn Encoder>, tower: Personalizer) -> Result<Personalized> {
        if !tower.fits(inner.dim()) {
            return Err(ModelError::Config(format!(
                "a personalized tower that does not fit {} vectors of {}",
                inner.kind(),
                inner.dim()
            )));
        }
        Ok(Personalized { inner, tower })
    }
}

impl Encoder for Personalized {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn encode_queries(&self, texts: &[&str]) -> std::result::Result<Vec<f32>, EncodeError> {
        self.inner.encode_queries(texts)
    }

    fn encode_catalog(
        &self,
        catalog: &Catalog,
        taxonomy: &Taxonomy,
    ) -> std::result::Result<Vec<f32>, EncodeError> {
        self.inner.encode_catalog(catalog, taxonomy)
    }

    fn personal(&self) -> Option<&Personalizer> {
        Some(&self.tower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personal::Fusion;

    fn file(dim: usize) -> PersonalFile {
        let mut tower = Personalizer::new(dim, Fusion::Gated);
        tower.tau = 7.5;
        PersonalFile {
            format: PERSONAL_FORMAT,
            dataset: "synthetic".into(),
            dataset_digest: "0badf00d".into(),
            split: "event".into(),
            encoder: "MiniLM".into(),
            dim,
            personalize: PersonalizeConfig::default(),
            steps: 10,
            kept_step: 10,
            validation_plain: 0.5,
            validation_personalized: 0.6,
            tower,
        }
    }

    #[test]
    fn the_file_round_trips_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(PersonalFile::read(dir.path()).expect("none"), None);
        let f = file(8);
        f.write(dir.path()).expect("write");
        assert_eq!(
            PersonalFile::read(dir.path()).expect("read"),
            Some(f.clone())
        );
        // A tower of the wrong width.
        let mut wrong = f.clone();
        wrong.dim = 9;
        wrong.write(dir.path()).expect("write");
        let e = PersonalFile::read(dir.path()).expect_err("wrong width");
        assert!(e.to_string().contains("do not fit vectors of 9"), "{e}");
        // A missing field is named.
        let path = dir.path().join(PERSONAL_FILE);
        let mut v: serde_json::Value =
            serde_json::from_slice(&serde_json::to_vec(&f).expect("json")).expect("value");
        v.as_object_mut().expect("object").remove("dataset_digest");
        std::fs::write(&path, v.to_string()).expect("write");
        let e = PersonalFile::read(dir.path()).expect_err("missing field");
        assert!(e.to_string().contains("dataset_digest"), "{e}");
    }

    #[test]
    fn the_wrapper_passes_vectors_through_and_adds_the_tower() {
        let model = crate::model::test_model(12, 16);
        let dim = Encoder::dim(&model);
        let inner: Arc<dyn Encoder> = Arc::new(model);
        let wrapped = Personalized::new(inner.clone(), file(dim).tower).expect("fits");
        let texts = ["red shoes", "tv"];
        assert_eq!(
            wrapped.encode_queries(&texts).expect("wrapped"),
            inner.encode_queries(&texts).expect("inner")
        );
        assert_eq!(wrapped.kind(), inner.kind());
        assert_eq!(wrapped.personal().map(|p| p.tau), Some(7.5));
        assert!(Personalized::new(inner, file(dim + 1).tower).is_err());
    }
}
