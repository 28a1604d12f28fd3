//! The real `shingled` under a service manager's eyes: the notify protocol over a real unix
//! datagram socket (READY=1 only once the disks are recovered and the listeners are up,
//! STATUS= lines, STOPPING=1, WATCHDOG=1 pings that stop when a core is wedged), and SIGTERM
//! under write load: every acknowledged PUT is there after the restart, which finds a clean
//! checkpoint; a second SIGTERM exits at once and loses nothing acknowledged either.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Node, Options};
use proto::client::{Client, ClientOptions};
use proto::wire::Key;

fn key(n: u64) -> Key {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&n.to_le_bytes());
    key[8..16].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    key[31] = 0x5c;
    key
}

fn value(n: u64) -> Vec<u8> {
    let len = 512 + (n as usize * 7919) % 30_000;
    (0..len).map(|i| (i as u64 ^ n).wrapping_mul(31) as u8).collect()
}

/// A notify socket and the messages received on it, with when they arrived.
struct Manager {
    path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Manager {
    fn new(dir: &std::path::Path) -> Manager {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let keep = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                keep.lock().unwrap().push((Instant::now(), text));
            }
        });
        Manager { path, messages }
    }

    fn env(&self, watchdog: Option<Duration>) -> Vec<(&'static str, String)> {
        let mut env = vec![("NOTIFY_SOCKET", self.path.display().to_string())];
        if let Some(interval) = watchdog {
            env.push(("WATCHDOG_USEC", interval.as_micros().to_string()));
        }
        env
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    fn wait_for(&self, needle: &str) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((at, _)) = self.all().into_iter().find(|(_, m)| m.contains(needle)) {
                return at;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in {:?}", self.all());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pings_between(&self, from: Instant, to: Instant) -> usize {
        self.all().iter().filter(|(at, m)| m == "WATCHDOG=1" && *at >= from && *at < to).count()
    }
}

#[test]
fn ready_only_after_recovery_status_lines_stopping_and_watchdog_pings() {
    let node = Node::new(&Options::default());
    // Something to recover on the next start.
    let daemon = node.start();
    let client = Client::connect(node.addr(), ClientOptions::default()).unwrap();
    client.put(1, &key(1), &value(1)).unwrap();
    drop(client);
    daemon.stop();

    let manager = Manager::new(node.dir.path());
    let daemon = node.start_with_env(&manager.env(Some(Duration::from_millis(600))));
    manager.wait_for("READY=1");
    // At READY the disks are recovered and the listeners up: the first request, without any
    // retry, finds the key.
    let options = ClientOptions { retries: 0, ..ClientOptions::default() };
    let client = Client::connect(node.addr(), options).unwrap();
    assert_eq!(client.get(1, &key(1), None).unwrap().data, value(1));
    let messages: Vec<String> = manager.all().into_iter().map(|(_, m)| m).collect();
    let ready = messages.iter().position(|m| m.starts_with("READY=1")).unwrap();
    assert!(
        messages[..ready].iter().any(|m| m.starts_with("STATUS=recovering disks")),
        "{messages:?}"
    );
    assert!(messages[ready].contains("STATUS=serving 2 disk(s)"), "{messages:?}");
    let log = daemon.log_text();
    let ready_lines = log.lines().filter(|l| l.contains("disk ready")).count();
    assert_eq!(ready_lines, 2, "both disks recovered before READY:\n{log}");

    // Pings, every 300 ms (half the interval) while every core beats.
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let pings = manager.pings_between(from, Instant::now());
    assert!(pings >= 3, "{pings} pings in 1.5 s: {:?}", manager.all());

    drop(client);
    let log = daemon.stop();
    assert!(log.contains("closed with a clean checkpoint"), "{log}");
    manager.wait_for("STOPPING=1");
}

#[test]
fn a_wedged_core_stops_the_watchdog_pings() {
    let node = Node::new(&Options::default());
    let manager = Manager::new(node.dir.path());
    let mut env = manager.env(Some(Duration::from_millis(400)));
    env.push(("SHINGLE_TEST_WEDGE_CORE", "1:1500".into()));
    let daemon = node.start_with_env(&env);
    let ready = manager.wait_for("READY=1");
    // Before the wedge, pings come; after it (1.5 s after READY), none.
    std::thread::sleep(Duration::from_millis(1200));
    let before = manager.pings_between(ready, ready + Duration::from_millis(1200));
    assert!(before >= 3, "{before} pings before the wedge: {:?}", manager.all());
    daemon.wait_for("blocking this core's thread");
    let wedged = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    // A check that was already under way when the core wedged may still ping once.
    let after = manager.pings_between(wedged + Duration::from_millis(450), Instant::now());
    assert_eq!(after, 0, "pings while core 1 is wedged: {:?}", manager.all());
    daemon.wait_for("cores made no progress");
    daemon.kill();
}

/// Runs PUTs from a few threads until told to stop; returns the keys acknowledged.
fn write_load(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<u64>>> {
    (0..4u64)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let options = ClientOptions { retries: 0, ..ClientOptions::default() };
                let client = Client::connect(addr, options).unwrap();
                let mut acked = Vec::new();
                let mut n = t;
                while !stop.load(Ordering::SeqCst) {
                    if client.put((n % 2) as u16, &key(n), &value(n)).is_err() {
                        break;
                    }
                    acked.push(n);
                    n += 4;
                }
                acked
            })
        })
        .collect()
}

fn check_all_readable(node: &Node, acked: &[u64]) {
    let client = Client::connect(node.addr(), ClientOptions::default()).unwrap();
    for &n in acked {
        let got = client.get((n % 2) as u16, &key(n), None).unwrap();
        assert_eq!(got.data, value(n), "key {n}");
    }
}

#[test]
fn sigterm_under_load_keeps_every_acknowledged_put_and_leaves_a_clean_checkpoint() {
    let node = Node::new(&Options::default());
    let daemon = node.start();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = write_load(node.addr(), stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let log = daemon.stop();
    stop.store(true, Ordering::SeqCst);
    let acked: Vec<u64> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(acked.len() > 50, "only {} PUTs before the stop", acked.len());
    assert!(log.contains("closed with a clean checkpoint"), "{log}");

    let daemon = node.start();
    let log = daemon.log_text();
    let ready: Vec<&str> = log.lines().filter(|l| l.contains("disk ready")).collect();
    assert_eq!(ready.len(), 2, "{log}");
    for line in ready {
        assert!(line.contains("clean_checkpoint=true"), "{line}");
    }
    check_all_readable(&node, &acked);
    daemon.stop();
}

#[test]
fn a_second_sigterm_exits_at_once_and_loses_nothing_acknowledged() {
    let node = Node::new(&Options::default());
    let daemon = node.start();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = write_load(node.addr(), stop.clone());
    std::thread::sleep(Duration::from_millis(1000));
    let pid = daemon.child.id().to_string();
    for _ in 0..2 {
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut daemon = daemon;
    let status = daemon.child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    let acked: Vec<u64> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    // Either the second signal cut the stop short (exit 1) or the stop had already finished.
    assert!(status.code() == Some(1) || status.success(), "{status}");
    drop(daemon);

    let daemon = node.start();
    check_all_readable(&node, &acked);
    daemon.stop();
}
