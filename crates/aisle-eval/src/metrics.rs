//! Ranking metrics of one query, their means with bootstrap intervals, and a paired
//! randomization test.
//!
//! A ranking is a list of distinct products, best first (whoever produced it broke its ties). The
//! relevant set carries graded relevance; a grade of 0 is not relevant. A query with no relevant
//! product has no defined recall and is left out of every mean (the evaluation counts how many).

use aisle_core::rng::Rng;
use aisle_core::ProductId;
use serde::Serialize;

/// Relevant products of a query with their grades (> 0), in any order.
pub type Relevant = [(ProductId, u8)];

fn grade(relevant: &Relevant, p: ProductId) -> u8 {
    relevant.iter().find(|r| r.0 == p).map_or(0, |r| r.1)
}

fn relevant_count(relevant: &Relevant) -> usize {
    relevant.iter().filter(|r| r.1 > 0).count()
}

/// |relevant in the top k| / |relevant|; `None` when nothing is relevant.
pub fn recall_at(ranking: &[ProductId], relevant: &Relevant, k: usize) -> Option<f64> {
    let n = relevant_count(relevant);
    if n == 0 {
        return None;
    }
    let hits = ranking
        .iter()
        .take(k)
        .filter(|&&p| grade(relevant, p) > 0)
        .count();
    Some(hits as f64 / n as f64)
}

/// NDCG@k with gains `2^grade - 1` and discounts `1 / log2(rank + 1)`, normalised by the ideal
/// ordering of the relevant set; `None` when nothing is relevant.
pub fn ndcg_at(ranking: &[ProductId], relevant: &Relevant, k: usize) -> Option<f64> {
    if relevant_count(relevant) == 0 {
        return None;
    }
    let gain = |g: u8| (2f64).powi(g as i32) - 1.0;
    let discount = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let dcg: f64 = ranking
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &p)| gain(grade(relevant, p)) * discount(i))
        .sum();
    let mut ideal: Vec<u8> = relevant.iter().map(|r| r.1).filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &g)| gain(g) * discount(i))
        .sum();
    Some(dcg / idcg)
}

/// 1 / rank of the first relevant product in the ranking (0 when none is in it); `None` when
/// nothing is relevant.
pub fn reciprocal_rank(ranking: &[ProductId], relevant: &Relevant) -> Option<f64> {
    if relevant_count(relevant) == 0 {
        return None;
    }
    Some(
        ranking
            .iter()
            .position(|&p| grade(relevant, p) > 0)
            .map_or(0.0, |i| 1.0 / (i + 1) as f64),
    )
}

/// A mean with its 95% bootstrap interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    /// Number of queries (or groups) averaged.
    pub n: usize,
}

impl Estimate {
    /// The mean of `values` and the 2.5 / 97.5 percentiles of `resamples` bootstrap means
    /// (resampling the values with replacement, seeded). An empty input gives NaN.
    pub fn of(values: &[f64], resamples: usize, seed: u64) -> Estimate {
        let n = values.len();
        if n == 0 {
            return Estimate {
                mean: f64::NAN,
                low: f64::NAN,
                high: f64::NAN,
                n,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        if resamples == 0 {
            return Estimate {
                mean,
                low: mean,
                high: mean,
                n,
            };
        }
        let mut rng = Rng::new(seed ^ 0xB007_5712);
        let mut means: Vec<f64> = (0..resamples)
            .map(|_| (0..n).map(|_| values[rng.index(n)]).sum::<f64>() / n as f64)
            .collect();
        means.sort_by(f64::total_cmp);
        let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
        Estimate {
            mean,
            low: at(0.025),
            high: at(0.975),
            n,
        }
    }
}

/// Two-sided p-value of a paired randomization (sign-flip) test that two systems' per-query
/// scores have the same mean: each difference's sign is flipped at random `rounds` times, and
/// the p-value is the share of flips whose mean difference is at least as far from zero as the
/// observed one (with the observed counted once, so it is never 0).
pub fn paired_randomization(a: &[f64], b: &[f64], rounds: usize, seed: u64) -> f64 {
    assert_eq!(a.len(), b.len(), "paired scores");
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    if diffs.is_empty() {
        return 1.0;
    }
    let observed = diffs.iter().sum::<f64>().abs();
    let mut rng = Rng::new(seed ^ 0x5161_F11F);
    let mut extreme = 0usize;
    for _ in 0..rounds {
        let s: f64 = diffs
            .iter()
            .map(|d| if rng.index(2) == 0 { *d } else { -*d })
            .sum();
        // A tiny tolerance: sums of the same values in another order may differ in the last bit.
        if s.abs() >= observed - 1e-12 {
            extreme += 1;
        }
    }
    (extreme + 1) as f64 / (rounds + 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(i: u32) -> ProductId {
        ProductId(i)
    }

    #[test]
    fn recall_counts_relevant_in_the_top_k() {
        let ranking = [p(5), p(1), p(9), p(2)];
        let rel = [(p(1), 1), (p(2), 3), (p(7), 1)];
        assert_eq!(recall_at(&ranking, &rel, 1), Some(0.0));
        assert_eq!(recall_at(&ranking, &rel, 2), Some(1.0 / 3.0));
        assert_eq!(recall_at(&ranking, &rel, 10), Some(2.0 / 3.0));
        // Grade 0 is not relevant; an empty relevant set is undefined, not zero.
        assert_eq!(recall_at(&ranking, &[(p(5), 0)], 10), None);
        assert_eq!(recall_at(&ranking, &[], 10), None);
        assert_eq!(recall_at(&[], &rel, 10), Some(0.0));
    }

    #[test]
    fn graded_ndcg_by_hand() {
        // Grades 3 at rank 2 and 1 at rank 1: DCG = 1/log2(2) + 7/log2(3) = 1 + 4.4165;
        // ideal = 7/log2(2) + 1/log2(3) = 7 + 0.6309.
        let ranking = [p(1), p(2), p(3)];
        let rel = [(p(1), 1), (p(2), 3)];
        let want = (1.0 + 7.0 / 3f64.log2()) / (7.0 + 1.0 / 3f64.log2());
        let got = ndcg_at(&ranking, &rel, 10).expect("defined");
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        // The ideal order scores 1; ties in grade do not matter to the ideal.
        let tied = [(p(1), 2), (p(2), 2)];
        assert!((ndcg_at(&ranking, &tied, 10).expect("defined") - 1.0).abs() < 1e-12);
        assert!((ndcg_at(&[p(2), p(1)], &rel, 10).expect("defined") - 1.0).abs() < 1e-12);
        // Cut at k: the relevant product at rank 2 is outside k = 1.
        let at1 = ndcg_at(&[p(3), p(2)], &rel, 1).expect("defined");
        assert_eq!(at1, 0.0);
        assert_eq!(ndcg_at(&ranking, &[], 10), None);
    }

    #[test]
    fn reciprocal_rank_of_the_first_hit() {
        let rel = [(p(4), 1), (p(8), 2)];
        assert_eq!(reciprocal_rank(&[p(1), p(8), p(4)], &rel), Some(0.5));
        assert_eq!(reciprocal_rank(&[p(1)], &rel), Some(0.0));
        assert_eq!(reciprocal_rank(&[p(1)], &[]), None);
    }

    #[test]
    fn bootstrap_interval_brackets_the_mean_and_shrinks_with_n() {
        let small: Vec<f64> = (0..20).map(|i| (i % 2) as f64).collect();
        let large: Vec<f64> = (0..2000).map(|i| (i % 2) as f64).collect();
        let a = Estimate::of(&small, 1000, 1);
        let b = Estimate::of(&large, 1000, 1);
        assert_eq!(a.mean, 0.5);
        assert!(a.low < 0.5 && a.high > 0.5);
        assert!(b.high - b.low < (a.high - a.low) / 4.0);
        // A constant has a zero-width interval; nothing gives NaN.
        let c = Estimate::of(&[0.3; 50], 200, 1);
        assert!((c.low - 0.3).abs() < 1e-12 && (c.high - 0.3).abs() < 1e-12);
        assert!(Estimate::of(&[], 100, 1).mean.is_nan());
    }

    #[test]
    fn randomization_test_separates_real_from_no_difference() {
        let a: Vec<f64> = (0..200).map(|i| ((i * 7) % 10) as f64 / 10.0).collect();
        let better: Vec<f64> = a.iter().map(|x| x + 0.1).collect();
        assert!(paired_randomization(&better, &a, 2000, 3) < 0.01);
        assert_eq!(paired_randomization(&a, &a, 2000, 3), 1.0);
        // Noise around zero difference: not significant.
        let noisy: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(i, x)| x + if i.is_multiple_of(2) { 0.05 } else { -0.05 })
            .collect();
        assert!(paired_randomization(&noisy, &a, 2000, 3) > 0.5);
    }
}
