//! The real `shingled` binary: config checking, two file-backed disks on two cores, a clean
//! stop on SIGTERM, and a restart that finds the clean checkpoints.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const TWO_DISKS: &str = r#"
[server]
listen = "127.0.0.1:17700"
shard_port_base = 17710
[metrics]
listen = "127.0.0.1:19700"
[[disk]]
id = 0
path = "d0.img"
size = "512MiB"
zone_size = "64MiB"
core = 0
[[disk]]
id = 1
path = "d1.img"
size = "512MiB"
zone_size = "64MiB"
"#;

fn shingled() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shingled"))
}

/// Starts the daemon and returns it with a channel of its log lines.
fn start(dir: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = shingled()
        .arg("--config")
        .arg(dir.join("shingled.toml"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Waits for `count` log lines containing `needle`; returns them.
fn wait_for(rx: &mpsc::Receiver<String>, needle: &str, count: usize) -> Vec<String> {
    let mut found = Vec::new();
    while found.len() < count {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no {needle:?} in the log"));
        if line.contains(needle) {
            found.push(line);
        }
    }
    found
}

fn stop(child: &mut Child) {
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "shingled exited with {exit}");
}

#[test]
fn check_config_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[disk]]\nid = 0\npath = \"a\"\nsize = \"4GB\"\nzone_size = \"1000\"\nbogus = 1\n",
    )
    .unwrap();
    let out = shingled().arg("check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for field in ["disk[0].size", "disk[0].zone_size", "bogus"] {
        assert!(stderr.contains(field), "{field} not named in:\n{stderr}");
    }
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn two_disks_on_two_cores_stop_cleanly_and_restart_from_their_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shingled.toml"), TWO_DISKS).unwrap();
    let out =
        shingled().arg("check-config").arg(dir.path().join("shingled.toml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (mut child, rx) = start(dir.path());
    let formatted = wait_for(&rx, "formatted a new disk", 2);
    assert_eq!(formatted.len(), 2);
    wait_for(&rx, "disk ready", 2);
    stop(&mut child);
    let closed: Vec<String> =
        rx.iter().filter(|l| l.contains("closed with a clean checkpoint")).collect();
    assert_eq!(closed.len(), 2, "{closed:?}");

    let (mut child, rx) = start(dir.path());
    let ready = wait_for(&rx, "disk ready", 2);
    for line in &ready {
        assert!(line.contains("clean_checkpoint=true"), "{line}");
    }
    stop(&mut child);
}
