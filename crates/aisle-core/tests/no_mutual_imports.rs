//! Guard: no two files of a crate import each other.
//!
//! For every crate under the workspace's `crates/`, each `src/**/*.rs` file is scanned for the
//! module paths it names (`use crate::a::...`, `crate::a::X` in code, `super::a`, grouped
//! `{...}` imports included; comments and literals skipped). A path resolves to the deepest file
//! that exists for it (`crate::x::y` -> `src/x/y.rs`, `src/x/y/mod.rs`, else `src/x.rs`, ...).
//! The test fails, naming both files, when two files of one crate reference each other.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The `.rs` files under `dir`, recursively, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file relative to `src/`: `lib.rs`/`main.rs` -> `[]`, `a/mod.rs` and
/// `a.rs` -> `[a]`, `a/b.rs` -> `[a, b]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut segs: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let last = segs.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !(stem == "mod" || (segs.is_empty() && (stem == "lib" || stem == "main"))) {
        segs.push(stem.to_owned());
    }
    segs
}

/// The source with comments and the insides of string and char literals blanked out (newlines
/// and lengths kept), so that braces and paths in them are not seen.
fn strip(src: &str) -> Vec<char> {
    let c: Vec<char> = src.chars().collect();
    let mut out = c.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for ch in out.iter_mut().take(to.min(c.len())).skip(from) {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
    };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(k).copied().unwrap_or('\0');
        if c[i] == '/' && at(i + 1) == '/' {
            let end = (i..c.len()).find(|&k| c[k] == '\n').unwrap_or(c.len());
            blank(&mut out, i, end);
            i = end;
        } else if c[i] == '/' && at(i + 1) == '*' {
            let (mut depth, mut k) = (1, i + 2);
            while k < c.len() && depth > 0 {
                if c[k] == '/' && at(k + 1) == '*' {
                    depth += 1;
                    k += 2;
                } else if c[k] == '*' && at(k + 1) == '/' {
                    depth -= 1;
                    k += 2;
                } else {
                    k += 1;
                }
            }
            blank(&mut out, i, k);
            i = k;
        } else if c[i] == 'r'
            && (at(i + 1) == '"' || at(i + 1) == '#')
            && (i == 0 || !ident(c[i - 1]))
        {
            // Raw string r"..." / r#"..."#.
            let mut k = i + 1;
            let mut hashes = 0;
            while at(k) == '#' {
                hashes += 1;
                k += 1;
            }
            if at(k) != '"' {
                i += 1;
                continue;
            }
            k += 1;
            loop {
                if k >= c.len() {
                    break;
                }
                if c[k] == '"' && (1..=hashes).all(|h| at(k + h) == '#') {
                    k += 1 + hashes;
                    break;
                }
                k += 1;
            }
            blank(&mut out, i, k);
            i = k;
        } else if c[i] == '"' {
            let mut k = i + 1;
            while k < c.len() && c[k] != '"' {
                k += if c[k] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i, k + 1);
            i = k + 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if at(i + 1) == '\\' {
                let end = (i + 2..c.len()).find(|&k| c[k] == '\'').unwrap_or(c.len());
                blank(&mut out, i, end + 1);
                i = end + 1;
            } else if at(i + 2) == '\'' {
                blank(&mut out, i, i + 3);
                i += 3;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Parser of the paths after `crate::` / `super::`: a use tree (`a::b`, `a::{b, c::d}`, `*`).
struct Paths<'a> {
    c: &'a [char],
    i: usize,
}

impl Paths<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.c.len() && self.c[self.i].is_whitespace() {
            self.i += 1;
        }
    }

    fn ident(&mut self) -> Option<String> {
        self.skip_ws();
        let start = self.i;
        while self.i < self.c.len() && (self.c[self.i].is_alphanumeric() || self.c[self.i] == '_') {
            self.i += 1;
        }
        (self.i > start).then(|| self.c[start..self.i].iter().collect())
    }

    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        let n = s.chars().count();
        if self.i + n <= self.c.len() && self.c[self.i..self.i + n].iter().copied().eq(s.chars()) {
            self.i += n;
            true
        } else {
            false
        }
    }

    /// Appends to `out` every path of the tree here, each prefixed by `prefix`.
    fn tree(&mut self, prefix: &[String], out: &mut Vec<Vec<String>>) {
        if self.eat("{") {
            loop {
                if self.eat("}") {
                    break;
                }
                let before = self.i;
                self.tree(prefix, out);
                self.eat(",");
                if self.i == before {
                    break; // Not a use tree after all; give up on this group.
                }
            }
        } else if self.eat("*") {
            out.push(prefix.to_vec());
        } else if let Some(id) = self.ident() {
            let mut p = prefix.to_vec();
            if id == "super" {
                p.pop();
            } else if id != "self" {
                p.push(id);
            }
            if self.eat("::") {
                self.tree(&p, out);
            } else {
                out.push(p);
            }
        } else {
            out.push(prefix.to_vec());
        }
    }
}

/// The module paths (from the crate root) that a file names.
fn referenced_paths(src: &str, module: &[String]) -> Vec<Vec<String>> {
    let c = strip(src);
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let word_at = |i: usize, w: &str| {
        let n = w.chars().count();
        i + n <= c.len()
            && c[i..i + n].iter().copied().eq(w.chars())
            && (i == 0 || !(ident(c[i - 1]) || c[i - 1] == '$'))
            && !c.get(i + n).is_some_and(|&ch| ident(ch))
    };
    let mut out = Vec::new();
    // Inline modules (`mod tests { ... }`): (name, brace depth outside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            _ => {}
        }
        if word_at(i, "mod") {
            let mut p = Paths { c: &c, i: i + 3 };
            if let Some(name) = p.ident() {
                if p.eat("{") {
                    inline.push((name, depth));
                    depth += 1;
                    i = p.i;
                    continue;
                }
            }
        }
        let here = || -> Vec<String> {
            let mut m = module.to_vec();
            m.extend(inline.iter().map(|(n, _)| n.clone()));
            m
        };
        let start = if word_at(i, "crate") {
            Some((i + 5, Vec::new()))
        } else if word_at(i, "super") {
            let mut m = here();
            m.pop();
            Some((i + 5, m))
        } else {
            None
        };
        if let Some((after, base)) = start {
            let mut p = Paths { c: &c, i: after };
            if p.eat("::") {
                p.tree(&base, &mut out);
                i = p.i;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// The file a module path lives in: the deepest of its prefixes that has one.
fn resolve(src_dir: &Path, path: &[String]) -> Option<PathBuf> {
    (1..=path.len()).rev().find_map(|k| {
        let dir: PathBuf = path[..k].iter().collect();
        let flat = src_dir.join(&dir).with_extension("rs");
        let nested = src_dir.join(&dir).join("mod.rs");
        [flat, nested].into_iter().find(|f| f.is_file())
    })
}

/// For each file of the crate (relative to the crate), the other files of it that it names.
fn graph(crate_dir: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let src_dir = crate_dir.join("src");
    let mut files = Vec::new();
    rust_files(&src_dir, &mut files);
    let mut g = BTreeMap::new();
    for file in files {
        let rel = file
            .strip_prefix(&src_dir)
            .expect("under src")
            .to_path_buf();
        if rel.starts_with("bin") {
            continue; // Separate binary crates.
        }
        let text = fs::read_to_string(&file).expect("readable source");
        let deps: BTreeSet<PathBuf> = referenced_paths(&text, &module_of(&rel))
            .iter()
            .filter_map(|p| resolve(&src_dir, p))
            .filter(|f| *f != file)
            .map(|f| f.strip_prefix(crate_dir).expect("in crate").to_path_buf())
            .collect();
        let key = file
            .strip_prefix(crate_dir)
            .expect("in crate")
            .to_path_buf();
        g.insert(key, deps);
    }
    g
}

fn mutual_pairs(crate_dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let g = graph(crate_dir);
    let mut pairs = Vec::new();
    for (a, deps) in &g {
        for b in deps {
            if a < b && g.get(b).is_some_and(|d| d.contains(a)) {
                pairs.push((a.clone(), b.clone()));
            }
        }
    }
    pairs
}

#[test]
fn no_two_files_of_a_crate_import_each_other() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/")
        .to_path_buf();
    let mut dirs: Vec<PathBuf> = fs::read_dir(&crates)
        .expect("crates/ readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("src").is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() > 1, "found no crates under {}", crates.display());
    let mut cycles = Vec::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        for (a, b) in mutual_pairs(dir) {
            cycles.push(format!(
                "crates/{name}/{} <-> crates/{name}/{}",
                a.display(),
                b.display()
            ));
        }
    }
    assert!(
        cycles.is_empty(),
        "files that import each other (move the shared item to the module that owns it):\n  {}",
        cycles.join("\n  ")
    );
}

#[test]
fn the_scanner_sees_grouped_nested_and_inline_paths() {
    let src = r#"
        use crate::{a::X, b::{c::Y, Z}};
        // use crate::commented::Out;
        fn f() { let s = "crate::in_string::No"; let t = crate::d::e::f(); }
        #[cfg(test)]
        mod tests {
            use super::*;
            use super::super::g;
        }
    "#;
    let got = referenced_paths(src, &["m".to_owned(), "n".to_owned()]);
    let got: Vec<String> = got.iter().map(|p| p.join("::")).collect();
    assert_eq!(got, ["a::X", "b::c::Y", "b::Z", "d::e::f", "m::n", "m::g"]);
    assert_eq!(module_of(Path::new("a/mod.rs")), ["a"]);
    assert_eq!(module_of(Path::new("a/b.rs")), ["a", "b"]);
    assert!(module_of(Path::new("lib.rs")).is_empty());
}
