//! Customers' histories, for personalization, with no leakage by construction.
//!
//! A [`Histories`] holds the interactions a ranker may read, each user's in time order, and
//! answers "what did this user do strictly before time t". An evaluated query carries its cut-off
//! ([`EvalQuery::before`](crate::EvalQuery)): the held-out order on Instacart, the event itself
//! on Best Buy.
//!
//! Every ranker that reads a history (re-purchase, the personalized tower, the history term, the
//! re-ranking head) reads [`Histories::for_evaluation`]: the training part and the validation
//! queries' events, never the test part's. With the cut-off, a test query reads everything
//! before it that is not itself a test event (on Instacart: the validation order too, which a
//! live system would know), and a validation query everything before it (on Instacart, where
//! the validation order is each customer's last but one, only training orders). Training reads
//! [`Histories::from_split`], the training part alone.

use crate::dataset::Dataset;
use crate::model::{Interaction, UserId};
use crate::split::Split;

/// Training interactions per user, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Histories {
    /// Interaction indices per user, sorted by (time, index).
    by_user: Vec<Vec<u32>>,
    /// The time of each entry of `by_user`, for the cut-off search.
    times: Vec<Vec<i64>>,
}

impl Histories {
    /// The histories of `split`'s training part.
    pub fn from_split(ds: &Dataset, split: &Split) -> Histories {
        Self::of(ds, split.train.iter().copied())
    }

    /// The training part and the validation queries' events: what every ranker of an
    /// evaluation reads, each query up to its cut-off (see the module's documentation). No test
    /// event enters.
    pub fn for_evaluation(ds: &Dataset, split: &Split) -> Histories {
        let mut events: Vec<u32> = split.train.clone();
        events.extend(
            split
                .validation
                .iter()
                .flat_map(|q| q.events.iter().copied()),
        );
        events.sort_unstable();
        events.dedup();
        Self::of(ds, events.into_iter())
    }

    /// Every interaction of the dataset: what a live service knows of its customers (not for
    /// evaluation, where held-out events must stay out).
    pub fn all(ds: &Dataset) -> Histories {
        Self::of(ds, 0..ds.interactions.len() as u32)
    }

    /// The histories of the interactions `events` (indices into `ds.interactions`).
    fn of(ds: &Dataset, events: impl Iterator<Item = u32>) -> Histories {
        let mut by_user: Vec<Vec<u32>> = vec![Vec::new(); ds.users.len()];
        for i in events {
            by_user[ds.interactions[i as usize].user.index()].push(i);
        }
        for h in &mut by_user {
            h.sort_by_key(|&i| (ds.interactions[i as usize].time, i));
        }
        let times = by_user
            .iter()
            .map(|h| {
                h.iter()
                    .map(|&i| ds.interactions[i as usize].time)
                    .collect()
            })
            .collect();
        Histories { by_user, times }
    }

    /// The user's interactions held here with `time < before`, oldest first, at most the last
    /// `n`. An unknown user has none.
    pub fn before(&self, user: UserId, before: i64, n: usize) -> &[u32] {
        let (Some(h), Some(t)) = (self.by_user.get(user.index()), self.times.get(user.index()))
        else {
            return &[];
        };
        let end = t.partition_point(|&x| x < before);
        &h[end.saturating_sub(n)..end]
    }

    /// Number of interactions held for the user.
    pub fn count(&self, user: UserId) -> usize {
        self.by_user.get(user.index()).map_or(0, Vec::len)
    }

    /// True when the user has any training interaction.
    pub fn knows(&self, user: UserId) -> bool {
        self.by_user
            .get(user.index())
            .is_some_and(|h| !h.is_empty())
    }

    /// The interactions of [`before`](Self::before), resolved.
    pub fn events<'a>(
        &'a self,
        ds: &'a Dataset,
        user: UserId,
        before: i64,
        n: usize,
    ) -> impl Iterator<Item = &'a Interaction> + 'a {
        self.before(user, before, n)
            .iter()
            .map(move |&i| &ds.interactions[i as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_hold_only_training_events_before_the_cut_off() {
        let mut ds = crate::synth::small_dataset(400, 40, 600, 8).expect("world");
        // Instacart's protocol too: the held-out orders are the users' last ones.
        let lloo = crate::split::leave_last_order_out(&mut ds).expect("leave last order out");
        ds.set_split(lloo);
        // event, query-disjoint, product-disjoint and leave-last-order-out.
        assert_eq!(ds.splits.len(), 4);
        let mut held = vec![false; ds.interactions.len()];
        for split in &ds.splits {
            let h = Histories::from_split(&ds, split);
            let train: std::collections::HashSet<u32> = split.train.iter().copied().collect();
            held.iter_mut().for_each(|x| *x = false);
            for q in split.validation.iter().chain(&split.test) {
                for &e in &q.events {
                    held[e as usize] = true;
                }
            }
            let mut checked = 0;
            for q in split.validation.iter().chain(&split.test) {
                let Some(u) = q.user else { continue };
                let events = h.before(u, q.before, usize::MAX);
                for &i in events {
                    let e = &ds.interactions[i as usize];
                    assert!(
                        train.contains(&i),
                        "{}: a held-out event in a history",
                        split.name
                    );
                    assert!(!held[i as usize]);
                    assert_eq!(e.user, u);
                    assert!(e.time < q.before, "not strictly before the query");
                    checked += 1;
                }
                // Oldest first, and `n` keeps the most recent.
                assert!(events
                    .windows(2)
                    .all(|w| ds.interactions[w[0] as usize].time
                        <= ds.interactions[w[1] as usize].time));
                if events.len() > 3 {
                    assert_eq!(h.before(u, q.before, 3), &events[events.len() - 3..]);
                }
            }
            assert!(
                checked > 100,
                "{}: only {checked} history events",
                split.name
            );
        }
        let h = Histories::from_split(&ds, &ds.splits[0]);
        assert!(h.before(UserId(u32::MAX), i64::MAX, 10).is_empty());
        assert!(!h.knows(UserId(u32::MAX)));
    }

    /// The one history rule of an evaluation: a query reads exactly the user's training and
    /// validation interactions strictly before its cut-off, never a test event and nothing at or
    /// after the cut-off; on leave-last-order-out a test query reads the validation order.
    #[test]
    fn evaluation_histories_hold_everything_before_the_cut_off_but_test_events() {
        let mut ds = crate::synth::small_dataset(400, 40, 600, 8).expect("world");
        let lloo = crate::split::leave_last_order_out(&mut ds).expect("leave last order out");
        ds.set_split(lloo);
        for split in &ds.splits {
            let h = Histories::for_evaluation(&ds, split);
            let mut known: std::collections::HashSet<u32> = split.train.iter().copied().collect();
            let mut validation_events = 0usize;
            for q in &split.validation {
                known.extend(q.events.iter().copied());
                validation_events += q.events.len();
            }
            assert!(validation_events > 0);
            let (mut read_validation, mut queries) = (0usize, 0usize);
            for q in split.validation.iter().chain(&split.test) {
                let Some(u) = q.user else { continue };
                queries += 1;
                let mut want: Vec<u32> = (0..ds.interactions.len() as u32)
                    .filter(|i| known.contains(i))
                    .filter(|&i| {
                        let e = &ds.interactions[i as usize];
                        e.user == u && e.time < q.before
                    })
                    .collect();
                want.sort_by_key(|&i| (ds.interactions[i as usize].time, i));
                let got = h.before(u, q.before, usize::MAX);
                assert_eq!(got, want.as_slice(), "{}: user {u:?}", split.name);
                read_validation += got.iter().filter(|i| !split.train.contains(i)).count();
            }
            assert!(queries > 50, "{}: {queries} queries", split.name);
            if split.name == "leave_last_order_out" {
                assert!(read_validation > 0, "test queries read no validation order");
            }
        }
    }
}
