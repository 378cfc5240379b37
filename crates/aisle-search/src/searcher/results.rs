//! What a search answers: the [`Results`] of one request, its [`Hit`]s in order, each with the
//! scores behind it and, when asked, an [`Explanation`] of why it is there.

use aisle_core::ProductId;

/// Why a hit is where it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Explanation {
    /// History items that raised the hit: attention weight times their similarity to it, the
    /// largest contributions first, for items at least somewhat similar to the hit (cosine 0.5).
    pub history: Vec<(ProductId, f32)>,
    /// Customer features (`segment=premium`, `age`) that raised the hit: attention weight times
    /// their slot's dot product with it, the largest first; empty for a tower without features.
    pub customer: Vec<(String, f32)>,
    /// Query terms (analyzed: lowercased, stemmed) found in the product's text.
    pub lexical_matches: Vec<String>,
}

/// One result.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub product: ProductId,
    /// The score the list is ordered by (cosine, BM25 or the fused score, by mode; the
    /// re-ranking head's score when one is set).
    pub score: f32,
    /// Cosine of the (personalized) query vector and the product vector.
    pub dense: Option<f32>,
    /// BM25 score, where BM25 ran and matched.
    pub lexical: Option<f32>,
    pub explanation: Option<Explanation>,
}

/// The answer to one [`Request`](super::Request).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Results {
    pub hits: Vec<Hit>,
    /// History items the personalized tower read.
    pub history_used: usize,
    /// Customer features it read (segment, age band; 0 for a tower without them). With no
    /// history item and no feature, the plain query vector was used.
    pub features_used: usize,
}

impl Results {
    pub fn personalized(&self) -> bool {
        self.history_used > 0 || self.features_used > 0
    }
}
