//! The `aisle` binary end to end: exit codes, messages and the stats of every bundled dataset.

#[path = "../../aisle-search/tests/support/qdrant_node.rs"]
mod qdrant_node;

use std::path::Path;
use std::process::{Command, Output};

use aisle_fixtures::real_data;

fn aisle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aisle"))
        .args(args)
        .output()
        .expect("run aisle")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn small_dataset(dir: &Path) {
    std::fs::write(
        dir.join("taxonomy.csv"),
        "id,parent,name\nel,,Electronics\ntv,el,TVs\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("products.csv"),
        "id,title,category\np1,LG OLED TV,tv\np2,Samsung QLED TV,tv\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("interactions.csv"),
        "user,product,kind,time,query\nu1,p1,click,1,oled tv\nu1,p2,click,2,qled\nu2,p9,click,3,tv\n",
    )
    .expect("write");
}

#[test]
fn bad_input_exits_non_zero_with_location() {
    let d = tempfile::tempdir().expect("tempdir");
    small_dataset(d.path());
    let path = d.path().to_str().expect("utf-8 path");
    let out = aisle(&["dataset", "stats", path]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("interactions.csv:4: field `product`: unknown product id `p9`"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn lenient_prints_counts_per_reason() {
    let d = tempfile::tempdir().expect("tempdir");
    small_dataset(d.path());
    let path = d.path().to_str().expect("utf-8 path");
    let out = aisle(&["dataset", "stats", path, "--lenient"]);
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("lenient import skipped or merged 1 rows"),
        "{err}"
    );
    assert!(err.contains("unknown product id"), "{err}");
    assert!(stdout.contains("products"), "{stdout}");
}

/// `products.csv` beside `products.jsonl`: the JSONL was ignored without a word.
#[test]
fn a_table_in_both_csv_and_jsonl_is_refused() {
    let d = tempfile::tempdir().expect("tempdir");
    small_dataset(d.path());
    std::fs::write(
        d.path().join("products.jsonl"),
        "{\"id\": \"p3\", \"title\": \"Sony TV\", \"category\": \"tv\"}\n",
    )
    .expect("write");
    let out = aisle(&["dataset", "stats", d.path().to_str().expect("utf-8 path")]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("both products.csv and products.jsonl are here"),
        "{err}"
    );
}

/// A taxonomy cycle or orphan was printed twice ("X: X"), without `file:line`.
#[test]
fn taxonomy_errors_print_once_with_file_and_line() {
    let d = tempfile::tempdir().expect("tempdir");
    small_dataset(d.path());
    for (taxonomy, want) in [
        (
            "id,parent,name\nel,tv,Electronics\ntv,el,TVs\n",
            "taxonomy.csv:2: category `el`",
        ),
        (
            "id,parent,name\nel,,Electronics\ntv,zz,TVs\n",
            "taxonomy.csv:3: category `tv`",
        ),
    ] {
        std::fs::write(d.path().join("taxonomy.csv"), taxonomy).expect("write");
        let out = aisle(&["dataset", "stats", d.path().to_str().expect("utf-8 path")]);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{err}");
        assert_eq!(
            err.matches("category `").count(),
            1,
            "printed more than once: {err}"
        );
    }
}

#[test]
fn unknown_dataset_name_is_a_clear_error() {
    let out = aisle(&["dataset", "stats", "no_such_dataset_here"]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("neither a dataset name"), "{err}");
}

fn stats_json(name: &str) -> serde_json::Value {
    let out = aisle(&["dataset", "stats", name, "--json"]);
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{name}: {err}");
    serde_json::from_str(&stdout).expect("stats JSON")
}

#[test]
fn stats_bestbuy_xbox() {
    let (Some(_), Some(_)) = (real_data("bestbuy_xbox"), real_data("bestbuy_categories")) else {
        return;
    };
    let s = stats_json("bestbuy_xbox");
    assert_eq!(s["products"], 437);
    assert_eq!(s["interactions"], 42_065);
    let event = &s["splits"][0];
    assert_eq!(event["name"], "event");
    let test = event["test_queries"].as_u64().expect("count");
    assert!(
        (4_200..=4_210).contains(&test),
        "10% of 42,065 events: {test}"
    );
    let unseen = event["test_queries_unseen_in_train"]
        .as_u64()
        .expect("count");
    // The reference split of these logs had 8% of test events with an unseen query.
    assert!((150..700).contains(&unseen), "{unseen}");
    let disjoint = &s["splits"][1];
    assert_eq!(disjoint["name"], "query_disjoint");
    assert_eq!(
        disjoint["test_queries"],
        disjoint["test_queries_unseen_in_train"]
    );
}

#[test]
fn stats_instacart() {
    if real_data("instacart").is_none() {
        return;
    }
    let s = stats_json("instacart");
    assert_eq!(s["products"], 49_688);
    assert_eq!(s["users"], 593);
    assert_eq!(s["interactions_by_kind"][3][1], 150_000);
    let split = &s["splits"][0];
    assert_eq!(split["name"], "leave_last_order_out");
    assert!(split["test_queries"].as_u64().expect("count") > 1_000);
    assert!(s["notes"].to_string().contains("built from the taxonomy"));
}

#[test]
fn stats_flipkart_and_categories() {
    if real_data("flipkart_sample").is_some() {
        let s = stats_json("flipkart_sample");
        assert_eq!(s["products"], 1_002);
        assert_eq!(s["max_depth"], 7);
        assert_eq!(s["splits"].as_array().map(Vec::len), Some(0));
    }
    if real_data("bestbuy_categories").is_some() {
        let s = stats_json("bestbuy_categories");
        assert_eq!(s["taxonomy_nodes"], 4_724);
        assert_eq!(s["max_depth"], 6);
    }
}

#[test]
fn stats_table_output_is_aligned_text() {
    let d = tempfile::tempdir().expect("tempdir");
    small_dataset(d.path());
    std::fs::write(
        d.path().join("interactions.csv"),
        "user,product,kind,time,query\nu1,p1,click,1,oled tv\nu1,p2,click,2,qled\n",
    )
    .expect("write");
    let out = aisle(&["dataset", "stats", d.path().to_str().expect("path")]);
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(stdout.contains("taxonomy by depth"), "{stdout}");
    assert!(stdout.contains("products per non-empty leaf"), "{stdout}");
    assert!(stdout.contains("splits"), "{stdout}");
}

/// A generated world small enough to train on in a second.
fn tiny_world(dir: &Path) -> String {
    let world = dir.join("world");
    let w = world.to_str().expect("utf-8 path").to_owned();
    let out = aisle(&[
        "generate",
        "--products",
        "400",
        "--users",
        "40",
        "--sessions",
        "400",
        "--out",
        &w,
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    w
}

/// `aisle train` for 20 small steps on `world` into `out`, with `extra` flags.
fn train_tiny(world: &str, out: &str, extra: &[&str]) -> Output {
    train_tiny_steps(world, out, "20", extra)
}

/// `aisle train` for `steps` small steps on `world` into `out`, with `extra` flags.
fn train_tiny_steps(world: &str, out: &str, steps: &str, extra: &[&str]) -> Output {
    let mut args = tiny_train_args(world, out, steps);
    args.push("--quiet");
    args.extend_from_slice(extra);
    aisle(&args)
}

/// The arguments of a small `aisle train` run (no `--quiet`).
fn tiny_train_args<'a>(world: &'a str, out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--dataset",
        world,
        "--steps",
        steps,
        "--batch-size",
        "32",
        "--dim",
        "16",
        "--buckets-log2",
        "14",
        "--out",
        out,
    ]
}

/// `aisle train --resume`, in the documented form with no value, continues the run in `--out`
/// from its checkpoint (it exited 2: "a value is required"), and the temporary file a killed
/// write left beside the model is removed by the next write of it.
#[test]
fn bare_resume_continues_from_the_checkpoint_in_out_and_clears_killed_writes() {
    let d = tempfile::tempdir().expect("tempdir");
    let world = tiny_world(d.path());
    let run = d.path().join("run");
    let run_s = run.to_str().expect("utf-8 path");
    let out = train_tiny(&world, run_s, &["--checkpoint-every", "10"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(run.join("checkpoint.aisle").exists(), "{stdout}");
    // What `kill -9` during a model write by process 0 (never a live pid) would leave.
    let leftover = run.join(".model.aisle.aisle-tmp-0");
    std::fs::write(&leftover, vec![7u8; 4096]).expect("leftover");
    let resumed = train_tiny_steps(
        &world,
        run_s,
        "30",
        &["--checkpoint-every", "10", "--resume"],
    );
    let (stdout, stderr) = text(&resumed);
    assert!(resumed.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("30 (10 in this run)"), "{stdout}");
    assert!(
        !leftover.exists(),
        "the killed write's temporary file was left"
    );
}

#[test]
fn train_writes_model_and_log_and_encode_exports_npy_and_jsonl() {
    let d = tempfile::tempdir().expect("tempdir");
    let world = tiny_world(d.path());
    let run = d.path().join("run");
    let run_s = run.to_str().expect("utf-8 path");
    let out = train_tiny(&world, run_s, &["--eval-every", "10"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("validation R@10      0:"), "{stdout}");
    assert!(run.join("model.aisle").is_file());
    let log = std::fs::read_to_string(run.join("train_log.jsonl")).expect("log");
    assert!(log.lines().count() >= 4, "{log}");

    let model = run.join("model.aisle");
    let model_s = model.to_str().expect("utf-8 path");

    let out = aisle(&[
        "eval",
        "--dataset",
        &world,
        "--model",
        &format!("tbhns={model_s}"),
        "--resamples",
        "50",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for row in [
        "BM25",
        "popularity",
        "query memorisation",
        "tbhns",
        "unseen queries",
    ] {
        assert!(stdout.contains(row), "{row} missing:\n{stdout}");
    }
    let out = aisle(&["eval", "--dataset", &world, "--no-baselines"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("nothing to evaluate"),
        "{:?}",
        text(&out)
    );
    let queries = d.path().join("q.txt");
    std::fs::write(&queries, "oled tv\n\nrunning shoes\nkids jacket\n").expect("write");
    let npy = d.path().join("q.npy");
    let out = aisle(&[
        "encode",
        "--model",
        model_s,
        "--queries",
        queries.to_str().expect("utf-8"),
        "--out",
        npy.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let bytes = std::fs::read(&npy).expect("npy");
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0, "data is 64-byte aligned");
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).expect("ascii header");
    assert!(header.contains("'shape': (3, 16)"), "{header}");
    assert_eq!(bytes.len(), 10 + header_len + 3 * 16 * 4);
    let ids = std::fs::read_to_string(d.path().join("q.ids.txt")).expect("ids");
    assert_eq!(ids, "oled tv\nrunning shoes\nkids jacket\n");

    let jsonl = d.path().join("catalog.jsonl");
    let out = aisle(&[
        "encode",
        "--model",
        model_s,
        "--dataset",
        &world,
        "--out",
        jsonl.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .expect("jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 400);
    let v: Vec<f64> = lines[0]["vector"]
        .as_array()
        .expect("vector")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "unit vectors, got norm {norm}");
}

/// The false-negative rule's count is put in proportion, and a sampler whose pool runs out
/// is warned about (1,013,527 removed candidates were printed with nothing to say what that
/// meant).
#[test]
fn train_says_what_the_false_negative_rule_removed_and_warns_on_fallbacks() {
    let d = tempfile::tempdir().expect("tempdir");
    let world = tiny_world(d.path());
    let out = train_tiny(
        &world,
        d.path().join("leaf").to_str().expect("utf-8 path"),
        &["--sampler", "taxonomy:leaf=1,sibling=0,cousin=0"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("candidates drawn (") && stdout.contains("random fallbacks"),
        "{stdout}"
    );
    assert!(stderr.contains("warning: the taxonomy(leaf=1,sibling=0,cousin=0,pool=interacted) sampler could not fill its hard negatives"), "{stderr}");
    let out = train_tiny(
        &world,
        d.path().join("random").to_str().expect("utf-8 path"),
        &["--sampler", "random"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("random fallbacks"), "{stdout}");
    assert!(!stderr.contains("could not fill"), "{stderr}");
}

/// A default output folder is relative to the working directory (run from a checkout, it
/// lands inside it): the command says where it went, in full, and how to choose.
#[test]
fn default_output_folders_are_announced_with_their_absolute_path() {
    let d = tempfile::tempdir().expect("tempdir");
    let world = tiny_world(d.path());
    let out = Command::new(env!("CARGO_BIN_EXE_aisle"))
        .current_dir(d.path())
        .args([
            "train",
            "--dataset",
            &world,
            "--steps",
            "5",
            "--batch-size",
            "32",
            "--dim",
            "16",
            "--buckets-log2",
            "14",
            "--quiet",
        ])
        .output()
        .expect("aisle train");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let root = std::fs::canonicalize(d.path()).expect("canonical");
    let announced = stderr
        .lines()
        .find(|l| l.starts_with("run folder: "))
        .unwrap_or_else(|| panic!("no announcement:\n{stderr}"));
    assert!(
        announced.contains(&format!("{}/out/train/", root.display()))
            && announced
                .ends_with("(the default, under the working directory; --out DIR to choose)"),
        "{announced}"
    );
    let model = stdout
        .lines()
        .find_map(|l| l.strip_prefix("model"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no model line:\n{stdout}"));
    assert!(
        Path::new(model).is_absolute() && Path::new(model).is_file(),
        "{model}"
    );
}

#[test]
fn train_refuses_bad_configs_and_corrupt_models_clearly() {
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = d.path().join("bad.toml");
    std::fs::write(&cfg, "batch_size = 64\nnegativs = 3\n").expect("write");
    let out = aisle(&["train", "--config", cfg.to_str().expect("utf-8")]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("bad.toml") && err.contains("negativs"),
        "{err}"
    );

    // A sampler spec is parsed with the flags: a usage error (exit 2) naming the flag.
    let out = aisle(&["train", "--sampler", "taxonomy:leef=1"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("leef") && err.contains("--sampler"), "{err}");

    let model = d.path().join("model.aisle");
    std::fs::write(&model, b"AISLEMDL not really a model").expect("write");
    let out = aisle(&[
        "encode",
        "--model",
        model.to_str().expect("utf-8"),
        "--queries",
        cfg.to_str().expect("utf-8"),
        "--out",
        d.path().join("x.npy").to_str().expect("utf-8"),
    ]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("model.aisle"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Reads the child's stderr until a line contains `needle` (bounded by `wait`); returns it.
fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    wait: std::time::Duration,
) -> Option<String> {
    let deadline = std::time::Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Kills a child process (by PID) when dropped, so that a failed assertion leaves no server.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `aisle serve ARGS --addr 127.0.0.1:0`, once it listens: the process, its base URL and its
/// stderr lines.
fn spawn_serve(args: &[&str]) -> (KillOnDrop, String, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let child = Command::new(env!("CARGO_BIN_EXE_aisle"))
        .arg("serve")
        .args(args)
        .args(["--addr", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start aisle serve");
    let mut child = KillOnDrop(child);
    let stderr = child.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let Some(line) = wait_for_line(&rx, "listening on", std::time::Duration::from_secs(60)) else {
        panic!("aisle serve did not start listening");
    };
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("an address")
        .trim_end_matches('/')
        .to_owned();
    (child, url, rx)
}

/// Starts `aisle ARGS`, waits for a temporary file of `artifact` (`.ARTIFACT.aisle-tmp-PID`) to
/// appear in `dir` while `ready` holds, and kills the process with SIGKILL then. Returns
/// `Some(true)` when the temporary file was still there after the kill (the write was cut),
/// `Some(false)` when it was renamed into place first, `None` when the process ended before
/// a write was seen.
fn kill_mid_write(
    args: &[&str],
    dir: &Path,
    artifact: &str,
    ready: impl Fn() -> bool,
) -> Option<bool> {
    let prefix = format!(".{artifact}.aisle-tmp-");
    let tmp_in_dir = || {
        std::fs::read_dir(dir).ok().and_then(|entries| {
            entries.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
            })
        })
    };
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_aisle"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start aisle"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        if child.0.try_wait().expect("try_wait").is_some() {
            return None;
        }
        if ready() {
            if let Some(tmp) = tmp_in_dir() {
                child.0.kill().expect("SIGKILL");
                let status = child.0.wait().expect("wait");
                assert!(!status.success(), "the killed process exited with {status}");
                return Some(tmp.exists());
            }
        }
    }
    panic!("aisle {args:?} ran for 2 minutes");
}

/// `kill -9` while training writes a checkpoint, while it writes the model, and while
/// `aisle index` writes an index: the previous artifact stays valid (each resume starts from
/// the checkpoint the cut write was replacing), the run resumed after every kill ends
/// byte-identical to an uninterrupted one, and the saved index still serves. The probe of
/// issue 19 found this true with 21 kills; this test keeps it true.
#[test]
fn killed_mid_write_training_resumes_to_the_same_model_and_artifacts_stay_valid() {
    let d = tempfile::tempdir().expect("tempdir");
    let world = tiny_world(d.path());
    let flags = ["--checkpoint-every", "10"];
    let reference = d.path().join("reference");
    let out = train_tiny_steps(
        &world,
        reference.to_str().expect("utf-8 path"),
        "120",
        &flags,
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let want = std::fs::read(reference.join("model.aisle")).expect("reference model");

    let run = d.path().join("killed");
    let run_s = run.to_str().expect("utf-8 path");
    let checkpoint = run.join("checkpoint.aisle");
    let args = |resume: bool| {
        let mut a = vec![
            "train",
            "--dataset",
            &world,
            "--steps",
            "120",
            "--batch-size",
            "32",
            "--dim",
            "16",
            "--buckets-log2",
            "14",
            "--quiet",
            "--out",
            run_s,
        ];
        a.extend_from_slice(&flags);
        if resume {
            a.push("--resume");
        }
        a
    };
    // Two kills while a checkpoint replaces an earlier one, then one while the model is
    // written; each followed by a resume from whatever the kill left.
    let (mut kills, mut cut) = (0, 0);
    for (artifact, attempts) in [
        ("checkpoint.aisle", 40),
        ("checkpoint.aisle", 40),
        ("model.aisle", 40),
    ] {
        for _ in 0..attempts {
            if run.join("model.aisle").exists() {
                std::fs::remove_dir_all(&run).expect("start the killed run again");
            }
            let resume = checkpoint.exists();
            match kill_mid_write(&args(resume), &run, artifact, || {
                artifact == "model.aisle" || checkpoint.exists()
            }) {
                None => continue,
                Some(was_cut) => {
                    kills += 1;
                    cut += usize::from(was_cut);
                    break;
                }
            }
        }
    }
    let out = aisle(&args(checkpoint.exists()));
    assert!(out.status.success(), "{:?}", text(&out));
    println!("{kills} kills, {cut} of them mid-write (the temporary file left behind)");
    assert_eq!(kills, 3, "a write was never caught in 40 runs");
    assert!(cut >= 1, "no kill landed mid-write");
    let got = std::fs::read(run.join("model.aisle")).expect("model");
    assert!(
        got == want,
        "the resumed model differs from the uninterrupted one"
    );
    assert!(
        std::fs::read_dir(&run)
            .expect("dir")
            .filter_map(Result::ok)
            .all(|e| !e.file_name().to_string_lossy().contains(".aisle-tmp-")),
        "a killed write's temporary file was left after the next write"
    );

    // An index rewritten and killed mid-write: the previous one is left whole and serves.
    let model = reference.join("model.aisle");
    let model_s = model.to_str().expect("utf-8 path");
    let index_dir = d.path().join("index");
    let index = index_dir.join("index.usearch");
    let index_s = index.to_str().expect("utf-8 path");
    let index_args = [
        "index",
        "--dataset",
        &world,
        "--model",
        model_s,
        "--out",
        index_s,
    ];
    let out = aisle(&index_args);
    assert!(out.status.success(), "{:?}", text(&out));
    let before = std::fs::read(&index).expect("index");
    let index_cut = (0..40)
        .find_map(|_| kill_mid_write(&index_args, &index_dir, "index.usearch", || true))
        .expect("the index write was never caught in 40 runs");
    println!("index: killed, mid-write: {index_cut}");
    let after = std::fs::read(&index).expect("index after the kill");
    if index_cut {
        assert!(after == before, "the previous index was not left whole");
    }
    let (_child, url, _rx) =
        spawn_serve(&["--dataset", &world, "--model", model_s, "--index", index_s]);
    let mut r = ureq::get(format!("{url}/healthz")).call().expect("healthz");
    let health: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("JSON");
    assert_eq!(health["index"], "hnsw (saved)");
}

/// A model trained on one world is refused by `eval`, `index`, `serve` and a reload on
/// another world (it was only warned about: the synthetic model evaluated on Best Buy scored
/// R@10 0.597 instead of 0.911); `--allow-other-dataset` lets it through and every answer says
/// so.
#[test]
fn a_model_trained_on_another_dataset_is_refused_unless_allowed_and_then_stated() {
    let d = tempfile::tempdir().expect("tempdir");
    let world = tiny_world(d.path());
    let other = d.path().join("other");
    let other_s = other.to_str().expect("utf-8 path").to_owned();
    let out = aisle(&[
        "generate",
        "--products",
        "400",
        "--users",
        "40",
        "--sessions",
        "400",
        "--seed",
        "7",
        "--out",
        &other_s,
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let run = d.path().join("run");
    let run_s = run.to_str().expect("utf-8 path");
    let out = train_tiny(&world, run_s, &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    let model = run.join("model.aisle");
    let model_s = model.to_str().expect("utf-8 path");

    let refused = |out: &Output| {
        let (stdout, stderr) = text(out);
        assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
        assert!(
            stderr.contains("dataset digest") && stderr.contains("--allow-other-dataset"),
            "{stderr}"
        );
    };
    let eval = |dataset: &str, extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--dataset",
            dataset,
            "--model",
            model_s,
            "--no-baselines",
            "--resamples",
            "20",
        ];
        args.extend_from_slice(extra);
        aisle(&args)
    };
    let out = eval(&world, &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("--allow-other-dataset"), "{stdout}");
    refused(&eval(&other_s, &[]));
    let out = eval(&other_s, &["--allow-other-dataset"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("was trained on") && stdout.contains("allowed by --allow-other-dataset"),
        "the report does not say so:\n{stdout}"
    );
    let index = d.path().join("index.usearch");
    refused(&aisle(&[
        "index",
        "--dataset",
        &other_s,
        "--model",
        model_s,
        "--out",
        index.to_str().expect("utf-8 path"),
    ]));
    assert!(!index.exists());
    let out = Command::new(env!("CARGO_BIN_EXE_aisle"))
        .args([
            "serve",
            "--dataset",
            &other_s,
            "--model",
            model_s,
            "--addr",
            "127.0.0.1:0",
        ])
        .output()
        .expect("aisle serve");
    refused(&out);

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |url: &str| -> (u16, serde_json::Value) {
        let mut r = agent.get(url).call().expect("GET");
        let body = r.body_mut().read_to_string().expect("body");
        (
            r.status().as_u16(),
            serde_json::from_str(&body).expect("JSON"),
        )
    };
    let mentions_other = |v: &serde_json::Value| {
        v["warnings"].as_array().is_some_and(|w| {
            w.iter().any(|w| {
                w.as_str()
                    .is_some_and(|w| w.contains("allowed by --allow-other-dataset"))
            })
        })
    };
    {
        let (_child, url, _rx) = spawn_serve(&[
            "--dataset",
            &other_s,
            "--model",
            model_s,
            "--allow-other-dataset",
        ]);
        let (status, health) = get(&format!("{url}/healthz"));
        assert_eq!(status, 200);
        assert!(mentions_other(&health), "{health}");
        let (status, answer) = get(&format!("{url}/search?q=shoes&k=3"));
        assert_eq!(status, 200);
        assert!(mentions_other(&answer), "{answer}");
    }

    // Served on its own world, then the file replaced by a model of the other world: the
    // reload is refused and the model in service keeps answering, without the warning.
    let (_child, url, _rx) = spawn_serve(&["--dataset", &world, "--model", model_s]);
    let (status, answer) = get(&format!("{url}/search?q=shoes&k=3"));
    assert_eq!(status, 200);
    assert_eq!(answer["warnings"], serde_json::json!([]), "{answer}");
    let run2 = d.path().join("run2");
    let out = train_tiny(&other_s, run2.to_str().expect("utf-8 path"), &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    std::fs::copy(run2.join("model.aisle"), &model).expect("replace the model");
    let mut r = agent
        .post(format!("{url}/admin/reload"))
        .send("")
        .expect("reload");
    let body = r.body_mut().read_to_string().expect("body");
    assert_eq!(r.status().as_u16(), 500, "{body}");
    assert!(body.contains("dataset digest"), "{body}");
    let (status, _) = get(&format!("{url}/search?q=shoes&k=3"));
    assert_eq!(status, 200);
}

#[test]
fn index_check_hybrid_eval_and_serve_run_end_to_end() {
    let d = tempfile::tempdir().expect("tempdir");
    let world = tiny_world(d.path());
    let run = d.path().join("run");
    let run_s = run.to_str().expect("utf-8 path");
    // A personalized model with its re-ranking head, fitted on validation and written beside it.
    let out = train_tiny(&world, run_s, &["--personalized", "--rerank"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // One fit (the ablation is `aisle experiment`'s), with its in-sample figure, the run's
    // total and its peak memory; the head's progress went to stderr.
    assert!(stdout.contains("fitted on"), "{stdout}");
    assert!(stdout.contains("with the head (in-sample"), "{stdout}");
    assert!(!stdout.contains("held-out R@10"), "{stdout}");
    assert!(stdout.contains("re-ranking head "), "{stdout}");
    assert!(stdout.contains("peak memory"), "{stdout}");
    assert!(!stderr.contains("re-ranking head:"), "--quiet: {stderr}");
    assert!(run.join("rerank.json").is_file());
    // A personalized model whose metadata lost `personalize.history` is refused, naming the
    // field, instead of being read with a guessed window.
    let (m, mut meta) = aisle_model::artifact::load(&run.join("model.aisle")).expect("model");
    assert!(m.personal.is_some());
    meta["personalize"]
        .as_object_mut()
        .expect("personalize")
        .remove("history");
    let stripped = d.path().join("stripped.aisle");
    aisle_model::artifact::save(&m, &meta, &stripped).expect("save");
    let out = aisle(&[
        "eval",
        "--dataset",
        &world,
        "--no-baselines",
        "--model",
        stripped.to_str().expect("utf-8 path"),
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("personalize.history"), "{stderr}");
    // Without --quiet, every phase of the head says when it is done (and, when it lasts, how
    // long it has left).
    let loud = d.path().join("loud");
    let loud_s = loud.to_str().expect("utf-8 path");
    let mut args = tiny_train_args(&world, loud_s, "20");
    args.extend(["--personalized", "--rerank"]);
    let out = aisle(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("loading dataset"), "{stderr}");
    assert!(
        stderr.contains("re-ranking head: candidates of"),
        "{stderr}"
    );
    assert!(
        stderr.contains("re-ranking head: 1 fit of 600 steps: fitted in"),
        "{stderr}"
    );
    let model = run.join("model.aisle");
    let model_s = model.to_str().expect("utf-8 path");
    let out = aisle(&[
        "serve",
        "--dataset",
        &world,
        "--model",
        model_s,
        "--rerank",
        "no/such/rerank.json",
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no/such/rerank.json") && stderr.contains("aisle train --rerank"),
        "{stderr}"
    );

    // An HNSW index, saved and checked against exact search.
    let index = d.path().join("index.usearch");
    let index_s = index.to_str().expect("utf-8 path");
    let out = aisle(&[
        "index",
        "--dataset",
        &world,
        "--model",
        model_s,
        "--out",
        index_s,
        "--check",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(index.is_file());
    let recall: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("recall@10 vs exact"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no recall line:\n{stdout}"));
    assert!(recall > 0.9, "{stdout}");

    // Hybrid rows through the same Searcher.
    let out = aisle(&[
        "eval",
        "--dataset",
        &world,
        "--model",
        &format!("tbhns={model_s}"),
        "--hybrid",
        "rrf",
        "--no-baselines",
        "--resamples",
        "20",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("tbhns + BM25 (rrf:60)"), "{stdout}");
    // The head beside the model, evaluated as its own row.
    let out = aisle(&[
        "eval",
        "--dataset",
        &world,
        "--model",
        &format!("tbhns={model_s}"),
        "--rerank",
        "--no-baselines",
        "--resamples",
        "20",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("tbhns + learned re-ranking"), "{stdout}");
    // A second model without a head: its re-ranked row is left out, with a note, and the
    // rest of the run goes on (it refused the whole run).
    let plain = d.path().join("plain");
    let out = train_tiny(&world, plain.to_str().expect("utf-8 path"), &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    let plain_model = plain.join("model.aisle");
    let out = aisle(&[
        "eval",
        "--dataset",
        &world,
        "--model",
        &format!("tbhns={model_s}"),
        "--model",
        &format!("plain={}", plain_model.to_str().expect("utf-8 path")),
        "--rerank",
        "--no-baselines",
        "--resamples",
        "20",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("tbhns + learned re-ranking")
            && stdout.contains("plain ")
            && !stdout.contains("plain + learned re-ranking")
            && stdout.contains("so it has no re-ranked row"),
        "{stdout}"
    );
    let out = aisle(&["eval", "--dataset", &world, "--hybrid", "dense"]);
    assert!(!out.status.success());

    // The server on a free port, with the saved index; SIGTERM stops it cleanly. The guard
    // kills it if an assertion fails first.
    let (mut child, url, rx) =
        spawn_serve(&["--dataset", &world, "--model", model_s, "--index", index_s]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(format!("{url}/healthz")).call().expect("healthz");
    let health: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("JSON");
    assert_eq!(health["index"], "hnsw (saved)");
    assert_eq!(health["personalized"], true);
    // rerank.json beside the model is picked up.
    assert_eq!(health["reranked"], true);
    let r = agent
        .get(format!("{url}/search?q=shoes&k=3"))
        .call()
        .expect("search");
    assert_eq!(r.status().as_u16(), 200);
    let r = agent
        .post(format!("{url}/admin/reload"))
        .send("")
        .expect("reload");
    assert_eq!(r.status().as_u16(), 200);
    // The served index is a copy, not a mapping: cutting the file under the server (this
    // killed it with SIGBUS when the file was memory-mapped) leaves searches answering, and a
    // reload of the cut file is refused by its checksum while the loaded index keeps serving.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .and_then(|f| f.set_len(4096))
        .expect("truncate the served index");
    let search = |agent: &ureq::Agent| {
        agent
            .get(format!("{url}/search?q=shoes&k=3"))
            .call()
            .expect("search")
            .status()
            .as_u16()
    };
    assert_eq!(search(&agent), 200);
    let mut r = agent
        .post(format!("{url}/admin/reload"))
        .send("")
        .expect("reload");
    let body = r.body_mut().read_to_string().expect("body");
    assert_eq!(r.status().as_u16(), 500, "{body}");
    assert!(
        body.contains("index.usearch") && body.contains("cut"),
        "{body}"
    );
    assert_eq!(search(&agent), 200);
    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "aisle serve exited with {status}");
    assert!(
        wait_for_line(&rx, "stopped", std::time::Duration::from_secs(5)).is_some(),
        "no graceful stop"
    );
    // The head's validation figures are in-sample: eval refuses to present them as a result.
    let out = aisle(&[
        "eval",
        "--dataset",
        &world,
        "--model",
        model_s,
        "--rerank",
        "--part",
        "validation",
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("in-sample"), "{stderr}");
    // Retraining without --rerank removes the head fitted for the replaced model.
    let out = train_tiny(&world, run_s, &["--personalized"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("removed"), "{stdout}");
    assert!(!run.join("rerank.json").exists());
}

/// `aisle experiment` on a tiny world: the report, results and plots, the command at the top, and
/// clear errors for a bad split or a bad row.
#[test]
fn experiment_writes_a_report_with_its_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = tiny_world(dir.path());
    let report = dir.path().join("report");
    let runs = dir.path().join("runs");
    let r = report.to_str().expect("utf-8");
    let base = [
        "experiment",
        "--dataset",
        &world,
        "--quick",
        "--steps",
        "20",
        "--batch-size",
        "32",
        "--dim",
        "16",
        "--buckets-log2",
        "14",
        "--splits",
        "event",
        "--out",
        r,
        "--runs",
        runs.to_str().expect("utf-8"),
    ];
    let mut args = base.to_vec();
    args.extend([
        "--row",
        "random",
        "--row",
        "TB leaf=taxonomy:leaf=1,sibling=0,cousin=0",
    ]);
    let out = aisle(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("TB leaf + BM25"), "{stdout}");
    let md = std::fs::read_to_string(report.join("report.md")).expect("report.md");
    // The command is quoted so that it can be pasted back.
    assert!(
        md.contains("--row 'TB leaf=taxonomy:leaf=1,sibling=0,cousin=0'"),
        "{md}"
    );
    assert!(md.contains("TB leaf + personalization"));
    assert!(report.join("results.json").is_file());
    assert!(report.join("event-convergence-steps.png").is_file());
    assert!(runs.join("event/tb-leaf/seed-42/model.aisle").is_file());

    let mut bad = base.to_vec();
    bad[13] = "nosuch";
    let (_, err) = text(&aisle(&bad));
    assert!(err.contains("no split `nosuch`"), "{err}");
    let mut bad = base.to_vec();
    bad.extend(["--row", "x=nonsense"]);
    let (_, err) = text(&aisle(&bad));
    assert!(err.contains("'x=nonsense' for '--row"), "{err}");
    let mut bad = base.to_vec();
    bad.extend(["--row", "BM25=random"]);
    let (_, err) = text(&aisle(&bad));
    assert!(err.contains("clash"), "{err}");
}

#[test]
fn train_tower_minilm_fine_tunes_writes_a_model_folder_and_refuses_ngram_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = tiny_world(dir.path());
    // A tiny random BERT stands in for all-MiniLM-L6-v2 (its words: none, so all [UNK] but the
    // position embeddings; enough to check the command end to end).
    let bert = dir.path().join("tiny-bert");
    std::fs::create_dir_all(&bert).expect("dir");
    aisle_transformer::tiny::write_model_folder(&bert, &["the".into()]).expect("tiny model");
    let bert = bert.to_str().expect("utf-8 path");
    let minilm = |model: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--tower",
            "minilm",
            "--minilm-model",
            model,
            "--dataset",
            &world,
        ];
        args.extend_from_slice(extra);
        aisle(&args)
    };
    let out = dir.path().join("tuned");
    let out = out.to_str().expect("utf-8 path");
    let run = minilm(
        bert,
        &[
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--quiet",
            "--out",
            out,
            "--rerank",
        ],
    );
    let (stdout, stderr) = text(&run);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("validation R@10      pretrained"),
        "{stdout}"
    );
    assert!(
        stdout.contains("steps                3 of 8 pairs"),
        "{stdout}"
    );
    let model = Path::new(out).join("model");
    // The re-ranking head over the fine-tuned towers, beside the folder, named by its weights.
    assert!(
        stdout.contains("re-ranking head      fitted on"),
        "{stdout}"
    );
    let head: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(out).join("rerank.json")).expect("rerank.json beside the model"),
    )
    .expect("json");
    assert!(head["model_crc32"].is_string(), "{head}");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(model.join(f).is_file(), "no {f} in {}", model.display());
    }
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(out).join("tune_summary.json")).expect("summary"),
    )
    .expect("json");
    assert_eq!(summary["summary"]["steps"], 3);
    assert_eq!(
        summary["config"]["sampler"],
        "taxonomy:leaf=1,sibling=1,cousin=0.5,pool=interacted"
    );
    // The folder says what it was tuned on; `eval`, `index` and `serve` take it as they take a
    // model file, through the same Searcher (what is measured is what is served).
    let tuned: serde_json::Value = serde_json::from_slice(
        &std::fs::read(model.join("aisle.json")).expect("aisle.json in the model folder"),
    )
    .expect("json");
    assert_eq!(tuned["steps"], 3);
    assert!(tuned["dataset_digest"].is_string(), "{tuned}");
    let folder = model.to_str().expect("utf-8 path");
    let eval = aisle(&[
        "eval",
        "--dataset",
        &world,
        "--part",
        "validation",
        "--no-baselines",
        "--model",
        &format!("ft={folder}"),
        "--model",
        &format!("pre={bert}"),
    ]);
    let (stdout, stderr) = text(&eval);
    assert!(eval.status.success(), "{stdout}\n{stderr}");
    // The same validation figure that `train` printed for the fine-tuned folder.
    // Train prints it to three decimals, eval to four: the same figure, each rounded once, are
    // at most 0.0005 + 0.00005 apart.
    let printed: f64 = stdout_of_train_figure(&text(&run).0)
        .parse()
        .expect("a number");
    let evaluated = recall_of(&stdout, "ft");
    assert!(
        (evaluated - printed).abs() <= 5.5e-4,
        "eval {evaluated} against train's {printed}:\n{stdout}"
    );
    let index_file = dir.path().join("minilm.usearch");
    let index_file = index_file.to_str().expect("utf-8 path");
    let index = aisle(&[
        "index",
        "--dataset",
        &world,
        "--model",
        folder,
        "--out",
        index_file,
        "--check",
    ]);
    let (stdout, stderr) = text(&index);
    assert!(index.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("recall@10 vs exact"), "{stdout}");
    let (_server, url, _lines) = spawn_serve(&[
        "--dataset",
        &world,
        "--model",
        folder,
        "--index",
        index_file,
    ]);
    let get = |path: &str| -> serde_json::Value {
        let mut r = ureq::get(format!("{url}{path}")).call().expect(path);
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("JSON")
    };
    let health = get("/healthz");
    assert_eq!(health["encoder"], "MiniLM", "{health}");
    assert_eq!(health["dim"], aisle_transformer::tiny::DIM, "{health}");
    assert_eq!(health["index"], "hnsw (saved)", "{health}");
    assert_eq!(health["reranked"], true, "{health}");
    let found = get("/search?q=the&k=5");
    assert_eq!(
        found["results"].as_array().map(Vec::len),
        Some(5),
        "{found}"
    );
    // A folder tuned on other data is refused, as a model file is.
    let mut other = tuned.clone();
    other["dataset_digest"] = "00000000".into();
    std::fs::write(model.join("aisle.json"), other.to_string()).expect("write aisle.json");
    let refused = aisle(&[
        "eval",
        "--dataset",
        &world,
        "--no-baselines",
        "--model",
        folder,
    ]);
    let (_, stderr) = text(&refused);
    assert!(!refused.status.success());
    assert!(stderr.contains("with dataset digest 00000000"), "{stderr}");
    // Flags of the n-gram tower are refused by name; so is ANCE; a missing model folder says
    // how to prepare it.
    for (model, extra, want) in [
        (
            bert,
            &["--dim", "8", "--buckets-log2", "10"][..],
            "--dim, --buckets-log2 do not apply to --tower minilm",
        ),
        (
            bert,
            &["--history", "5"][..],
            "--history, --fusion and --no-demographics need --personalized",
        ),
        (bert, &["--sampler", "ance"][..], "ANCE cannot fine-tune"),
        ("/nonexistent/minilm", &[][..], "fetch-minilm.sh"),
    ] {
        let o = minilm(model, extra);
        let (_, stderr) = text(&o);
        assert!(!o.status.success());
        assert!(stderr.contains(want), "{stderr}");
    }
}

#[test]
fn train_tower_minilm_personalized_fits_a_tower_into_the_folder_that_eval_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = tiny_world(dir.path());
    let bert = dir.path().join("tiny-bert");
    std::fs::create_dir_all(&bert).expect("dir");
    aisle_transformer::tiny::write_model_folder(&bert, &["the".into()]).expect("tiny model");
    let out = dir.path().join("tuned");
    let run = aisle(&[
        "train",
        "--tower",
        "minilm",
        "--minilm-model",
        bert.to_str().expect("utf-8 path"),
        "--dataset",
        &world,
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--personalized",
        "--history",
        "7",
        "--quiet",
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    let (stdout, stderr) = text(&run);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("personalized tower   fitted over the fixed vectors")
            && stdout.contains("history 7, gated fusion"),
        "{stdout}"
    );
    assert!(stdout.contains("-> personalized "), "{stdout}");
    let model = out.join("model");
    let personal: serde_json::Value = serde_json::from_slice(
        &std::fs::read(model.join("personal.json")).expect("personal.json in the model folder"),
    )
    .expect("json");
    assert_eq!(personal["personalize"]["history"], 7);
    assert_eq!(personal["encoder"], "MiniLM");
    // `eval` reads the folder with its tower: the Searcher personalizes the queries.
    let eval = aisle(&[
        "eval",
        "--dataset",
        &world,
        "--no-baselines",
        "--model",
        &format!("ft={}", model.display()),
    ]);
    let (stdout, stderr) = text(&eval);
    assert!(eval.status.success(), "{stdout}\n{stderr}");
    assert!(recall_of(&stdout, "ft") >= 0.0);
}

/// The fine-tuned figure of `aisle train --tower minilm`'s line
/// `validation R@10      pretrained A [..] -> fine-tuned B [..]`.
fn stdout_of_train_figure(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.split_once("-> fine-tuned "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no fine-tuned validation figure:\n{stdout}"))
}

/// The first R@10 figure of `aisle eval`'s table row `row`.
fn recall_of(stdout: &str, row: &str) -> f64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(row))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no row `{row}`:\n{stdout}"))
}

/// The Qdrant backend through the binary, on a real 3-node cluster (3 shards x 2 replicas):
/// `aisle index --backend qdrant` uploads and moves the alias, an upload killed with SIGKILL
/// leaves the alias where it was and resumes, `aisle eval` over Qdrant gives the embedded
/// index's figures, and `aisle serve --backend qdrant` answers the API and the page and refuses
/// a collection of another model.
#[test]
fn index_eval_and_serve_over_a_qdrant_cluster() {
    use qdrant_node::{qdrant_bin, Node};
    let Some(bin) = qdrant_bin() else { return };
    let d = tempfile::tempdir().expect("tempdir");
    let first = Node::start(&bin, &d.path().join("n1"), Some(None));
    let boot = first.p2p;
    let nodes = [
        first,
        Node::start(&bin, &d.path().join("n2"), Some(Some(boot))),
        Node::start(&bin, &d.path().join("n3"), Some(Some(boot))),
    ];
    let urls = nodes.iter().map(Node::url).collect::<Vec<_>>().join(",");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |url: &str| -> serde_json::Value {
        let mut r = agent.get(url).call().expect("GET");
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("JSON")
    };
    let start = std::time::Instant::now();
    while get(&format!("{}/cluster", nodes[0].url()))["result"]["peers"]
        .as_object()
        .map_or(0, |p| p.len())
        < 3
    {
        assert!(start.elapsed().as_secs() < 60, "the cluster did not form");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    let world = tiny_world(d.path());
    let (run1, run2) = (d.path().join("run1"), d.path().join("run2"));
    let (m1, m2) = (run1.join("model.aisle"), run2.join("model.aisle"));
    let (m1s, m2s) = (m1.to_str().expect("utf-8"), m2.to_str().expect("utf-8"));
    for (run, seed) in [(&run1, "1"), (&run2, "2")] {
        let out = train_tiny(
            &world,
            run.to_str().expect("utf-8"),
            &["--personalized", "--train-seed", seed],
        );
        assert!(out.status.success(), "{:?}", text(&out));
    }
    let index = |model: &str, extra: &[&str]| {
        let mut args = vec![
            "index",
            "--dataset",
            &world,
            "--model",
            model,
            "--backend",
            "qdrant",
            "--url",
            &urls,
            "--shards",
            "3",
            "--replicas",
            "2",
        ];
        args.extend_from_slice(extra);
        aisle(&args)
    };
    let out = index(m1s, &["--check"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let live = stdout
        .lines()
        .find_map(|l| l.strip_prefix("collection"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_else(|| panic!("no collection line:\n{stdout}"));
    assert!(stdout.contains("(was none)"), "{stdout}");
    assert!(stdout.contains("recall@10 vs exact   1.0000"), "{stdout}");
    let alias = || -> Option<String> {
        get(&format!("{}/aliases", nodes[1].url()))["result"]["aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["alias_name"] == "aisle-world")
            .and_then(|a| a["collection_name"].as_str().map(str::to_owned))
    };
    assert_eq!(alias(), Some(live.clone()));

    // The second model's upload, one point per request, killed with SIGKILL once its
    // collection exists: the alias stays on the first.
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_aisle"))
            .args([
                "index",
                "--dataset",
                &world,
                "--model",
                m2s,
                "--backend",
                "qdrant",
                "--url",
                &urls,
                "--shards",
                "3",
                "--replicas",
                "2",
                "--batch",
                "1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start aisle index"),
    );
    let start = std::time::Instant::now();
    let partial = loop {
        let names: Vec<String> = get(&format!("{}/collections", nodes[0].url()))["result"]
            ["collections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .filter(|n| n.starts_with("aisle-world-") && *n != live)
            .collect();
        if let Some(n) = names.first() {
            let count = get(&format!("{}/collections/{n}", nodes[0].url()))["result"]
                ["points_count"]
                .as_u64()
                .unwrap_or(0);
            if count > 0 {
                break n.clone();
            }
        }
        assert!(
            start.elapsed().as_secs() < 60,
            "the second upload never began"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    child.0.kill().expect("SIGKILL");
    let _ = child.0.wait();
    let meta = get(&format!("{}/collections/{partial}", nodes[0].url()));
    assert_eq!(
        meta["result"]["config"]["metadata"]["aisle"]["complete"], false,
        "the kill came after the upload finished; nothing was tested"
    );
    assert_eq!(
        alias(),
        Some(live.clone()),
        "the alias moved to a partial upload"
    );
    // Serving the second model now is refused: the alias holds the first model's vectors.
    let out = aisle(&[
        "serve",
        "--dataset",
        &world,
        "--model",
        m2s,
        "--backend",
        "qdrant",
        "--url",
        &urls,
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&live) && stderr.contains("the model in use has"),
        "{stderr}"
    );
    // The re-run continues where the killed one stopped, then moves the alias.
    let out = index(m2s, &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("(resumed)"), "{stdout}");
    assert!(
        stdout.contains(&format!("collection           {partial}")),
        "{stdout}"
    );
    assert_eq!(alias(), Some(partial.clone()));

    // eval over Qdrant gives the embedded (exact) figures: below Qdrant's indexing threshold
    // its search is exact as well.
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--dataset",
            &world,
            "--model",
            m2s,
            "--no-baselines",
            "--resamples",
            "20",
        ];
        args.extend_from_slice(extra);
        let out = aisle(&args);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        stdout
    };
    let embedded = eval(&[]);
    let remote = eval(&["--backend", "qdrant", "--url", &urls]);
    let row = "dense taxonomy(leaf=1,sibling=1,cousin=0.5,pool=interacted)";
    assert_eq!(recall_of(&embedded, row), recall_of(&remote, row));

    // The server over the cluster: the API, the page, and a reload that follows the alias.
    let (mut server, url, _rx) = spawn_serve(&[
        "--dataset",
        &world,
        "--model",
        m2s,
        "--backend",
        "qdrant",
        "--url",
        &urls,
    ]);
    // The server searches `collection` and answers a query with 5 hits; returns them.
    let serves = |collection: &str| -> serde_json::Value {
        let health = get(&format!("{url}/healthz"));
        assert_eq!(health["index"], "qdrant");
        assert!(
            health["index_source"]
                .as_str()
                .is_some_and(|s| s.contains(collection)),
            "{health}"
        );
        // `aisle index --backend qdrant` uploaded the served BM25 as sparse vectors: lexical
        // and hybrid searches run in the cluster too.
        assert_eq!(health["lexical_in_engine"], true, "{health}");
        let hybrid = get(&format!("{url}/search?q=shoes&k=5&mode=hybrid"));
        assert_eq!(
            hybrid["results"].as_array().map_or(0, Vec::len),
            5,
            "{hybrid}"
        );
        let found = get(&format!("{url}/search?q=shoes&k=5"));
        assert_eq!(
            found["results"].as_array().map_or(0, Vec::len),
            5,
            "{found}"
        );
        found
    };
    let found = serves(&partial);
    // A category filter (run by Qdrant on the points' ancestor ids) keeps only that subtree.
    let leaf = found["results"][0]["category"]["id"]
        .as_str()
        .expect("a category id")
        .to_owned();
    let encoded: String = leaf
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let filtered = get(&format!(
        "{url}/search?q=shoes&k=5&explain=true&category={encoded}"
    ));
    let hits = filtered["results"].as_array().expect("results");
    assert!(!hits.is_empty(), "{filtered}");
    assert!(
        hits.iter().all(|h| h["category"]["id"] == leaf.as_str()),
        "{filtered}"
    );
    let page = agent.get(&url).call().expect("page");
    assert_eq!(page.status().as_u16(), 200);
    // The model retrained in place and indexed again: a reload follows the alias to the new
    // collection; searches before and after it succeed.
    let out = train_tiny(
        &world,
        run2.to_str().expect("utf-8"),
        &["--personalized", "--train-seed", "3"],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let reload = || {
        let r = agent
            .post(format!("{url}/admin/reload"))
            .send("")
            .expect("reload");
        r.status().as_u16()
    };
    // Before the upload the alias still holds the previous model: the reload is refused and the
    // server goes on serving.
    assert_ne!(reload(), 200);
    serves(&partial);
    let out = index(m2s, &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let newest = alias().expect("alias");
    assert_ne!(newest, partial);
    assert_eq!(reload(), 200);
    serves(&newest);
    let _ = server.0.kill();
    let _ = server.0.wait();
}
