//! A real `shingled` process for the end-to-end benchmarks: finding (or building) the release
//! binary, a config with one file-backed disk on one core and free loopback ports, starting it
//! and waiting for its "shingled serving" line, its CPU time from /proc, and a SIGTERM stop that
//! must end in exit status 0 with the disk closed cleanly.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::measure::process_cpu_ticks;

/// The line `shingled` logs once every core serves.
pub const SERVING_LINE: &str = "shingled serving";
/// The line it logs for each disk closed with a checkpoint at the stop.
pub const CLEAN_CLOSE_LINE: &str = "closed with a clean checkpoint";
/// How long a start (disk creation, format, recovery, binding) or a stop may take.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Ports are picked in this range: below Linux's ephemeral range (32768 and up), so no client
/// socket holds one when a daemon restarts on it.
const PORT_FIRST: u16 = 20_000;
const PORT_LAST: u16 = 32_000;
/// Ports of one daemon: main, its one shard port, metrics.
const PORTS_PER_NODE: u16 = 3;
/// Log lines kept for error messages.
const LOG_LINES_KEPT: usize = 200;
/// How often a stop polls for the exit.
const STOP_POLL: Duration = Duration::from_millis(10);

const _: () = assert!(PORT_FIRST < PORT_LAST && PORT_LAST < 32_768);

/// The release `shingled`: `explicit` if given, else the one next to this executable
/// (target/release/shingled), built with cargo when it is missing.
pub fn shingled_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        ensure!(path.is_file(), "--shingled {}: no such file", path.display());
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let dir = exe.parent().context("this executable has no folder")?;
    let binary = dir.join("shingled");
    if binary.is_file() {
        return Ok(binary);
    }
    let hint = "build it with `cargo build --release -p shingle-daemon`, or pass --shingled PATH";
    // target/<profile>/<exe>: the workspace is two folders up; with CARGO_TARGET_DIR elsewhere,
    // the current folder may be it.
    let up_two = dir.parent().and_then(Path::parent).map(Path::to_path_buf);
    let current = std::env::current_dir().ok();
    let workspace = up_two.into_iter().chain(current).find(|w| w.join("Cargo.toml").is_file());
    let Some(workspace) = workspace else {
        bail!("{} is missing and no workspace is around it: {hint}", binary.display());
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(&cargo);
    build.current_dir(&workspace).args([
        "build",
        "-q",
        "-p",
        "shingle-daemon",
        "--bin",
        "shingled",
    ]);
    if dir.file_name().is_some_and(|name| name == "release") {
        build.arg("--release");
    }
    eprintln!("{} is missing: building it ({build:?})", binary.display());
    let status = build.status().with_context(|| format!("running {cargo:?}: {hint}"))?;
    ensure!(status.success() && binary.is_file(), "building shingled failed ({status}): {hint}");
    Ok(binary)
}

/// Whether `path` holds a shingle disk: `shingled inspect PATH` succeeds on it.
pub fn is_shingle_disk(binary: &Path, path: &Path) -> Result<bool> {
    let output = Command::new(binary)
        .arg("inspect")
        .arg(path)
        .output()
        .with_context(|| format!("running {} inspect", binary.display()))?;
    Ok(output.status.success())
}

/// `shingled format PATH --zone-size Z --force` (and `--size` to create a file): an empty
/// shingle disk, whatever was there.
pub fn format_disk(
    binary: &Path,
    path: &Path,
    size_bytes: Option<u64>,
    zone_size_bytes: u64,
) -> Result<()> {
    let mut command = Command::new(binary);
    command.arg("format").arg(path).arg("--zone-size").arg(size_text(zone_size_bytes));
    if let Some(size) = size_bytes {
        command.arg("--size").arg(size_text(size));
    }
    command.arg("--force");
    let output = command.output().with_context(|| format!("running {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Loopback ports of one daemon.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ports {
    pub main: u16,
    pub shard: u16,
    pub metrics: u16,
}

/// Three consecutive ports nothing listens on now (bind-checked on 127.0.0.1), starting at a
/// place that depends on the process id so that two benchmarks at once rarely collide.
pub fn free_ports() -> Result<Ports> {
    let span = u32::from(PORT_LAST - PORT_FIRST - PORTS_PER_NODE);
    let start = std::process::id() * u32::from(PORTS_PER_NODE) % span;
    for step in (0..span).step_by(usize::from(PORTS_PER_NODE)) {
        let base = PORT_FIRST + u16::try_from((start + step) % span).unwrap_or(0);
        let ports = [base, base + 1, base + 2];
        if ports.iter().all(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return Ok(Ports { main: ports[0], shard: ports[1], metrics: ports[2] });
        }
    }
    bail!("no three consecutive free ports between {PORT_FIRST} and {PORT_LAST} on 127.0.0.1")
}

/// What the benchmark's config says: one file-backed disk, owned by the only core.
#[derive(Debug, Clone, Serialize)]
pub struct NodeConfig {
    pub ports: Ports,
    /// The CPU of the daemon's only core (`runtime.cores = [cpu]`).
    pub cpu: usize,
    /// The disk: a file, created with `disk_size_bytes` reserved and formatted by `shingled`
    /// when it does not exist, or a block device (or file) formatted before, with
    /// `disk_size_bytes` `None`.
    pub disk_path: PathBuf,
    pub disk_size_bytes: Option<u64>,
    pub zone_size_bytes: u64,
}

impl NodeConfig {
    /// The config file's text (docs: config/shingled.example.toml).
    pub fn to_toml(&self) -> String {
        let p = &self.ports;
        let size = self
            .disk_size_bytes
            .map_or_else(String::new, |bytes| format!("size = \"{}\"\n", size_text(bytes)));
        format!(
            "# A benchmark's daemon: one disk on one core, loopback only.\n\
             [server]\nlisten = \"127.0.0.1:{}\"\nshard_port_base = {}\n\n\
             [metrics]\nlisten = \"127.0.0.1:{}\"\n\n\
             [runtime]\ncores = [{}]\n\n\
             [log]\nlevel = \"info\"\n\n\
             [[disk]]\nid = 0\npath = {}\n{size}zone_size = \"{}\"\ncore = 0\n",
            p.main,
            p.shard,
            p.metrics,
            self.cpu,
            toml_string(&self.disk_path.to_string_lossy()),
            size_text(self.zone_size_bytes),
        )
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.main))
    }
}

/// A size as the config writes it: MiB when it is a whole number of them, else bytes.
fn size_text(bytes: u64) -> String {
    if bytes % (1 << 20) == 0 { format!("{}MiB", bytes >> 20) } else { bytes.to_string() }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A running `shingled`. Dropped without [`Node::stop`], it is killed.
#[derive(Debug)]
pub struct Node {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
    lines: mpsc::Receiver<String>,
}

impl Node {
    /// Writes `config` to `config_path`, starts `binary` on it in `config_path`'s folder and
    /// waits until it serves.
    pub fn start(binary: &Path, config: &NodeConfig, config_path: &Path) -> Result<Node> {
        std::fs::write(config_path, config.to_toml())
            .with_context(|| format!("writing {}", config_path.display()))?;
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(config_path)
            .current_dir(config_path.parent().unwrap_or(Path::new(".")))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().context("shingled's stderr")?;
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let keep = Arc::clone(&log);
        std::thread::Builder::new()
            .name("shingled-log".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut log = keep.lock().unwrap_or_else(PoisonError::into_inner);
                    if log.len() == LOG_LINES_KEPT {
                        log.pop_front();
                    }
                    log.push_back(line.clone());
                    // The receiver is gone once the node is dropped; the log is still kept.
                    let _ = tx.send(line);
                }
            })
            .context("starting the thread that reads shingled's log")?;
        let node = Node { child, addr: config.addr(), log, lines };
        node.wait_for(SERVING_LINE, START_TIMEOUT)
            .with_context(|| format!("{} did not start", binary.display()))?;
        Ok(node)
    }

    /// The main address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's CPU time so far (all threads), in clock ticks.
    pub fn cpu_ticks(&self) -> Result<u64> {
        process_cpu_ticks(self.pid())
    }

    /// The last lines the daemon logged.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Waits for a log line containing `needle`.
    fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("no {needle:?} in its log within {timeout:?}:\n{}", self.log_tail())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("it closed its log (exited?) before {needle:?}:\n{}", self.log_tail())
                }
            }
        }
    }

    /// SIGTERM, then waits for the exit: it must be status 0, with the disk closed cleanly.
    pub fn stop(mut self) -> Result<()> {
        let pid = self.pid().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().context("running kill")?;
        ensure!(status.success(), "kill -TERM {pid} failed: {status}");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let exit = loop {
            if let Some(exit) = self.child.try_wait().context("waiting for shingled")? {
                break exit;
            }
            ensure!(
                Instant::now() < deadline,
                "shingled (pid {pid}) did not exit within {STOP_TIMEOUT:?} of SIGTERM:\n{}",
                self.log_tail()
            );
            std::thread::sleep(STOP_POLL);
        };
        // The log thread ends at the pipe's end; its last lines arrive right after the exit.
        let closed = self.wait_for(CLEAN_CLOSE_LINE, Duration::from_secs(5));
        ensure!(exit.success(), "shingled exited with {exit} after SIGTERM:\n{}", self.log_tail());
        closed.context("shingled exited 0 without closing its disk cleanly")?;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Error paths only: the benchmark failed and the daemon must not outlive it.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_has_one_disk_on_one_core() {
        let config = NodeConfig {
            ports: Ports { main: 20_001, shard: 20_002, metrics: 20_003 },
            cpu: 1,
            disk_path: PathBuf::from("/tmp/a \"b\"/disk0.img"),
            disk_size_bytes: Some(12 << 30),
            zone_size_bytes: 256 << 20,
        };
        let toml = config.to_toml();
        assert!(toml.contains("listen = \"127.0.0.1:20001\"\nshard_port_base = 20002"), "{toml}");
        assert!(toml.contains("cores = [1]"), "{toml}");
        assert!(toml.contains("path = \"/tmp/a \\\"b\\\"/disk0.img\""), "{toml}");
        assert!(toml.contains("size = \"12288MiB\"\nzone_size = \"256MiB\""), "{toml}");
        assert_eq!(size_text(4097), "4097");
    }

    #[test]
    fn free_ports_are_below_the_ephemeral_range() {
        let ports = free_ports().unwrap();
        assert!(ports.main >= PORT_FIRST && ports.metrics < PORT_LAST);
        assert_eq!((ports.shard, ports.metrics), (ports.main + 1, ports.main + 2));
    }
}
