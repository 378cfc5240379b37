//! A tiny BERT model folder (random weights, a word-level tokenizer over given words), laid out
//! as [`crate::MiniLm::load`] reads it: for tests and examples that must not need the
//! downloaded all-MiniLM-L6-v2 files.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use crate::bert::{BertModel, Config, HiddenAct};
use crate::{Result, TransformerError};

/// Words for a tiny model's vocabulary, and texts over them (with an empty one, repeats and
/// unknown words) of several lengths: what the tests of the encoder and the tuner embed.
pub const SAMPLE_WORDS: &str = "red shoe blue lamp desk chair green tea cup long text here";
pub const SAMPLE_TEXTS: [&str; 7] = [
    "red shoe",
    "blue lamp desk chair green tea cup",
    "",
    "tea",
    "long text here long text here long text here",
    "unknown words only",
    "cup cup",
];

/// Width of the tiny model's embeddings.
pub const DIM: usize = 32;

/// Writes `config.json`, `model.safetensors` (random weights) and `tokenizer.json` (lower-cased,
/// whitespace-split words; any other word is `[UNK]`) into `dir`, which must exist.
pub fn write_model_folder(dir: &Path, words: &[String]) -> Result<()> {
    let mut vocab: BTreeMap<String, u32> = BTreeMap::new();
    for (i, t) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]"].iter().enumerate() {
        vocab.insert((*t).to_owned(), i as u32);
    }
    for w in words {
        let next = vocab.len() as u32;
        vocab.entry(w.to_lowercase()).or_insert(next);
    }
    let config = Config {
        vocab_size: vocab.len(),
        hidden_size: DIM,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 2 * DIM,
        hidden_act: HiddenAct::Gelu,
        max_position_embeddings: 32,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        model_type: Some("bert".into()),
    };
    let config_json = serde_json::json!({
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": "gelu",
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.layer_norm_eps,
        "model_type": "bert",
    });
    write(&dir.join("config.json"), &config_json.to_string())?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    BertModel::load(vb, &config)?;
    varmap.save(dir.join("model.safetensors"))?;
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": { "type": "Lowercase" },
        "pre_tokenizer": { "type": "Whitespace" },
        "post_processor": { "type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2] },
        "decoder": null,
        "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]" },
    });
    write(&dir.join("tokenizer.json"), &tokenizer.to_string())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| TransformerError::Io {
        path: path.to_path_buf(),
        source,
    })
}
