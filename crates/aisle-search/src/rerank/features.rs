//! The head's features: what each position of a candidate's feature array and of
//! [`Reranker::weights`](super::Reranker::weights) holds.

/// Number of features of a candidate.
pub const FEATURES: usize = 10;

/// A feature of a candidate: its position in [`Reranker::weights`](super::Reranker::weights)
/// and in each candidate's feature array is `feature as usize` ([`Feature::index`]), its name is
/// what head files and reports print ([`Feature::name`]). Code names a feature by its variant,
/// so that a misspelt one does not compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// The (personalized) query vector's cosine with the product: the towers' score.
    Dense,
    /// max_j h_j . p over the customer's earlier products (0 without a history).
    HistoryClosest,
    /// 1 when every query word is in the product's title or category path.
    TextMatch,
    /// 1 when the customer bought the product before.
    Bought,
    /// bought x text_match: an earlier purchase that the query names.
    BoughtAndMatch,
    /// ln(1 + times the customer bought it).
    LogTimesBought,
    /// 1 / (1 + earlier visits since the customer last bought it); 0 if never bought.
    Recency,
    /// ln(1 + times the product was chosen for this exact query text).
    LogQueryCount,
    /// ln(0.001 + share of similar customers' weight on the product): user-based collaborative
    /// filtering, each other customer weighted by the cosine of the two bought-product sets. On
    /// a log scale because shares are small (a linear share of 0.01 to 0.1 needed weights far
    /// beyond what the fit reached, and got a weight of -1 on Instacart).
    Neighbours,
    /// neighbours x (1 - bought): what similar customers bought that this one never did.
    NewNeighbours,
}

impl Feature {
    /// Every feature, in the order of [`Reranker::weights`](super::Reranker::weights).
    pub const ALL: [Feature; FEATURES] = [
        Feature::Dense,
        Feature::HistoryClosest,
        Feature::TextMatch,
        Feature::Bought,
        Feature::BoughtAndMatch,
        Feature::LogTimesBought,
        Feature::Recency,
        Feature::LogQueryCount,
        Feature::Neighbours,
        Feature::NewNeighbours,
    ];

    /// Its position in a feature array and in
    /// [`Reranker::weights`](super::Reranker::weights).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name head files and reports give it.
    pub const fn name(self) -> &'static str {
        match self {
            Feature::Dense => "dense",
            Feature::HistoryClosest => "history_closest",
            Feature::TextMatch => "text_match",
            Feature::Bought => "bought",
            Feature::BoughtAndMatch => "bought_and_match",
            Feature::LogTimesBought => "log_times_bought",
            Feature::Recency => "recency",
            Feature::LogQueryCount => "log_query_count",
            Feature::Neighbours => "neighbours",
            Feature::NewNeighbours => "new_neighbours",
        }
    }
}

// `Feature::ALL` lists each feature at its own index (checked when compiling).
const _: () = {
    let mut i = 0;
    while i < FEATURES {
        assert!(Feature::ALL[i].index() == i);
        i += 1;
    }
};

/// The features' names, in the order of [`Reranker::weights`](super::Reranker::weights).
pub const FEATURE_NAMES: [&str; FEATURES] = {
    let mut names = [""; FEATURES];
    let mut i = 0;
    while i < FEATURES {
        names[i] = Feature::ALL[i].name();
        i += 1;
    }
    names
};

/// Added to a neighbour share before its logarithm: a product no similar customer bought.
pub const NEIGHBOUR_FLOOR: f32 = 1e-3;
