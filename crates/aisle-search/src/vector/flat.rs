//! A hand-written search over usearch's HNSW graph, laid out flat.
//!
//! Written by hand because a measurement shows usearch's search is the bottleneck, not the graph
//! it builds: at 1M products (M = 32, efConstruction 256) usearch reached the same recall per
//! `ef` as hnswlib, within 0.01, yet answered about half the queries per second (192 against
//! 106 µs a query at `ef` 64), and no compiler flag, prefetching patch or `i8` vectors closed it
//! (docs/scale-out.md#the-embedded-index-against-its-peers). usearch keeps each vector behind a
//! pointer table, apart from its node; hnswlib keeps a node's level-0 neighbours and its vector in
//! one record. This module copies usearch's graph, as checked by
//! [`graph_check`](super::graph_check), into such records and walks it the way hnswlib does:
//!
//! - level 0 is one allocation of fixed-size records, 64-byte aligned, on transparent huge pages
//!   where the kernel gives them: the vector first, then the neighbour count and the neighbour
//!   list at its full capacity (so the graph is written back in usearch's format, byte for byte
//!   but for the reverse links added below);
//! - level-0 links that HNSW's pruning left one-way get their reverse where the list has room;
//! - nodes are renumbered breadth-first from the entry node, so that neighbours tend to lie near
//!   each other in memory (usearch numbers them in insertion order, which aisle shuffles);
//! - the few nodes above level 0 keep their lists apart, as usearch stores them;
//! - the search is usearch's (and the HNSW paper's): a greedy descent through the upper levels,
//!   then a best-first search of level 0 with `ef` candidates. Expanding a node first marks its
//!   neighbours not seen before and prefetches every cache line of their vectors, then scores
//!   them, so that a dozen or more loads from memory overlap; hnswlib prefetches one neighbour
//!   ahead, and at 1M products asking for all of them at once answered 1.24-1.37x the queries/s
//!   of one-ahead on the same graphs, with the same results. Visited nodes are marked in an
//!   array of bits, one per node, instead of a hash set (one bit set per search running at once,
//!   pooled, and cleared through the list of nodes the search touched);
//! - inner products use AVX2 + FMA where the CPU has them, picked at run time.
//!
//! Only `f32` graphs are flattened; `i8` graphs stay with usearch. On the same graph, with the
//! same results, this answers 2.3-2.4x usearch's queries/s at 1M products, and more than hnswlib
//! and faiss at equal recall (docs/scale-out.md#every-new-neighbour-asked-for-at-once).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering as Atomic};
use std::sync::Mutex;

use aisle_core::ProductId;
use bytemuck::{Pod, Zeroable};

use super::graph_check::{Layout, Visit};

/// Words (`u32` / `f32`) per cache line.
const LINE: usize = 16;

/// One 64-byte cache line; level-0 records are whole lines, so each starts on a line.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u32; LINE]);

/// usearch's graph, flattened for search (see the module docs).
pub(super) struct FlatGraph {
    dim: usize,
    len: usize,
    /// Neighbour capacity on level 0 and on the levels above.
    base_cap: usize,
    cap: usize,
    /// Words per level-0 record: `dim` vector values, the count, `base_cap` slots, padding.
    stride: usize,
    level0: Vec<Line>,
    /// Product id of each slot.
    keys: Vec<u32>,
    levels: Vec<i16>,
    /// Where a node's lists above level 0 start in `upper` (`u32::MAX` for a level-0 node); each
    /// level holds the count and `cap` slots.
    upper_start: Vec<u32>,
    upper: Vec<u32>,
    entry: u32,
    max_level: usize,
    /// usearch's 64-byte head, written back as read.
    head: Vec<u8>,
    /// usearch's slot of each node: nodes are renumbered for search (`renumber_breadth_first`);
    /// the lists keep usearch's numbers past their count, as usearch left them.
    usearch_slot: Vec<u32>,
    expansion: AtomicUsize,
    /// Search states not in use, one per search running at once at most: taken by a search and
    /// given back after, so that memory follows concurrency and goes with the graph.
    scratch: Mutex<Vec<Scratch>>,
}

impl std::fmt::Debug for FlatGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlatGraph")
            .field("dim", &self.dim)
            .field("len", &self.len)
            .field("connectivity", &self.cap)
            .field("max_level", &self.max_level)
            .finish()
    }
}

/// Builds a [`FlatGraph`] while [`graph_check`](super::graph_check) reads the graph.
pub(super) struct Builder {
    dim: usize,
    graph: Option<FlatGraph>,
}

impl Builder {
    pub(super) fn new(dim: usize) -> Self {
        Builder { dim, graph: None }
    }

    /// The graph, once a check that visited with this builder succeeded; `None` for an empty
    /// graph or one whose vectors are not `f32`.
    pub(super) fn finish(self, expansion: usize) -> Option<FlatGraph> {
        let mut graph = self.graph?;
        graph.add_reverse_links();
        graph.renumber_breadth_first();
        graph.expansion.store(expansion.max(1), Atomic::Relaxed);
        Some(graph)
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl Visit for Builder {
    fn layout(&mut self, layout: Layout<'_>) {
        let (dim, len) = (self.dim, layout.levels.len());
        if dim == 0 || layout.matrix.len() != len * dim * 4 {
            return; // i8 vectors: usearch keeps them.
        }
        let stride = (dim + 1 + layout.connectivity_base).next_multiple_of(LINE);
        let mut level0 = lines_on_huge_pages(len * stride / LINE);
        let words: &mut [u32] = bytemuck::cast_slice_mut(&mut level0);
        for (record, row) in words
            .chunks_exact_mut(stride)
            .zip(layout.matrix.chunks_exact(dim * 4))
        {
            for (w, b) in record.iter_mut().zip(row.chunks_exact(4)) {
                *w = le_u32(b);
            }
        }
        let mut upper_start = vec![u32::MAX; len];
        let mut upper_words = 0usize;
        for (slot, &level) in layout.levels.iter().enumerate() {
            if level > 0 {
                upper_start[slot] = upper_words as u32;
                upper_words += level as usize * (1 + layout.connectivity);
            }
        }
        self.graph = Some(FlatGraph {
            dim,
            len,
            base_cap: layout.connectivity_base,
            cap: layout.connectivity,
            stride,
            level0,
            keys: vec![0; len],
            levels: layout.levels.to_vec(),
            upper_start,
            upper: vec![0; upper_words],
            entry: layout.entry as u32,
            max_level: layout.levels.iter().copied().max().unwrap_or(0).max(0) as usize,
            head: layout.head.to_vec(),
            usearch_slot: (0..len as u32).collect(),
            expansion: AtomicUsize::new(1),
            scratch: Mutex::new(Vec::new()),
        });
    }

    fn links(&mut self, slot: usize, key: u64, level: usize, count: u32, list: &[u8]) {
        let Some(g) = self.graph.as_mut() else {
            return;
        };
        // graph_check has checked that keys are below the node count, which is a u32.
        g.keys[slot] = key as u32;
        let dest: &mut [u32] = if level == 0 {
            let at = slot * g.stride + g.dim;
            &mut bytemuck::cast_slice_mut(&mut g.level0)[at..at + 1 + g.base_cap]
        } else {
            let at = g.upper_start[slot] as usize + (level - 1) * (1 + g.cap);
            &mut g.upper[at..at + 1 + g.cap]
        };
        dest[0] = count;
        for (w, b) in dest[1..].iter_mut().zip(list.chunks_exact(4)) {
            *w = le_u32(b);
        }
    }
}

/// `n` zeroed cache lines, asking Linux to back them with transparent huge pages first (the
/// machines measured run THP in `madvise` mode, where nothing gets them unasked; usearch's
/// arenas do the same through aisle's patch, vendor/README.md).
fn lines_on_huge_pages(n: usize) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::with_capacity(n);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = lines.as_ptr() as usize;
        let end = start + n * std::mem::size_of::<Line>();
        let (first, last) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if last > first {
            // SAFETY: the range lies inside this vector's allocation; madvise only advises the
            // kernel on how to back the pages and changes no memory contents. Failure (no THP)
            // is harmless and ignored.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    lines.resize(n, Line([0; LINE]));
    lines
}

/// A node met in the search: its similarity to the query and its slot.
#[derive(Clone, Copy, Debug)]
struct Near {
    sim: f32,
    slot: u32,
}

impl PartialEq for Near {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Near {}
impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sim
            .total_cmp(&other.sim)
            .then(other.slot.cmp(&self.slot))
    }
}

/// A search's reusable state: which nodes it visited, and both heaps.
///
/// Visited nodes are bits, one per node (125 KB at 1M products), cleared after each search
/// through the list of nodes it set: a search touches a few thousand nodes, not the graph. The
/// server runs as many searches at once as it has requests in flight, each with its own state,
/// so the state is kept small rather than limiting how many run (a gate that admitted one search
/// per core served 4% fewer queries/s with 1.7x the p99 at 64 connections).
#[derive(Default)]
struct Scratch {
    /// Invariant between searches: every bit is clear.
    visited: Vec<u64>,
    touched: Vec<u32>,
    /// The neighbours of the node being expanded that no search step had visited.
    fresh: Vec<u32>,
    candidates: BinaryHeap<Near>,
    top: BinaryHeap<Reverse<Near>>,
}

impl Scratch {
    /// Starts a search over `n` nodes.
    fn start(&mut self, n: usize) {
        let words = n.div_ceil(64);
        if self.visited.len() < words {
            self.visited.resize(words, 0);
        }
        self.candidates.clear();
        self.top.clear();
    }

    /// Marks `slot` visited; false when it already was.
    #[inline(always)]
    fn visit(&mut self, slot: u32) -> bool {
        let (word, bit) = ((slot >> 6) as usize, 1u64 << (slot & 63));
        if self.visited[word] & bit != 0 {
            return false;
        }
        self.visited[word] |= bit;
        self.touched.push(slot);
        true
    }

    /// Clears what this search visited (restoring the invariant).
    fn finish(&mut self) {
        for &slot in &self.touched {
            self.visited[(slot >> 6) as usize] = 0;
        }
        self.touched.clear();
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        8 * self.visited.capacity() + 4 * (self.touched.capacity() + self.fresh.capacity())
    }
}

/// An inner-product kernel the search is compiled for.
trait Kernel {
    fn dot(a: &[f32], b: &[f32]) -> f32;
}

/// The portable kernel ([`super::dot`]).
struct Portable;
impl Kernel for Portable {
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        super::dot(a, b)
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2;
#[cfg(target_arch = "x86_64")]
impl Kernel for Avx2 {
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: this kernel is only used inside `FlatGraph::search_avx2`, which runs only after
        // the CPU was seen to have AVX2 and FMA.
        unsafe { dot_avx2(a, b) }
    }
}

/// Inner product with four 8-lane FMA accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (loads): every load reads 8 values at `i + 8 j`, below `n` by the loop bounds.
    while i + 32 <= n {
        for (j, s) in acc.iter_mut().enumerate() {
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + 8 * j)),
                    _mm256_loadu_ps(pb.add(i + 8 * j)),
                )
            };
            *s = _mm256_fmadd_ps(x, y, *s);
        }
        i += 32;
    }
    while i + 8 <= n {
        let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let half = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps::<1>(sum));
    let pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
    let mut total = _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps::<1>(pairs, pairs)));
    for k in i..n {
        total += a[k] * b[k];
    }
    total
}

/// Asks the CPU to start loading the cache line at `p`.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl FlatGraph {
    /// Adds the link b -> a on level 0 wherever a -> b exists and b's list has room.
    ///
    /// HNSW links both ways when it inserts, but a full list that re-chooses its neighbours drops
    /// some of them, and nothing adds them back: about 2% of the links of a 1M graph (M = 32),
    /// whose lists had room to spare. Adding them raised recall@10 from 0.883 to 0.892
    /// at `ef` 64 and from 0.950 to 0.966 at `ef` 256 on one 1M graph (`aisle bench search
    /// --walker usearch --export-vectors`, docs/scale-out.md#a-flat-copy-of-the-graph). A graph
    /// that has them gains nothing from a second pass, so a file written after it reads back the
    /// same.
    fn add_reverse_links(&mut self) {
        let mut missing: Vec<(u32, u32)> = Vec::new();
        for a in 0..self.len as u32 {
            for &b in self.neighbours(a, 0) {
                if !self.neighbours(b, 0).contains(&a) {
                    missing.push((b, a));
                }
            }
        }
        let (dim, cap, stride) = (self.dim, self.base_cap, self.stride);
        let words: &mut [u32] = bytemuck::cast_slice_mut(&mut self.level0);
        for (b, a) in missing {
            let record = &mut words[b as usize * stride..(b as usize + 1) * stride];
            let count = record[dim] as usize;
            if count < cap && !record[dim + 1..dim + 1 + count].contains(&a) {
                record[dim + 1 + count] = a;
                record[dim] += 1;
            }
        }
    }

    /// Renumbers the nodes in breadth-first order from the entry node over level 0, so that
    /// nodes a search reads one after the other tend to lie near each other in memory. usearch's
    /// slots follow the (shuffled) insertion order. At 1M products (M = 32) this gave 7% more
    /// queries/s at `ef` 64 and 11% at `ef` 256 and 512, with the same results, for about 3 s of
    /// work (docs/scale-out.md#a-flat-copy-of-the-graph).
    fn renumber_breadth_first(&mut self) {
        let n = self.len;
        let mut new_of = vec![u32::MAX; n];
        let mut old_of: Vec<u32> = Vec::with_capacity(n);
        let push = |o: u32, new_of: &mut Vec<u32>, old_of: &mut Vec<u32>| {
            if new_of[o as usize] == u32::MAX {
                new_of[o as usize] = old_of.len() as u32;
                old_of.push(o);
            }
        };
        push(self.entry, &mut new_of, &mut old_of);
        let mut head = 0;
        let mut next_unseen = 0u32;
        while old_of.len() < n {
            if head == old_of.len() {
                while new_of[next_unseen as usize] != u32::MAX {
                    next_unseen += 1;
                }
                push(next_unseen, &mut new_of, &mut old_of);
            }
            let o = old_of[head];
            head += 1;
            for &nb in self.neighbours(o, 0) {
                push(nb, &mut new_of, &mut old_of);
            }
        }
        let stride = self.stride;
        let mut level0 = lines_on_huge_pages(self.level0.len());
        {
            let src: &[u32] = bytemuck::cast_slice(&self.level0);
            let dst: &mut [u32] = bytemuck::cast_slice_mut(&mut level0);
            for (p, &o) in old_of.iter().enumerate() {
                let rec = &mut dst[p * stride..(p + 1) * stride];
                rec.copy_from_slice(&src[o as usize * stride..(o as usize + 1) * stride]);
                let count = rec[self.dim] as usize;
                for x in &mut rec[self.dim + 1..self.dim + 1 + count] {
                    *x = new_of[*x as usize];
                }
            }
        }
        self.level0 = level0;
        for s in 0..n {
            if self.levels[s] > 0 {
                let at = self.upper_start[s] as usize;
                for l in 0..self.levels[s] as usize {
                    let b = at + l * (1 + self.cap);
                    let count = self.upper[b] as usize;
                    for x in &mut self.upper[b + 1..b + 1 + count] {
                        *x = new_of[*x as usize];
                    }
                }
            }
        }
        self.keys = old_of.iter().map(|&o| self.keys[o as usize]).collect();
        self.levels = old_of.iter().map(|&o| self.levels[o as usize]).collect();
        self.upper_start = old_of
            .iter()
            .map(|&o| self.upper_start[o as usize])
            .collect();
        self.entry = new_of[self.entry as usize];
        self.usearch_slot = old_of;
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn connectivity(&self) -> usize {
        self.cap
    }

    pub(super) fn expansion(&self) -> usize {
        self.expansion.load(Atomic::Relaxed)
    }

    pub(super) fn set_expansion(&self, ef: usize) {
        self.expansion.store(ef.max(1), Atomic::Relaxed);
    }

    /// Bytes held: level-0 records, upper lists, keys, levels.
    pub(super) fn memory_bytes(&self) -> usize {
        self.level0.len() * std::mem::size_of::<Line>()
            + 4 * (self.upper.len()
                + self.upper_start.len()
                + self.keys.len()
                + self.usearch_slot.len())
            + 2 * self.levels.len()
            + self.head.len()
            + self
                .scratch
                .lock()
                .map_or(0, |s| s.iter().map(Scratch::bytes).sum())
    }

    fn words(&self) -> &[u32] {
        bytemuck::cast_slice(&self.level0)
    }

    #[inline(always)]
    fn record(&self, slot: u32) -> &[u32] {
        let at = slot as usize * self.stride;
        &self.words()[at..at + self.stride]
    }

    #[inline(always)]
    fn vector(&self, slot: u32) -> &[f32] {
        bytemuck::cast_slice(&self.record(slot)[..self.dim])
    }

    /// Node `slot`'s neighbours on `level`.
    #[inline(always)]
    fn neighbours(&self, slot: u32, level: usize) -> &[u32] {
        let list = if level == 0 {
            &self.record(slot)[self.dim..self.dim + 1 + self.base_cap]
        } else {
            let at = self.upper_start[slot as usize] as usize + (level - 1) * (1 + self.cap);
            &self.upper[at..at + 1 + self.cap]
        };
        &list[1..1 + list[0] as usize]
    }

    /// The `k` products most similar to `query` among those `keep` accepts (all without it),
    /// best first. The caller has checked `query`'s length and values.
    pub(super) fn search(
        &self,
        query: &[f32],
        k: usize,
        keep: Option<&dyn Fn(ProductId) -> bool>,
    ) -> Vec<(ProductId, f32)> {
        if self.len == 0 || k == 0 {
            return Vec::new();
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { self.search_avx2(query, k, keep) };
        }
        self.search_with::<Portable>(query, k, keep)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn search_avx2(
        &self,
        query: &[f32],
        k: usize,
        keep: Option<&dyn Fn(ProductId) -> bool>,
    ) -> Vec<(ProductId, f32)> {
        self.search_with::<Avx2>(query, k, keep)
    }

    #[inline(always)]
    fn search_with<K: Kernel>(
        &self,
        query: &[f32],
        k: usize,
        keep: Option<&dyn Fn(ProductId) -> bool>,
    ) -> Vec<(ProductId, f32)> {
        // Greedy descent through the upper levels, unfiltered, as usearch does.
        let mut here = self.entry;
        let mut best = K::dot(query, self.vector(here));
        for level in (1..=self.max_level).rev() {
            loop {
                let mut moved = false;
                for &n in self.neighbours(here, level) {
                    let sim = K::dot(query, self.vector(n));
                    if sim > best {
                        (best, here, moved) = (sim, n, true);
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        let ef = self.expansion().max(k);
        // Nothing panics while the lock is held, so a poisoned lock still holds valid states.
        let taken = self.scratch.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut s = taken.unwrap_or_default();
        s.start(self.len);
        let hits = {
            let allowed = |slot: u32| keep.is_none_or(|f| f(ProductId(self.keys[slot as usize])));
            let start = Near {
                sim: best,
                slot: here,
            };
            s.visit(here);
            s.candidates.push(start);
            if allowed(here) {
                s.top.push(Reverse(start));
            }
            while let Some(c) = s.candidates.pop() {
                let bound = s.top.peek().map_or(f32::NEG_INFINITY, |w| w.0.sim);
                if s.top.len() >= ef && c.sim < bound {
                    break;
                }
                // Mark the neighbours not seen before and ask for all of their vectors at once,
                // then score them: their loads overlap instead of following one another.
                s.fresh.clear();
                for &n in self.neighbours(c.slot, 0) {
                    if s.visit(n) {
                        s.fresh.push(n);
                        let record = self.record(n);
                        for line in (0..self.dim).step_by(LINE) {
                            prefetch(record[line..].as_ptr());
                        }
                    }
                }
                for i in 0..s.fresh.len() {
                    let n = s.fresh[i];
                    let sim = K::dot(query, self.vector(n));
                    let bound = s.top.peek().map_or(f32::NEG_INFINITY, |w| w.0.sim);
                    if s.top.len() < ef || sim > bound {
                        let near = Near { sim, slot: n };
                        s.candidates.push(near);
                        if allowed(n) {
                            s.top.push(Reverse(near));
                            if s.top.len() > ef {
                                s.top.pop();
                            }
                        }
                    }
                }
                // The next candidate's neighbour list, read first thing in the next round.
                if let Some(next) = s.candidates.peek() {
                    prefetch(self.record(next.slot)[self.dim..].as_ptr());
                }
            }
            let mut hits: Vec<(ProductId, f32)> = s
                .top
                .drain()
                .map(|Reverse(n)| (ProductId(self.keys[n.slot as usize]), n.sim))
                .collect();
            hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            hits.truncate(k);
            hits
        };
        s.finish();
        self.scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s);
        hits
    }

    /// The graph in usearch's serialization, as it was read plus the reverse links added (see
    /// [`graph_check`](super::graph_check)'s layout): usearch's node numbers and order.
    pub(super) fn payload(&self) -> Vec<u8> {
        let (dim, len) = (self.dim, self.len);
        let mut ours = vec![0u32; len];
        for (node, &slot) in self.usearch_slot.iter().enumerate() {
            ours[slot as usize] = node as u32;
        }
        let mut out = Vec::with_capacity(self.memory_bytes() + 16 * len);
        let words = |out: &mut Vec<u8>, ws: &[u32]| {
            for w in ws {
                out.extend_from_slice(&w.to_le_bytes());
            }
        };
        // A neighbour list: its count, the neighbours in usearch's numbers, the rest as read.
        let list = |out: &mut Vec<u8>, ws: &[u32]| {
            let count = ws[0] as usize;
            out.extend_from_slice(&ws[0].to_le_bytes());
            for &n in &ws[1..1 + count] {
                out.extend_from_slice(&self.usearch_slot[n as usize].to_le_bytes());
            }
            words(out, &ws[1 + count..]);
        };
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&((dim * 4) as u32).to_le_bytes());
        for &node in &ours {
            words(&mut out, &self.record(node)[..dim]);
        }
        out.extend_from_slice(&self.head);
        let entry = self.usearch_slot[self.entry as usize] as usize;
        for v in [len, self.cap, self.base_cap, self.max_level, entry] {
            out.extend_from_slice(&(v as u64).to_le_bytes());
        }
        for &node in &ours {
            out.extend_from_slice(&self.levels[node as usize].to_le_bytes());
        }
        for &node in &ours {
            out.extend_from_slice(&u64::from(self.keys[node as usize]).to_le_bytes());
            let level = self.levels[node as usize];
            out.extend_from_slice(&level.to_le_bytes());
            list(&mut out, &self.record(node)[dim..dim + 1 + self.base_cap]);
            if level > 0 {
                let at = self.upper_start[node as usize] as usize;
                for l in 0..level as usize {
                    let b = at + l * (1 + self.cap);
                    list(&mut out, &self.upper[b..b + 1 + self.cap]);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::graph_check::{check_visiting, Expected};
    use crate::vector::testdata::low_rank;
    use crate::vector::{HnswIndex, HnswParams, Walker};

    const DIM: usize = 48;

    /// A usearch-walked graph over `n` low-rank rows, its serialization, and its flat copy.
    fn graph(n: usize, seed: u64) -> (Vec<f32>, Vec<u8>, FlatGraph) {
        let rows = low_rank(n, DIM, 8, 0.1, seed);
        let params = HnswParams {
            walker: Walker::Usearch,
            build_threads: 1,
            ..HnswParams::default()
        };
        let usearch = HnswIndex::build(DIM, &rows, &params).expect("build");
        let payload = usearch.payload_bytes("test").expect("payload");
        let mut builder = Builder::new(DIM);
        check_visiting(&payload, Expected::file(DIM, n), Some(&mut builder)).expect("checks");
        let flat = builder.finish(64).expect("an f32 graph is flattened");
        (rows, payload, flat)
    }

    #[test]
    fn the_flat_copy_keeps_usearchs_graph_and_adds_only_reverse_links() {
        let (_, payload, flat) = graph(2500, 3);
        assert_eq!(flat.len(), 2500);
        assert!(flat.max_level >= 1, "a 2,500-node graph has upper levels");
        // Level-0 lists by product id, before and after.
        let lists = |g: &FlatGraph| -> Vec<Vec<u32>> {
            let mut by_key = vec![Vec::new(); g.len];
            for node in 0..g.len as u32 {
                let mut l: Vec<u32> = g
                    .neighbours(node, 0)
                    .iter()
                    .map(|&n| g.keys[n as usize])
                    .collect();
                l.sort();
                by_key[g.keys[node as usize] as usize] = l;
            }
            by_key
        };
        let mut plain = Builder::new(DIM);
        check_visiting(&payload, Expected::file(DIM, 2500), Some(&mut plain)).expect("checks");
        let mut plain = plain.graph.expect("graph");
        let before = lists(&plain);
        let after = lists(&flat);
        let mut added = 0;
        for (p, (b, a)) in before.iter().zip(&after).enumerate() {
            assert!(b.iter().all(|x| a.contains(x)), "product {p} lost a link");
            for x in a.iter().filter(|x| !b.contains(x)) {
                assert!(
                    before[*x as usize].contains(&(p as u32)),
                    "{p} -> {x} reverses nothing"
                );
                added += 1;
            }
        }
        assert!(added > 0, "a 2,500-node graph has one-way links");
        // Nothing else changed: without the reverse links the copy writes usearch's bytes, and a
        // graph that has them is written back exactly.
        plain.renumber_breadth_first();
        assert!(
            plain.payload() == payload,
            "the round trip changed the graph"
        );
        let written = flat.payload();
        let mut again = Builder::new(DIM);
        check_visiting(&written, Expected::file(DIM, 2500), Some(&mut again)).expect("checks");
        assert!(again.finish(64).expect("graph").payload() == written);
    }

    #[test]
    fn avx2_and_portable_kernels_agree() {
        let rows = low_rank(2, 300, 4, 0.5, 9);
        let (a, b) = rows.split_at(300);
        for n in [0, 1, 7, 8, 9, 31, 32, 33, 64, 100, 129, 300] {
            let want = super::super::dot(&a[..n], &b[..n]);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has AVX2 and FMA.
                let got = unsafe { dot_avx2(&a[..n], &b[..n]) };
                assert!((got - want).abs() < 1e-5, "{n}: {got} against {want}");
            }
            assert_eq!(Portable::dot(&a[..n], &b[..n]), want);
        }
    }

    #[test]
    fn both_kernels_walk_to_the_same_hits() {
        let (rows, _, flat) = graph(3000, 5);
        let queries = low_rank(40, DIM, 8, 0.1, 6);
        for q in queries
            .chunks_exact(DIM)
            .chain(rows.chunks_exact(DIM).take(20))
        {
            let fast = flat.search(q, 10, None);
            let plain = flat.search_with::<Portable>(q, 10, None);
            assert_eq!(fast.len(), 10);
            let ids = |h: &[(ProductId, f32)]| h.iter().map(|x| x.0).collect::<Vec<_>>();
            // Rounding may swap two near-equal products; the sets and the scores agree.
            let mut a = ids(&fast);
            let mut b = ids(&plain);
            a.sort();
            b.sort();
            assert_eq!(a, b);
            for (x, y) in fast.iter().zip(&plain) {
                assert!((x.1 - y.1).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn filters_keep_only_what_they_accept_and_no_search_sees_anothers_visits() {
        let (rows, _, flat) = graph(600, 8);
        let q = &rows[..DIM];
        let odd = |p: ProductId| p.0 % 3 == 1;
        let hits = flat.search(q, 10, Some(&odd));
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|(p, _)| odd(*p)));
        // Row 0 itself is the best unfiltered hit, and kept out by the filter.
        assert_eq!(flat.search(q, 1, None)[0].0, ProductId(0));
        let before = flat.search(q, 10, None);
        // Searches from several threads at once, filtered and not, each with its own state.
        std::thread::scope(|scope| {
            for t in 0..6 {
                let (flat, rows) = (&flat, &rows);
                scope.spawn(move || {
                    for i in 0..300 {
                        let r = (t * 300 + i) % 600;
                        let q = &rows[r * DIM..(r + 1) * DIM];
                        let hits = if i % 2 == 0 {
                            flat.search(q, 5, None)
                        } else {
                            flat.search(q, 5, Some(&|p: ProductId| p.0.is_multiple_of(2)))
                        };
                        assert_eq!(hits.len(), 5);
                    }
                });
            }
        });
        // Every state went back to the pool with no node marked, and nothing changed.
        let pool = flat.scratch.lock().expect("pool");
        assert!(!pool.is_empty() && pool.len() <= 7, "{} states", pool.len());
        assert!(pool
            .iter()
            .all(|s| s.touched.is_empty() && s.visited.iter().all(|&w| w == 0)));
        drop(pool);
        assert_eq!(flat.search(q, 10, None), before);
        assert!(flat.search(q, 0, None).is_empty());
    }
}
