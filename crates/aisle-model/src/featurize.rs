//! The text featurizer: hashed word unigrams, word bigrams and character trigrams.
//!
//! Text is NFKC-normalised, lower-cased and split on anything that is not a letter or a digit.
//! Each word gives a unigram; each adjacent pair a bigram; each word, wrapped in boundary marks
//! (`#tv#`), its character trigrams (`#tv`, `tv#`). Every feature is hashed into one of 2^b
//! buckets, as Amazon's production model did (Nigam et al., KDD 2019, "Semantic Product Search"):
//! trigrams let "samsng" share most features with "samsung" and make unseen words representable.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// Which features to extract, and how many buckets to hash them into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeaturizerConfig {
    /// log2 of the number of hash buckets (the embedding table's rows).
    pub buckets_log2: u8,
    pub word_unigrams: bool,
    pub word_bigrams: bool,
    pub char_trigrams: bool,
    /// At most this many features per text (the first ones, in the order above); bounds the cost
    /// of long descriptions.
    pub max_features: usize,
}

impl Default for FeaturizerConfig {
    fn default() -> Self {
        FeaturizerConfig {
            buckets_log2: 20,
            word_unigrams: true,
            word_bigrams: true,
            char_trigrams: true,
            max_features: 256,
        }
    }
}

/// Turns text into hashed feature ids. Cheap to clone; stateless.
#[derive(Clone, Debug)]
pub struct Featurizer {
    cfg: FeaturizerConfig,
    mask: u64,
}

const SALT_UNIGRAM: u64 = 0x5157_4F52_4431_0001;
const SALT_BIGRAM: u64 = 0x5157_4F52_4432_0002;
const SALT_TRIGRAM: u64 = 0x4348_4152_3347_0003;

/// FNV-1a over the bytes, then the SplitMix64 finaliser so that the low bits are well mixed.
/// Hand-written so that feature ids never change with a dependency's hash function.
#[inline]
pub(crate) fn hash_bytes(salt: u64, parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ salt;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x1f; // separator between the words of a bigram
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Splits text into normalised words: NFKC, lower case, letters and digits only.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.nfkc() {
        if c.is_alphanumeric() {
            cur.extend(c.to_lowercase());
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Featurizer {
    pub fn new(cfg: FeaturizerConfig) -> Self {
        let bits = cfg.buckets_log2.clamp(1, 31);
        Featurizer {
            mask: (1u64 << bits) - 1,
            cfg,
        }
    }

    pub fn config(&self) -> &FeaturizerConfig {
        &self.cfg
    }

    /// Number of buckets (rows of the embedding table).
    pub fn buckets(&self) -> usize {
        (self.mask + 1) as usize
    }

    #[inline]
    fn bucket(&self, h: u64) -> u32 {
        (h & self.mask) as u32
    }

    /// Appends the feature ids of `text` to `out` (duplicates kept: a repeated word weighs more).
    pub fn featurize_into(&self, text: &str, out: &mut Vec<u32>) {
        let start = out.len();
        let limit = start + self.cfg.max_features;
        let ws = words(text);
        if self.cfg.word_unigrams {
            for w in &ws {
                if out.len() >= limit {
                    return;
                }
                out.push(self.bucket(hash_bytes(SALT_UNIGRAM, &[w.as_bytes()])));
            }
        }
        if self.cfg.word_bigrams {
            for pair in ws.windows(2) {
                if out.len() >= limit {
                    return;
                }
                out.push(self.bucket(hash_bytes(
                    SALT_BIGRAM,
                    &[pair[0].as_bytes(), pair[1].as_bytes()],
                )));
            }
        }
        if self.cfg.char_trigrams {
            let mut marked: Vec<char> = Vec::with_capacity(32);
            let mut buf = [0u8; 12];
            for w in &ws {
                marked.clear();
                marked.push('#');
                marked.extend(w.chars());
                marked.push('#');
                for tri in marked.windows(3) {
                    if out.len() >= limit {
                        return;
                    }
                    let mut n = 0;
                    for c in tri {
                        n += c.encode_utf8(&mut buf[n..]).len();
                    }
                    out.push(self.bucket(hash_bytes(SALT_TRIGRAM, &[&buf[..n]])));
                }
            }
        }
    }

    /// The feature ids of `text`.
    pub fn featurize(&self, text: &str) -> Vec<u32> {
        let mut v = Vec::new();
        self.featurize_into(text, &mut v);
        v
    }
}

/// Feature ids of many texts in one flat array (compressed sparse rows).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeatureRows {
    offsets: Vec<u32>,
    ids: Vec<u32>,
}

impl FeatureRows {
    /// Featurizes every text, in parallel.
    pub fn build<S: AsRef<str> + Sync>(featurizer: &Featurizer, texts: &[S]) -> FeatureRows {
        use rayon::prelude::*;
        let per: Vec<Vec<u32>> = texts
            .par_iter()
            .map(|t| featurizer.featurize(t.as_ref()))
            .collect();
        let mut rows = FeatureRows {
            offsets: Vec::with_capacity(per.len() + 1),
            ids: Vec::with_capacity(per.iter().map(Vec::len).sum()),
        };
        rows.offsets.push(0);
        for p in per {
            rows.ids.extend_from_slice(&p);
            rows.offsets.push(rows.ids.len() as u32);
        }
        rows
    }

    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The feature ids of row `i`.
    #[inline]
    pub fn row(&self, i: usize) -> &[u32] {
        &self.ids[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Mean number of features per row.
    pub fn mean_len(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.ids.len() as f64 / self.len() as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_normalised() {
        assert_eq!(
            words("Samsung QN55-Q80C, 55\" TV!"),
            vec!["samsung", "qn55", "q80c", "55", "tv"]
        );
        // NFKC folds the full-width and ligature forms.
        assert_eq!(words("ＴＶ ﬁlter Café"), vec!["tv", "filter", "café"]);
        assert!(words(" -- ").is_empty());
    }

    #[test]
    fn features_count_and_determinism() {
        let f = Featurizer::new(FeaturizerConfig::default());
        let ids = f.featurize("oled tv");
        // 2 unigrams + 1 bigram + trigrams of #oled# (4) and #tv# (2).
        assert_eq!(ids.len(), 2 + 1 + 4 + 2);
        assert_eq!(ids, f.featurize("OLED  TV"));
        assert!(ids.iter().all(|&i| (i as usize) < f.buckets()));
        assert!(f.featurize("").is_empty());
    }

    #[test]
    fn feature_types_can_be_switched_off() {
        let cfg = FeaturizerConfig {
            word_bigrams: false,
            char_trigrams: false,
            ..Default::default()
        };
        assert_eq!(Featurizer::new(cfg).featurize("oled tv").len(), 2);
    }

    #[test]
    fn typos_share_trigrams() {
        let f = Featurizer::new(FeaturizerConfig::default());
        let a: std::collections::HashSet<u32> = f.featurize("samsung").into_iter().collect();
        let b: std::collections::HashSet<u32> = f.featurize("samsng").into_iter().collect();
        let shared = a.intersection(&b).count();
        assert!(shared >= 4, "{shared}");
    }

    #[test]
    fn max_features_bounds_long_texts() {
        let cfg = FeaturizerConfig {
            max_features: 10,
            ..Default::default()
        };
        let f = Featurizer::new(cfg);
        assert_eq!(f.featurize(&"word ".repeat(100)).len(), 10);
    }

    #[test]
    fn feature_rows() {
        let f = Featurizer::new(FeaturizerConfig::default());
        let rows = FeatureRows::build(&f, &["a b", "", "tv"]);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.row(0), f.featurize("a b").as_slice());
        assert!(rows.row(1).is_empty());
        assert_eq!(rows.row(2), f.featurize("tv").as_slice());
    }
}
