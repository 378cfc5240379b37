//! Checks a serialized usearch graph before usearch loads it.
//!
//! Written by hand because usearch does not do it: its loader trusts the file. It allocates from
//! the node count before looking at the buffer, and it keeps neighbour slots, neighbour counts
//! and levels as read, so a crafted graph with a valid aisle header loads and then reads out of
//! bounds at the first search (issue 19; the reproducers are in `fuzz/known/`). The checksums in
//! aisle's header stop damage, not someone who can write the file and recompute them; this check
//! stops that too.
//!
//! The layout is usearch 2.x's `index_dense_gt<u64 key, u32 slot>::save_to_stream`, as written by
//! the version in Cargo.lock (`include/usearch/index_dense.hpp` and `index.hpp`), little-endian
//! (usearch writes native byte order; aisle builds for little-endian targets only):
//!
//! ```text
//! rows: u32, bytes per vector: u32, then rows x bytes of vectors
//! 64-byte head: "usearch", version u16 x 3, metric u8, scalar u8, key u8, slot u8,
//!               present u64, deleted u64, dimensions u64, multi u8, zero padding
//! graph: size, connectivity, connectivity_base, max_level, entry_slot (u64 each)
//!        size x level (i16)
//!        size x node: key u64, level i16,
//!                     level 0: count u32 + connectivity_base x slot u32,
//!                     each level 1..=level: count u32 + connectivity x slot u32
//! ```
//!
//! What is required is what every file `aisle index` writes satisfies, and what usearch's search
//! needs to stay inside its buffers: the sizes add up to the buffer exactly, each neighbour list
//! holds at most its capacity, each neighbour is a node of the graph that lives on that level,
//! the entry node is on the top level, and the keys are the products `0..count`, each once.

use std::fmt;

use super::Quantization;

/// What the graph must be, from the caller and the aisle header.
#[derive(Clone, Copy, Debug)]
pub(super) struct Expected {
    /// Values per vector.
    pub dim: usize,
    /// Vectors (products) in the file, from the aisle header.
    pub count: usize,
    /// Whether the keys must be the products `0..count`, each once, as in every file
    /// `aisle index` writes; otherwise any distinct product ids (a graph built in memory over
    /// some products, such as ANCE's pool of interacted products).
    pub dense_keys: bool,
}

impl Expected {
    /// What an index file `aisle index` wrote holds: `count` vectors of `dim` values, the
    /// products `0..count`.
    pub(super) fn file(dim: usize, count: usize) -> Self {
        Expected {
            dim,
            count,
            dense_keys: true,
        }
    }
}

/// usearch's scalar-kind codes (`scalar_kind_t` in index_plugins.hpp).
const SCALAR_F32: u8 = 11;
const SCALAR_I8: u8 = 23;
const SCALAR_U64: u8 = 14;
const SCALAR_U32: u8 = 15;
/// usearch's metric code for the inner product (`metric_kind_t::ip_k`).
const METRIC_IP: u8 = b'i';
const HEAD_BYTES: usize = 64;
const MAGIC: &[u8; 7] = b"usearch";
/// usearch's own limit (`index_config_t::validate`) is at least 2; the upper bound keeps a
/// neighbour list's size sane (usearch's default is 16, aisle's 16 to 64).
const MAX_CONNECTIVITY: u64 = 4096;

/// Why a graph was refused, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn refuse<T>(reason: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(reason.into()))
}

/// A little-endian reader that never reads past its buffer.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Refused> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return refuse(format!(
                "the graph is cut short in {what}: {n} bytes needed at offset {}, {} left",
                self.at,
                self.bytes.len() - self.at
            ));
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Refused> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, Refused> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, Refused> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn i16(&mut self, what: &str) -> Result<i16, Refused> {
        self.array(what).map(i16::from_le_bytes)
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }
}

/// What a reader of the graph is shown while it is checked, in file order: the layout once, then
/// every neighbour list of every node. [`FlatGraph`](super::flat::FlatGraph) is built this way,
/// so that the format is read in one place.
pub(super) trait Visit {
    /// The vector matrix (`count` rows of `dim` scalars, slot order), usearch's 64-byte head, and
    /// the graph's shape. Called only for a graph with at least one node.
    fn layout(&mut self, layout: Layout<'_>);
    /// Node `slot`'s neighbour list on `level`: `count` neighbours, then the whole list as stored
    /// (`capacity` slots, the unused ones as usearch left them), little-endian `u32`s.
    fn links(&mut self, slot: usize, key: u64, level: usize, count: u32, list: &[u8]);
}

/// The shape of a checked graph, for a [`Visit`].
pub(super) struct Layout<'a> {
    pub matrix: &'a [u8],
    pub head: &'a [u8],
    pub connectivity: usize,
    pub connectivity_base: usize,
    pub entry: usize,
    pub levels: &'a [i16],
}

/// Checks `payload` (usearch's serialized index) against `expected`, and returns how its vectors
/// are stored; see the module docs.
#[cfg(test)]
fn check(payload: &[u8], expected: Expected) -> Result<Quantization, Refused> {
    check_visiting(payload, expected, None)
}

/// Checks `payload` (usearch's serialized index) against `expected`, and returns how its vectors
/// are stored (see the module docs), showing `visit` the graph as it goes; `visit` sees
/// everything before the check finishes, so its result is worth keeping only when this returns
/// `Ok`.
pub(super) fn check_visiting(
    payload: &[u8],
    expected: Expected,
    mut visit: Option<&mut dyn Visit>,
) -> Result<Quantization, Refused> {
    let mut r = Reader {
        bytes: payload,
        at: 0,
    };
    let (quantization, matrix, head) = vectors_and_head(&mut r, expected)?;
    graph(&mut r, expected, matrix, head, &mut visit)?;
    if r.left() != 0 {
        return refuse(format!("{} bytes follow the graph's last node", r.left()));
    }
    Ok(quantization)
}

/// The vector matrix and the 64-byte head; returns how the vectors are stored, the matrix and the
/// head.
fn vectors_and_head<'a>(
    r: &mut Reader<'a>,
    expected: Expected,
) -> Result<(Quantization, &'a [u8], &'a [u8]), Refused> {
    let rows = r.u32("the vector count")? as usize;
    let row_bytes = r.u32("the vector size")? as usize;
    if rows != expected.count {
        return refuse(format!(
            "the graph holds {rows} vectors, its header says {}",
            expected.count
        ));
    }
    if row_bytes != 4 * expected.dim && row_bytes != expected.dim {
        return refuse(format!(
            "vectors of {row_bytes} bytes; {} values make {} bytes (f32) or {} (i8)",
            expected.dim,
            4 * expected.dim,
            expected.dim
        ));
    }
    let matrix_bytes = rows
        .checked_mul(row_bytes)
        .filter(|&b| b <= r.left())
        .ok_or_else(|| {
            Refused(format!(
                "{rows} vectors of {row_bytes} bytes do not fit in the {} bytes left",
                r.left()
            ))
        })?;
    let matrix = r.take(matrix_bytes, "the vectors")?;

    let head = r.take(HEAD_BYTES, "usearch's head")?;
    if &head[..7] != MAGIC {
        return refuse("no usearch head after the vectors");
    }
    let u16_at = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let (major, minor) = (u16_at(7), u16_at(9));
    // Before 2.10 usearch numbered its scalar kinds differently.
    if major != 2 || minor < 10 {
        return refuse(format!(
            "written by usearch {major}.{minor}; this build reads usearch 2.10 and later 2.x"
        ));
    }
    let (metric, scalar, key, slot) = (head[13], head[14], head[15], head[16]);
    if metric != METRIC_IP {
        return refuse(format!(
            "metric code {metric}, expected the inner product ({METRIC_IP})"
        ));
    }
    let (quantization, scalar_bytes) = match scalar {
        SCALAR_F32 => (Quantization::F32, 4),
        SCALAR_I8 => (Quantization::I8, 1),
        other => return refuse(format!("scalar kind {other}, expected f32 or i8")),
    };
    if key != SCALAR_U64 || slot != SCALAR_U32 {
        return refuse(format!(
            "key kind {key} and slot kind {slot}, expected u64 keys and u32 slots"
        ));
    }
    let (present, deleted, dims, multi) = (u64_at(17), u64_at(25), u64_at(33), head[41]);
    if present != rows as u64 || deleted != 0 {
        return refuse(format!(
            "usearch's head says {present} vectors present and {deleted} deleted, the graph holds \
             {rows}"
        ));
    }
    if dims != expected.dim as u64 {
        return refuse(format!(
            "usearch's head says {dims} dimensions, expected {}",
            expected.dim
        ));
    }
    if multi != 0 {
        return refuse("several vectors per key; aisle stores one per product");
    }
    if row_bytes != expected.dim * scalar_bytes {
        return refuse(format!(
            "vectors of {row_bytes} bytes; {} values of {scalar_bytes} bytes make {}",
            expected.dim,
            expected.dim * scalar_bytes
        ));
    }
    if scalar == SCALAR_F32 {
        if let Some(i) = matrix
            .chunks_exact(4)
            .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
        {
            return refuse(format!(
                "vector {} holds a value that is not a finite number",
                i / expected.dim.max(1)
            ));
        }
    }
    Ok((quantization, matrix, head))
}

/// The proximity graph: header, levels, nodes.
fn graph(
    r: &mut Reader<'_>,
    expected: Expected,
    matrix: &[u8],
    head: &[u8],
    visit: &mut Option<&mut dyn Visit>,
) -> Result<(), Refused> {
    let count = expected.count;
    let size = r.u64("the graph's node count")?;
    let connectivity = r.u64("the graph's connectivity")?;
    let connectivity_base = r.u64("the graph's base connectivity")?;
    let max_level = r.u64("the graph's top level")?;
    let entry = r.u64("the graph's entry node")?;
    if size != count as u64 {
        return refuse(format!("the graph has {size} nodes for {count} vectors"));
    }
    if count == 0 {
        // usearch writes the header and nothing else for an empty graph.
        return Ok(());
    }
    if !(2..=MAX_CONNECTIVITY).contains(&connectivity)
        || !(connectivity..=MAX_CONNECTIVITY).contains(&connectivity_base)
    {
        return refuse(format!(
            "connectivity {connectivity} and base connectivity {connectivity_base}: each must be \
             2 to {MAX_CONNECTIVITY}, the base at least the other"
        ));
    }
    let levels_bytes = r.take(count * 2, "the node levels")?;
    let levels: Vec<i16> = levels_bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let top = levels.iter().copied().max().unwrap_or(0);
    if let Some(i) = levels.iter().position(|&l| l < 0) {
        return refuse(format!("node {i} is on level {}", levels[i]));
    }
    let entry = usize::try_from(entry)
        .ok()
        .filter(|&e| e < count)
        .ok_or_else(|| {
            Refused(format!(
                "the entry node {entry} is not one of {count} nodes"
            ))
        })?;
    if max_level != top as u64 || levels[entry] != top {
        return refuse(format!(
            "the graph's top level is {max_level} and its entry node's {}, its nodes reach {top}",
            levels[entry]
        ));
    }
    // Each node's bytes are in the buffer before anything is allocated from them.
    let (base_cap, cap) = (connectivity_base as usize, connectivity as usize);
    let node_bytes = |level: i16| 10 + (4 + 4 * base_cap) + level as usize * (4 + 4 * cap);
    let needed = levels
        .iter()
        .try_fold(0usize, |sum, &l| sum.checked_add(node_bytes(l)));
    if needed != Some(r.left()) {
        return refuse(format!(
            "{count} nodes at their levels need {} bytes, {} are left",
            needed.map_or_else(|| "more than addressable".into(), |n| n.to_string()),
            r.left()
        ));
    }
    if let Some(v) = visit {
        v.layout(Layout {
            matrix,
            head,
            connectivity: cap,
            connectivity_base: base_cap,
            entry,
            levels: &levels,
        });
    }
    let mut seen = vec![false; if expected.dense_keys { count } else { 0 }];
    let mut seen_any = std::collections::HashSet::new();
    for (node, &level) in levels.iter().enumerate() {
        let key = r.u64("a node's key")?;
        if expected.dense_keys {
            match usize::try_from(key).ok().filter(|&k| k < count) {
                Some(k) if !seen[k] => seen[k] = true,
                _ => {
                    return refuse(format!(
                        "node {node} has key {key}: keys must be the products 0..{count}, each once"
                    ))
                }
            }
        } else if u32::try_from(key).is_err() || !seen_any.insert(key) {
            return refuse(format!(
                "node {node} has key {key}: keys must be distinct product ids"
            ));
        }
        let own = r.i16("a node's level")?;
        if own != level {
            return refuse(format!(
                "node {node} says it is on level {own}, the level table says {level}"
            ));
        }
        for l in 0..=level {
            let capacity = if l == 0 { base_cap } else { cap };
            let n = r.u32("a neighbour count")? as usize;
            if n > capacity {
                return refuse(format!(
                    "node {node} has {n} neighbours on level {l}, at most {capacity} fit"
                ));
            }
            let list = r.take(4 * capacity, "a neighbour list")?;
            for b in list[..4 * n].chunks_exact(4) {
                let slot = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
                if slot >= count || levels[slot] < l {
                    return refuse(format!(
                        "node {node}'s neighbour {slot} on level {l} is not a node of that level"
                    ));
                }
            }
            if let Some(v) = visit {
                v.links(node, key, l as usize, n as u32, list);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::{HnswIndex, HnswParams};

    fn payload(n: usize, dim: usize, quantization: Quantization) -> Vec<u8> {
        let rows = crate::vector::testdata::low_rank(n, dim, 3, 0.1, 7);
        let params = HnswParams {
            quantization,
            ..HnswParams::default()
        };
        let index = HnswIndex::build(dim, &rows, &params).expect("build");
        index.payload_bytes("serialize").expect("serialize")
    }

    /// Offset of the graph header in a payload of `n` vectors of `row_bytes`.
    fn graph_at(n: usize, row_bytes: usize) -> usize {
        8 + n * row_bytes + HEAD_BYTES
    }

    #[test]
    fn graphs_aisle_writes_pass() {
        for q in [Quantization::F32, Quantization::I8] {
            for n in [1, 2, 300] {
                let p = payload(n, 8, q);
                assert_eq!(check(&p, Expected::file(8, n)), Ok(q), "{q:?} {n}");
            }
        }
    }

    #[test]
    fn crafted_graphs_are_refused_with_a_reason() {
        let (n, dim) = (300, 8);
        let good = payload(n, dim, Quantization::F32);
        let g = graph_at(n, dim * 4);
        let read_u64 = |p: &[u8], at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&p[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let (conn, base) = (
            read_u64(&good, g + 8) as usize,
            read_u64(&good, g + 16) as usize,
        );
        let levels_at = g + 40;
        let first_node = levels_at + 2 * n;
        let first_level = i16::from_le_bytes([good[levels_at], good[levels_at + 1]]);
        // The first node's level-0 neighbour count, and its first slot.
        let count_at = first_node + 10;
        let slot_at = count_at + 4;
        let node_bytes = 10 + 4 + 4 * base + first_level as usize * (4 + 4 * conn);
        let second_key_at = first_node + node_bytes;
        type Damage<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
        let cases: Vec<(&str, Damage, &str)> = vec![
            (
                "slot out of range",
                Box::new(move |p| {
                    p[slot_at..slot_at + 4].copy_from_slice(&5_000_000u32.to_le_bytes())
                }),
                "is not a node of that level",
            ),
            (
                "count over capacity",
                Box::new(move |p| {
                    p[count_at..count_at + 4].copy_from_slice(&100_000u32.to_le_bytes())
                }),
                "at most",
            ),
            (
                "node count from the header alone",
                Box::new(move |p| p[g..g + 8].copy_from_slice(&(1u64 << 50).to_le_bytes())),
                "nodes for 300 vectors",
            ),
            (
                "entry node out of range",
                Box::new(move |p| p[g + 32..g + 40].copy_from_slice(&(n as u64).to_le_bytes())),
                "entry node",
            ),
            (
                "negative level",
                Box::new(move |p| {
                    p[levels_at..levels_at + 2].copy_from_slice(&(-3i16).to_le_bytes())
                }),
                "level -3",
            ),
            (
                "duplicate key",
                Box::new(move |p| {
                    let first = p[first_node..first_node + 8].to_vec();
                    p[second_key_at..second_key_at + 8].copy_from_slice(&first)
                }),
                "each once",
            ),
            (
                "wrong vector size",
                Box::new(move |p| p[4..8].copy_from_slice(&31u32.to_le_bytes())),
                "bytes",
            ),
            (
                "not a number",
                Box::new(move |p| p[8..12].copy_from_slice(&f32::NAN.to_le_bytes())),
                "finite",
            ),
            (
                "connectivity 1",
                Box::new(move |p| p[g + 8..g + 16].copy_from_slice(&1u64.to_le_bytes())),
                "connectivity",
            ),
            ("cut", Box::new(move |p| p.truncate(p.len() - 1)), "bytes"),
            ("appended", Box::new(move |p| p.push(0)), "bytes"),
        ];
        for (name, damage, says) in cases {
            let mut p = good.clone();
            damage(&mut p);
            let got = check(&p, Expected::file(dim, n));
            match got {
                Err(Refused(reason)) => assert!(reason.contains(says), "{name}: {reason}"),
                Ok(_) => panic!("{name}: accepted"),
            }
        }
    }

    #[test]
    fn a_neighbour_below_its_level_is_refused() {
        // A neighbour listed on level 1 must itself reach level 1: usearch would read that node's
        // level-1 list, past the end of its bytes.
        let (n, dim) = (2000, 4);
        let mut p = payload(n, dim, Quantization::F32);
        let g = graph_at(n, dim * 4);
        let read_u64 = |p: &[u8], at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&p[at..at + 8]);
            u64::from_le_bytes(b) as usize
        };
        let (conn, base) = (read_u64(&p, g + 8), read_u64(&p, g + 16));
        let levels: Vec<i16> = p[g + 40..g + 40 + 2 * n]
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let ground = levels.iter().position(|&l| l == 0).expect("a level-0 node");
        let mut at = g + 40 + 2 * n;
        let mut patched = false;
        for &level in &levels {
            let level1_at = at + 10 + 4 + 4 * base;
            if level >= 1 && read_u32(&p, level1_at) > 0 {
                p[level1_at + 4..level1_at + 8].copy_from_slice(&(ground as u32).to_le_bytes());
                patched = true;
                break;
            }
            at += 10 + 4 + 4 * base + level as usize * (4 + 4 * conn);
        }
        assert!(patched, "no node with a level-1 neighbour in 2000");
        let got = check(&p, Expected::file(dim, n));
        assert!(
            matches!(&got, Err(Refused(r)) if r.contains("on level 1 is not a node of that level")),
            "{got:?}"
        );
    }

    fn read_u32(p: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
    }
}
