//! The vendored BERT: every variable gets a gradient (it can be fine-tuned), padding changes
//! nothing, and (when the files are prepared) all-MiniLM-L6-v2 matches sentence-transformers.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use aisle_transformer::bert::{BertModel, Config, HiddenAct};
use aisle_transformer::{mean_pool_normalise, MiniLm};

fn tiny() -> Config {
    Config {
        vocab_size: 50,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 32,
        hidden_act: HiddenAct::Gelu,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        model_type: None,
    }
}

fn ids(rows: &[&[u32]], len: usize) -> (Tensor, Tensor, Tensor) {
    let mut id = Vec::new();
    let mut mask = Vec::new();
    for r in rows {
        for i in 0..len {
            id.push(r.get(i).copied().unwrap_or(0));
            mask.push(u32::from(i < r.len()));
        }
    }
    let shape = (rows.len(), len);
    (
        Tensor::from_vec(id, shape, &Device::Cpu).expect("ids"),
        Tensor::zeros(shape, DType::U32, &Device::Cpu).expect("types"),
        Tensor::from_vec(mask, shape, &Device::Cpu).expect("mask"),
    )
}

#[test]
fn every_variable_receives_a_gradient() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = BertModel::load(vb, &tiny()).expect("model");
    let (input, types, mask) = ids(&[&[1, 5, 7, 2], &[1, 9, 2]], 4);
    let hidden = model.forward(&input, &types, &mask).expect("forward");
    let pooled = mean_pool_normalise(&hidden, &mask).expect("pool");
    // A loss that depends on every output coordinate differently.
    let weights = Tensor::arange(0f32, 32.0, &Device::Cpu)
        .expect("w")
        .reshape((2, 16))
        .expect("w");
    let loss = (pooled * weights).expect("mul").sum_all().expect("sum");
    let grads = loss.backward().expect("backward");
    let vars = varmap.all_vars();
    // 5 embedding tensors (3 tables + LayerNorm weight and bias) + 16 per layer.
    assert_eq!(vars.len(), 5 + 16 * 2);
    let mut without = 0;
    for v in &vars {
        match grads.get(v) {
            Some(g) => {
                let n = g.abs().expect("abs").sum_all().expect("sum");
                let n: f32 = n.to_scalar().expect("scalar");
                // Position and token-type rows that were never used have zero gradient, but
                // every tensor has some non-zero entry.
                if n == 0.0 {
                    without += 1;
                }
            }
            None => without += 1,
        }
    }
    assert_eq!(
        without,
        0,
        "{without} of {} variables got no gradient",
        vars.len()
    );
}

#[test]
fn padding_does_not_change_an_embedding() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = BertModel::load(vb, &tiny()).expect("model");
    let embed = |rows: &[&[u32]], len: usize| {
        let (input, types, mask) = ids(rows, len);
        let hidden = model.forward(&input, &types, &mask).expect("forward");
        mean_pool_normalise(&hidden, &mask)
            .expect("pool")
            .to_vec2::<f32>()
            .expect("vec")
    };
    let alone = embed(&[&[1, 5, 7, 2]], 4);
    let padded = embed(&[&[1, 5, 7, 2], &[1, 3, 4, 6, 8, 9, 2]], 7);
    let norm: f32 = alone[0].iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-5);
    for (a, b) in alone[0].iter().zip(&padded[0]) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

/// `MiniLm::encode` runs the plain-buffer forward pass (`infer`); it gives the candle model's
/// values, for a memory-mapped model and for a trainable one, with padding in the batches.
#[test]
fn the_plain_forward_pass_matches_the_candle_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let words: Vec<String> = aisle_transformer::tiny::SAMPLE_WORDS
        .split(' ')
        .map(str::to_owned)
        .collect();
    aisle_transformer::tiny::write_model_folder(dir.path(), &words).expect("tiny model");
    let texts = aisle_transformer::tiny::SAMPLE_TEXTS;
    let frozen = MiniLm::load(dir.path()).expect("load");
    let (trainable, _vars) = MiniLm::load_trainable(dir.path()).expect("load trainable");
    for (model, what) in [(&frozen, "memory-mapped"), (&trainable, "trainable")] {
        // Batches of 3: texts of several lengths share a batch, padded to the longest.
        let fast = model.encode(&texts, 3).expect("encode");
        for (text, v) in texts.iter().zip(&fast) {
            let slow = model.encode_with_candle(&[text]).expect("candle");
            assert_eq!(v.len(), slow[0].len());
            for (a, b) in v.iter().zip(&slow[0]) {
                assert!((a - b).abs() < 1e-5, "{what} {text:?}: {a} vs {b}");
            }
        }
    }
}

/// The repository root (the tests run in the crate folder).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(serde::Deserialize)]
struct Reference {
    model: String,
    sentence_transformers: String,
    texts: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

/// all-MiniLM-L6-v2 against the vectors sentence-transformers computed for the same titles
/// (scripts/minilm-reference.py wrote the fixture). Skips, saying why, without the model files;
/// fails under CI.
#[test]
fn minilm_matches_sentence_transformers() {
    let dir = aisle_transformer::default_dir(&root());
    if !aisle_transformer::is_present(&dir) {
        aisle_fixtures::skip_or_fail(&format!(
            "the all-MiniLM-L6-v2 files are missing in {} (run `bash scripts/fetch-minilm.sh`)",
            dir.display()
        ));
        return;
    }
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm-reference.json");
    let text = std::fs::read_to_string(&fixture).expect("fixture");
    let reference: Reference = serde_json::from_str(&text).expect("fixture json");
    assert_eq!(reference.texts.len(), reference.embeddings.len());
    assert!(reference.texts.len() >= 100);
    let model = MiniLm::load(&dir).expect("model");
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    let ours = model.encode(&texts, 16).expect("encode");
    let mut worst = f32::INFINITY;
    for (i, (a, b)) in ours.iter().zip(&reference.embeddings).enumerate() {
        assert_eq!(a.len(), 384);
        let cos: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        worst = worst.min(cos);
        assert!(
            cos >= 0.999,
            "{}: cosine {cos} against {} ({})",
            reference.texts[i],
            reference.model,
            reference.sentence_transformers
        );
    }
    eprintln!(
        "{} titles, lowest cosine to sentence-transformers {}: {worst:.6}",
        texts.len(),
        reference.sentence_transformers
    );
}
