//! Negative pools: which products a sampler may draw as negatives. TB-HNS draws among the
//! products with a training interaction by default; random, BM25 and ANCE negatives take the
//! same option (`pool=interacted`) and keep the whole catalog by default. Why it matters for
//! products nobody has bought yet: docs/training.md#cold-start-the-negative-pool.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use aisle_core::ProductId;

/// Which products may be drawn as negatives, and how often.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativePool {
    /// Uniform among the products with at least one training interaction: negatives come from
    /// the population positives come from, so never-bought products are not pushed away.
    #[default]
    Interacted,
    /// Uniform among every product, bought or not (Jinadu et al.'s rule for TB-HNS, aisle's
    /// before December 2026, and the default of random, BM25 and ANCE negatives).
    Catalog,
    /// In proportion to each product's training interactions.
    Popularity,
}

impl NegativePool {
    /// The integer weight of a product with `interactions` training interactions.
    pub(crate) fn weight(self, interactions: u32) -> u64 {
        match self {
            NegativePool::Interacted => u64::from(interactions > 0),
            NegativePool::Catalog => 1,
            NegativePool::Popularity => u64::from(interactions),
        }
    }
}

/// Serde's default for the samplers whose pool was the whole catalog before pools existed
/// (random, BM25, ANCE): configs and models written then read the same.
pub(crate) fn catalog_pool() -> NegativePool {
    NegativePool::Catalog
}

/// Whether a pool is the whole catalog (the default, not written, for random, BM25 and ANCE).
pub(crate) fn is_catalog(pool: &NegativePool) -> bool {
    *pool == NegativePool::Catalog
}

/// The products a pool admits (a positive weight), for the samplers that draw from a list of
/// candidates (random, BM25, ANCE): every product for the catalog pool, otherwise those with
/// a training interaction. `None` means every product.
pub(crate) fn admitted(pool: NegativePool, interactions: &[u32]) -> Option<Vec<bool>> {
    (pool != NegativePool::Catalog)
        .then(|| interactions.iter().map(|&n| pool.weight(n) > 0).collect())
}

/// The ids of the products [`admitted`] keeps, in order; `None` for the catalog pool, or for a
/// pool that admits no product at all (no training interaction), where the samplers fall back
/// to the whole catalog.
pub(crate) fn admitted_ids(pool: NegativePool, interactions: &[u32]) -> Option<Vec<ProductId>> {
    let keep = admitted(pool, interactions)?;
    let ids: Vec<ProductId> = (0..keep.len())
        .filter(|&p| keep[p])
        .map(|p| ProductId(p as u32))
        .collect();
    (!ids.is_empty()).then_some(ids)
}

impl fmt::Display for NegativePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NegativePool::Interacted => "interacted",
            NegativePool::Catalog => "catalog",
            NegativePool::Popularity => "popularity",
        })
    }
}

impl FromStr for NegativePool {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "interacted" => Ok(NegativePool::Interacted),
            "catalog" => Ok(NegativePool::Catalog),
            "popularity" => Ok(NegativePool::Popularity),
            other => Err(format!(
                "unknown pool `{other}`: expected interacted, catalog or popularity"
            )),
        }
    }
}
