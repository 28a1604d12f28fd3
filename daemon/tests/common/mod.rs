//! Running the real `shingled` binary in tests: a config with two file-backed disks on two
//! cores, free ports, start, wait until it serves, SIGTERM or SIGKILL, restart.

#![allow(dead_code, reason = "each test binary uses part of this module")]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long a test waits for the daemon to start or stop.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Ports of one daemon: the main port, two shard ports (base, base + 1) and the metrics port.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub main: u16,
    pub shard_base: u16,
    pub metrics: u16,
}

/// Four consecutive free ports, different for every call in this process (tests run in
/// parallel) and, by the process id, likely different from other test processes. They are
/// below Linux's ephemeral range (32768 and up by default), so no client socket of a parallel
/// test can be holding one when the daemon restarts.
pub fn free_ports() -> Ports {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = 10_000 + (std::process::id() % 600) * 30;
    loop {
        let base = 10_000 + (start - 10_000 + NEXT.fetch_add(4, Ordering::SeqCst)) % 22_000;
        let ports = [base, base + 1, base + 2, base + 3].map(|p| p as u16);
        let free = ports.iter().all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok());
        if free {
            return Ports { main: ports[0], shard_base: ports[1], metrics: ports[3] };
        }
    }
}

/// What a test may change in the config.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `[server]` lines added as they are.
    pub server_extra: String,
    /// Turn shard ports off.
    pub no_shard_ports: bool,
}

/// A daemon's folder and config.
#[derive(Debug)]
pub struct Node {
    pub dir: tempfile::TempDir,
    pub ports: Ports,
    pub config: PathBuf,
}

/// A running daemon.
#[derive(Debug)]
pub struct Running {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
}

impl Node {
    /// A folder with a config for two 512 MiB file-backed disks: disk 0 on core 0, disk 1 on
    /// core 1.
    pub fn new(options: &Options) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports();
        let shard_base = if options.no_shard_ports { 0 } else { ports.shard_base };
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:{main}"
shard_port_base = {shard_base}
{extra}
[metrics]
listen = "127.0.0.1:{metrics}"
[runtime]
cores = [0, 1]
[[disk]]
id = 0
path = "{dir}/d0.img"
size = "512MiB"
zone_size = "64MiB"
core = 0
[[disk]]
id = 1
path = "{dir}/d1.img"
size = "512MiB"
zone_size = "64MiB"
core = 1
"#,
            main = ports.main,
            metrics = ports.metrics,
            extra = options.server_extra,
            dir = dir.path().display(),
        );
        let path = dir.path().join("shingled.toml");
        std::fs::write(&path, config).expect("write config");
        Node { dir, ports, config: path }
    }

    /// The main address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.main))
    }

    /// The metrics address (`GET /metrics`).
    pub fn metrics_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.metrics))
    }

    /// Starts the daemon and waits until it serves.
    pub fn start(&self) -> Running {
        self.start_with_env(&[])
    }

    /// Starts the daemon with more environment variables and waits until it serves.
    pub fn start_with_env(&self, env: &[(&str, String)]) -> Running {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shingled"));
        command
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn shingled");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap_or_else(|p| p.into_inner()).push(line.clone());
                let _ = tx.send(line);
            }
        });
        let running = Running { child, log, lines: rx };
        running.wait_for("shingled serving");
        running
    }
}

impl Running {
    /// Waits for a log line containing `needle`.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no {needle:?} in the log:\n{}", self.log_text()),
            }
        }
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }

    /// SIGTERM, and checks a clean exit.
    pub fn stop(mut self) -> String {
        signal(&self.child, "TERM");
        let status = self.child.wait().expect("wait");
        // Let the log thread drain.
        std::thread::sleep(Duration::from_millis(50));
        let log = self.log_text();
        assert!(status.success(), "shingled exited with {status}:\n{log}");
        log
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        signal(&self.child, "KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

/// The `shingle` CLI binary (of the proto crate), built if this test run did not build it.
pub fn shingle_cli() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    // target/<profile>/deps/<test> -> target/<profile>/shingle
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
    let cli = profile_dir.join("shingle");
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !*built {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-q", "-p", "shingle-proto", "--bin", "shingle"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo build the CLI");
        assert!(status.success(), "building the shingle CLI failed");
        *built = true;
    }
    cli
}
