//! The `shingle` binary against an in-process fake node (`fake/`): what each command prints,
//! and how failures and bad usage end.

#![allow(clippy::unwrap_used, reason = "tests")]

mod fake;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use fake::{Fake, Store, Topology};
use proto::client::key_hex;
use sha2::{Digest as _, Sha256};

/// A directory of its own for each test, removed when it passes.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("shingle-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn shingle(fake: &Fake, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shingle"));
    command
        .arg("--server")
        .arg(fake.addr.to_string())
        .arg("--timeout-ms")
        .arg("60000")
        .args(args)
        .env_remove("SHINGLE_SERVER")
        .env_remove("SHINGLE_SECRET_FILE");
    command
}

fn run(fake: &Fake, args: &[&str]) -> Output {
    shingle(fake, args).stdin(Stdio::null()).output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The one line a failure prints, after checking the exit status.
fn failure(output: &Output, code: i32) -> String {
    assert_eq!(output.status.code(), Some(code), "{output:?}");
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    key_hex(&Sha256::digest(bytes).into())
}

#[test]
fn put_prints_the_sha256_key_and_get_writes_the_value_back() {
    let dir = TempDir::new("put-get");
    let store = Arc::new(Store::default());
    let fake = Fake::serving(Topology::two_disks(), Arc::clone(&store));
    let content: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let input = dir.0.join("input");
    std::fs::write(&input, &content).unwrap();

    let key = sha256_hex(&content);
    let printed = stdout(&run(&fake, &["put", input.to_str().unwrap()]));
    assert_eq!(printed, format!("{key}\n"));
    assert_eq!(fake.log(), [(proto::wire::Opcode::Put, 0)], "the lowest active disk");

    let output = dir.0.join("output");
    let printed = stdout(&run(&fake, &["get", &key, "-o", output.to_str().unwrap()]));
    assert!(printed.is_empty());
    assert_eq!(std::fs::read(&output).unwrap(), content);

    // To stdout, a range, from the disk the key was found on.
    let got = run(&fake, &["get", &key, "--range", "10:5", "-o", "-"]);
    assert!(got.status.success(), "{got:?}");
    assert_eq!(got.stdout, &content[10..15]);

    let stat = stdout(&run(&fake, &["stat", &key]));
    let crc = crc32c::crc32c(&content);
    assert_eq!(stat, format!("disk=0 length=100000 crc32c={crc:08x} seq=42\n"));

    // Storing it again is no error.
    let again = run(&fake, &["put", input.to_str().unwrap()]);
    assert_eq!(stdout(&again), format!("{key}\n"));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already stored"));

    assert_eq!(stdout(&run(&fake, &["list", "--disk", "0"])), format!("{key}\n"));
    assert!(stdout(&run(&fake, &["delete", &key])).is_empty());
    assert!(store.values.lock().unwrap().is_empty());
}

#[test]
fn put_reads_stdin_and_takes_a_disk_and_key() {
    let store = Arc::new(Store::default());
    let fake = Fake::serving(Topology::two_disks(), Arc::clone(&store));
    let key = "ab".repeat(32);
    let mut child = shingle(&fake, &["put", "--disk", "1", "--key", &key, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"from stdin").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(stdout(&output), format!("{key}\n"));
    assert_eq!(store.get(1, &[0xab; 32]).unwrap(), b"from stdin");
}

#[test]
fn list_pages_and_limits() {
    let store = Arc::new(Store::default());
    for n in 0..30 {
        store.insert(1, fake::key(n), &[n]);
    }
    let fake = Fake::serving(Topology::two_disks(), Arc::clone(&store));
    let all = stdout(&run(&fake, &["list", "--disk", "1"]));
    let expected: Vec<String> = (0..30).map(|n| key_hex(&fake::key(n))).collect();
    assert_eq!(all.lines().collect::<Vec<_>>(), expected);
    // Across pages (the fake's hold at most 8 keys).
    let some = stdout(&run(&fake, &["list", "--disk", "1", "--limit", "19"]));
    assert_eq!(some.lines().collect::<Vec<_>>(), expected[..19]);
}

#[test]
fn status_prints_a_line_per_disk() {
    let store = Arc::new(Store::default());
    store.insert(1, fake::key(1), b"12345");
    let fake = Fake::serving(Topology::two_disks(), store);
    let printed = stdout(&run(&fake, &["status"]));
    let lines: Vec<Vec<&str>> = printed.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines.len(), 3, "{printed}");
    assert_eq!(lines[0][0], "disk");
    let capacity = (1u64 << 30).to_string();
    let free = (1u64 << 29).to_string();
    assert_eq!(lines[2], ["1", "active", "1", "0", &capacity, &free, "1", "5", "0"]);
}

#[test]
fn failures_exit_1_with_one_line() {
    let fake = Fake::serving(Topology::two_disks(), Arc::default());
    let absent = "00".repeat(32);
    let stderr = failure(&run(&fake, &["get", &absent]), 1);
    assert_eq!(stderr, format!("shingle: key {absent} not found on any disk\n"));
    let stderr = failure(&run(&fake, &["get", &absent, "--disk", "1"]), 1);
    assert_eq!(stderr, format!("shingle: key {absent} not found on disk 1\n"));
    let stderr = failure(&run(&fake, &["stat", &absent, "--disk", "9"]), 1);
    assert_eq!(stderr, "shingle: the node has no disk 9\n");
    let stderr = failure(&run(&fake, &["put", "/nonexistent/file"]), 1);
    assert!(stderr.starts_with("shingle: opening /nonexistent/file: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // Nobody listens on the port any more.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let output = Command::new(env!("CARGO_BIN_EXE_shingle"))
        .args(["--server", &closed, "status"])
        .env_remove("SHINGLE_SECRET_FILE")
        .output()
        .unwrap();
    let stderr = failure(&output, 1);
    assert!(stderr.starts_with(&format!("shingle: connecting to {closed}: ")), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(stderr.matches("os error").count(), 1, "the cause once: {stderr}");
}

#[test]
fn a_key_that_is_not_64_hex_digits_is_bad_usage() {
    let fake = Fake::serving(Topology::two_disks(), Arc::default());
    let stderr = failure(&run(&fake, &["get", "abc"]), 2);
    assert!(stderr.contains("a key is exactly 64 hex digits"), "{stderr}");
    let stderr = failure(&run(&fake, &["stat", &"g".repeat(64)]), 2);
    assert!(stderr.contains("other characters"), "{stderr}");
    assert_eq!(fake.connections(), 0, "nothing was sent");
}

#[test]
fn a_node_that_requires_authentication_needs_the_secret_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("auth");
    let fake = Fake::serving(Topology::two_disks().with_secret(), Arc::default());
    let stderr = failure(&run(&fake, &["status"]), 1);
    assert_eq!(
        stderr,
        "shingle: authentication failed: the node requires authentication; pass a secret file\n"
    );
    let secret = dir.0.join("secret");
    std::fs::write(&secret, [fake::SECRET, b"\n"].concat()).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let printed = stdout(&run(&fake, &["--secret-file", secret.to_str().unwrap(), "status"]));
    assert_eq!(printed.lines().count(), 3);
}
