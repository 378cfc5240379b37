//! Real Qdrant nodes for tests: one process per node on free 127.0.0.1 ports, in a folder of
//! the test's, stopped by PID (SIGKILL) when dropped. Shared by aisle-search's and aisle-cli's
//! tests (`#[path]`), so that no library ships test support.
//!
//! Without the binary a test skips with a printed reason; under `CI=true` it fails naming the
//! path (`aisle_fixtures::need_path`). `AISLE_QDRANT_BIN` names another binary.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Qdrant binary, or `None` (with the reason printed) where it is absent outside CI.
#[track_caller]
pub fn qdrant_bin() -> Option<PathBuf> {
    let path = std::env::var_os("AISLE_QDRANT_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bin/qdrant"),
        PathBuf::from,
    );
    aisle_fixtures::need_path(
        path,
        "the Qdrant server, shipped in ../shared/bin; set AISLE_QDRANT_BIN to another",
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One Qdrant process with its own ports and storage; killed (SIGKILL) when dropped.
pub struct Node {
    bin: PathBuf,
    dir: PathBuf,
    http: u16,
    grpc: u16,
    pub p2p: u16,
    /// The first peer's p2p port, for a node that joins a cluster; `Some(own)` for the first.
    cluster: Option<u16>,
    child: Option<Child>,
}

impl Node {
    pub fn start(bin: &Path, dir: &Path, cluster: Option<Option<u16>>) -> Node {
        let p2p = free_port();
        let mut node = Node {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            http: free_port(),
            grpc: free_port(),
            p2p,
            cluster: cluster.map(|first| first.unwrap_or(p2p)),
            child: None,
        };
        node.spawn();
        node
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    pub fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("node folder");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("qdrant.log"))
            .expect("log file");
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&self.dir)
            .env("QDRANT__SERVICE__HTTP_PORT", self.http.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", self.grpc.to_string())
            .env("QDRANT__STORAGE__STORAGE_PATH", self.dir.join("storage"))
            .env(
                "QDRANT__STORAGE__SNAPSHOTS_PATH",
                self.dir.join("snapshots"),
            )
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .env("QDRANT__LOG_LEVEL", "WARN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(first) = self.cluster {
            cmd.env("QDRANT__CLUSTER__ENABLED", "true")
                .env("QDRANT__CLUSTER__P2P__PORT", self.p2p.to_string())
                .arg("--uri")
                .arg(format!("http://127.0.0.1:{}", self.p2p));
            if first != self.p2p {
                cmd.arg("--bootstrap")
                    .arg(format!("http://127.0.0.1:{first}"));
            }
        }
        self.child = Some(cmd.spawn().expect("starting qdrant"));
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if agent
                .get(format!("{}/readyz", self.url()))
                .call()
                .is_ok_and(|r| r.status() == 200)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.join("qdrant.log")).unwrap_or_default();
        panic!(
            "qdrant at {} not ready after 60 s; its log:\n{log}",
            self.url()
        );
    }

    /// SIGKILL, by PID.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
