//! Throughput runs: wrk with a Lua script rotating over request paths, and its output read
//! into figures.

use std::path::Path;
use std::process::Command;

use super::error::BenchError;
use super::table::Load;

/// Whether `wrk` runs (prints its version).
pub fn available(wrk: &Path) -> bool {
    Command::new(wrk)
        .arg("--version")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
}

/// wrk (`wrk`, 2 threads) with `connections` connections for `seconds` seconds and a Lua
/// script rotating over `paths` (the first 2,000) against `base`.
pub fn run(
    wrk: &Path,
    seconds: u64,
    base: &str,
    paths: &[String],
    connections: usize,
) -> Result<Load, BenchError> {
    let dir = std::env::temp_dir().join(format!("aisle-bench-search-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::File {
        doing: "creating",
        path: dir.clone(),
        source,
    })?;
    let script = dir.join("paths.lua");
    std::fs::write(&script, lua(paths)).map_err(|source| BenchError::File {
        doing: "writing",
        path: script.clone(),
        source,
    })?;
    let out = Command::new(wrk)
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(base)
        .output()
        .map_err(|source| BenchError::WrkStart {
            wrk: wrk.to_path_buf(),
            source,
        })?;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(BenchError::WrkFailed {
            status: out.status,
            output: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    parse(&text, connections)
}

/// The Lua script: a table of the paths, and a `request` that walks it from a random start.
fn lua(paths: &[String]) -> String {
    let mut lua = String::from("local paths = {\n");
    for p in paths.iter().take(2000) {
        lua.push_str(&format!(
            "  \"{}\",\n",
            p.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    lua.push_str(
        "}\nlocal i = math.random(#paths)\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n",
    );
    lua
}

/// The figures of wrk's `--latency` output (the server's evictions and sheds left at 0).
pub fn parse(text: &str, connections: usize) -> Result<Load, BenchError> {
    let missing = |what: &str| BenchError::WrkOutput {
        what: what.to_owned(),
        output: text.to_owned(),
    };
    // "Non-2xx or 3xx responses: 17": shown in the load table (a 503 from the connection cap
    // never reaches the handlers' metrics).
    let failed = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let qps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| missing("Requests/sec"))?;
    let pct = |name: &str| -> Result<f64, BenchError> {
        text.lines()
            .find_map(|l| {
                let mut parts = l.split_whitespace();
                (parts.next() == Some(name)).then(|| parts.next()).flatten()
            })
            .and_then(parse_duration)
            .ok_or_else(|| missing(&format!("{name} latency")))
    };
    // "Socket errors: connect 0, read 12, write 0, timeout 3"
    let mut socket_errors = [0u64; 4];
    if let Some(rest) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
    {
        for (slot, part) in socket_errors.iter_mut().zip(rest.split(',')) {
            *slot = part
                .split_whitespace()
                .last()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    Ok(Load {
        connections,
        qps,
        p50_ms: pct("50%")?,
        p99_ms: pct("99%")?,
        socket_errors,
        failed,
        evicted: 0,
        shed: 0,
    })
}

/// wrk's durations ("812.00us", "1.23ms", "2.01s") in milliseconds.
fn parse_duration(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// wrk 4.2's output for a run with `--latency`, socket errors and failed answers.
    const OUTPUT: &str = "Running 2s test @ http://127.0.0.1:40123
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.12ms    1.03ms  21.30ms   80.11%
    Req/Sec     6.25k   312.40     6.80k    71.00%
  Latency Distribution
     50%  812.00us
     75%    5.40ms
     90%    6.20ms
     99%    1.02s
  24873 requests in 2.00s, 41.31MB read
  Socket errors: connect 0, read 12, write 0, timeout 3
  Non-2xx or 3xx responses: 17
Requests/sec:  12417.52
Transfer/sec:     20.63MB
";

    #[test]
    fn reads_wrk_output_into_figures() {
        let load = parse(OUTPUT, 64).unwrap();
        assert_eq!(
            load,
            Load {
                connections: 64,
                qps: 12417.52,
                p50_ms: 0.812,
                p99_ms: 1020.0,
                socket_errors: [0, 12, 0, 3],
                failed: 17,
                evicted: 0,
                shed: 0,
            }
        );
        // A clean run prints neither socket errors nor failed answers.
        let clean: String = OUTPUT
            .lines()
            .filter(|l| !l.contains("Socket errors") && !l.contains("Non-2xx"))
            .map(|l| format!("{l}\n"))
            .collect();
        let load = parse(&clean, 64).unwrap();
        assert_eq!((load.socket_errors, load.failed), ([0; 4], 0));
    }

    #[test]
    fn missing_figures_are_errors_naming_them() {
        let no_qps = OUTPUT.replace("Requests/sec:", "Requests:");
        let err = parse(&no_qps, 64).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("no Requests/sec in wrk's output:"),
            "{err}"
        );
        let no_p99 = OUTPUT.replace("99%", "98%");
        let err = parse(&no_p99, 64).unwrap_err();
        assert!(err.to_string().starts_with("no 99% latency in"), "{err}");
    }

    #[test]
    fn durations_and_script() {
        assert_eq!(parse_duration("812.00us"), Some(0.812));
        assert_eq!(parse_duration("1.50ms"), Some(1.5));
        assert_eq!(parse_duration("2.00s"), Some(2000.0));
        assert_eq!(parse_duration("fast"), None);
        let script = lua(&["/search?q=a\"b".to_owned()]);
        assert!(
            script.starts_with("local paths = {\n  \"/search?q=a\\\"b\",\n}\n"),
            "{script}"
        );
    }
}
