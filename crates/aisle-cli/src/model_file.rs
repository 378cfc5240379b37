//! Loading a model for `aisle eval`, `serve`, `index` and `encode`: an n-gram model file
//! (`aisle train`), or a MiniLM model folder (`aisle train --tower minilm`'s `model/`, or the
//! pretrained all-MiniLM-L6-v2), each as an [`Encoder`] the Searcher takes.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use aisle_core::Dataset;
use aisle_model::{Encoder, ModelMeta};
use aisle_transformer::{MiniLm, TunedOn};

/// How a model was made, as it says itself.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Made {
    /// An n-gram model file from `aisle train`.
    Trained(Box<ModelMeta>),
    /// A MiniLM folder that `aisle train --tower minilm` fine-tuned.
    Tuned(TunedOn),
    /// A MiniLM folder without aisle's record: pretrained, on no retailer's data.
    Pretrained,
}

impl Made {
    /// The dataset it learnt from, and that dataset's digest; `None` for a pretrained model.
    pub fn dataset(&self) -> Option<(&str, &str)> {
        match self {
            Made::Trained(m) => Some((&m.dataset, &m.dataset_digest)),
            Made::Tuned(t) => Some((&t.dataset, &t.dataset_digest)),
            Made::Pretrained => None,
        }
    }

    /// The negative sampler it was trained with; `None` for a pretrained model.
    pub fn sampler(&self) -> Option<&str> {
        match self {
            Made::Trained(m) => Some(&m.sampler),
            Made::Tuned(t) => Some(&t.sampler),
            Made::Pretrained => None,
        }
    }
}

/// A model's encoder and what its metadata says.
pub(crate) struct ModelFile {
    pub encoder: Arc<dyn Encoder>,
    pub made: Made,
    /// Earlier interactions its personalized tower reads, as it was trained (recorded in the
    /// file); for a model without one, [`aisle_model::personal::HISTORY_WINDOW`], what the
    /// history term reads.
    pub history: usize,
    /// Set when the model was trained on other data and `--allow-other-dataset` let it through:
    /// one line saying so, which every answer made with the model must carry.
    pub other_dataset: Option<String>,
}

/// Loads `path` and checks that it was trained on `ds` (`used` says what for: "evaluated",
/// "served"). A model trained on other data is refused unless `allow_other_dataset`, and then
/// carries a note saying so.
pub(crate) fn load(
    path: &Path,
    ds: &Dataset,
    used: &str,
    allow_other_dataset: bool,
) -> Result<ModelFile> {
    let (encoder, made) = read(path)?;
    let other_dataset = match other_dataset(path, &made, ds, used) {
        None => None,
        Some(why) if allow_other_dataset => {
            let note = format!("{why} (allowed by --allow-other-dataset)");
            eprintln!("warning: {note}");
            Some(note)
        }
        Some(why) => bail!(
            "{why}: its figures would not be this dataset's (train on it, or pass \
             --allow-other-dataset to use it anyway)"
        ),
    };
    // `read` refused a personalized model file without its tower's settings.
    let history = match &made {
        Made::Trained(meta) => meta.personalize.as_ref().map(|p| p.history),
        _ => None,
    }
    .unwrap_or(aisle_model::personal::HISTORY_WINDOW);
    Ok(ModelFile {
        encoder,
        made,
        history,
        other_dataset,
    })
}

/// Reads the model at `path`: a MiniLM model folder when it is a folder, an n-gram model file
/// otherwise; with what it says of how it was made.
pub(crate) fn read(path: &Path) -> Result<(Arc<dyn Encoder>, Made)> {
    if path.is_dir() {
        let model = MiniLm::load(path)
            .with_context(|| format!("loading the MiniLM model folder {}", path.display()))?;
        let made = match TunedOn::read(path)? {
            Some(tuned) => Made::Tuned(tuned),
            None => Made::Pretrained,
        };
        return Ok((Arc::new(model), made));
    }
    let (model, meta) = aisle_model::artifact::load_trained(path)
        .with_context(|| format!("loading model {}", path.display()))?;
    Ok((Arc::new(model), Made::Trained(Box::new(meta))))
}

/// What names the model at `path` in a saved index's header and a Qdrant collection's
/// metadata: for a model file [`HeadFile::model_digest`](aisle_search::rerank::HeadFile::model_digest)
/// (its own checksum), for a MiniLM folder the CRC-32 of its weights.
pub(crate) fn digest(path: &Path) -> Result<String> {
    if path.is_dir() {
        let weights = path.join("model.safetensors");
        let mut hasher = crc32fast::Hasher::new();
        let mut file = std::fs::File::open(&weights)
            .with_context(|| format!("reading {}", weights.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)
                .with_context(|| format!("reading {}", weights.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        return Ok(format!("{:08x}", hasher.finalize()));
    }
    Ok(aisle_search::rerank::HeadFile::model_digest(path)?)
}

/// Why the model at `path`, made as `made` says, was not trained on `ds`; `None` when it was,
/// or when it is a pretrained model (trained on no retailer's data).
pub(crate) fn other_dataset(path: &Path, made: &Made, ds: &Dataset, used: &str) -> Option<String> {
    let (name, trained) = made.dataset()?;
    let here = ds.digest();
    (trained != here).then(|| {
        format!(
            "{} was trained on `{name}` with dataset digest {trained}, {used} on `{}` whose \
             digest is {here}",
            path.display(),
            ds.name
        )
    })
}
