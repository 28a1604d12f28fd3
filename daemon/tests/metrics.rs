//! The metrics endpoint of the real `shingled` binary: scraped over a plain TCP connection,
//! validated with `promtool check metrics`, and checked to count what the client did (requests
//! by disk, op and status; value bytes in and out; batches), including while both cores are
//! busy serving clients.
//!
//! promtool comes with Debian's `prometheus` package. Without it the format check is skipped
//! with a message, unless `SHINGLE_REQUIRE_PROMTOOL` is set (CI sets it): then it fails.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Node, Options};
use proto::client::{Client, ClientOptions};
use proto::messages::{PutOutcome, Request, RequestBody};
use proto::wire::{HEADER_BYTES, Key, Status};

fn key(n: u64) -> Key {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&n.to_le_bytes());
    key[8..16].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    key[31] = 0x3c;
    key
}

fn value(n: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (n as usize).wrapping_mul(31).wrapping_add(i) as u8).collect()
}

/// `GET /metrics` over a plain TCP connection: the status line, headers and body.
fn http_get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a header/body separator");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

/// The exposition text of a scrape, checked to be a 200 with the text format's content type.
fn scrape(addr: SocketAddr) -> String {
    let (status, headers, body) = http_get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{headers}\n{body}");
    assert!(headers.contains("Content-Type: text/plain; version=0.0.4"), "{headers}");
    let length: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, body.len());
    body
}

/// Scrapes until `ready` says the exposition is complete (at most 10 s).
fn scrape_until(addr: SocketAddr, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(addr);
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "the exposition stays incomplete:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether both cores have started serving: each registers its metrics as it does. (The node
/// logs that it serves a moment before: a request forwarded to a core in that moment is
/// answered SHUTTING_DOWN.)
fn serving(text: &str) -> bool {
    ["0", "1"].iter().all(|core| {
        sample(text, &format!(r#"shingle_connections{{core="{core}"}}"#)).is_some()
            && sample(text, &format!(r#"shingle_disk_state{{disk="{core}",state="active"}}"#))
                == Some(1.0)
    })
}

/// The value of the sample `series` (`name{labels}` exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// The value of `series`, or 0 when the series does not exist yet.
fn value_of(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or(0.0)
}

/// Runs `promtool check metrics` on `text` (lint problems fail the test too).
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("SHINGLE_REQUIRE_PROMTOOL").is_none(),
                "promtool is not installed and SHINGLE_REQUIRE_PROMTOOL is set \
                 (apt-get install prometheus)"
            );
            eprintln!(
                "SKIPPED: promtool check metrics (promtool not installed; apt-get install prometheus)"
            );
            return;
        }
        Err(err) => panic!("running promtool: {err}"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A STAT of some key on `disk`, as a raw frame (the client library refuses unknown disks
/// itself); returns the answer's status.
fn raw_stat(addr: SocketAddr, disk: u16) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = Request { request_id: 5, disk_id: disk, key: key(1), body: RequestBody::Stat };
    let mut out = Vec::new();
    request.encode(&mut out);
    stream.write_all(&out).unwrap();
    let mut header = [0u8; HEADER_BYTES];
    stream.read_exact(&mut header).unwrap();
    u16::from_le_bytes([header[14], header[15]])
}

/// A frame with a bad magic: the node closes the connection without an answer.
fn bad_frame(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(&[0u8; HEADER_BYTES]).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no answer to a bad frame");
}

fn client(node: &Node, shard_aware: bool) -> Client {
    let options = ClientOptions { shard_aware, retries: 0, ..ClientOptions::default() };
    Client::connect(node.addr(), options).unwrap()
}

#[test]
fn counts_what_clients_did_and_passes_promtool() {
    let node = Node::new(&Options::default());
    let running = node.start();
    let addr = node.metrics_addr();
    // Everything a node exports before any request. Each core registers its disks' metrics
    // as it starts serving, a moment after the node says it serves.
    let expected = [
        r#"shingle_build_info{version="0.1.0"}"#,
        r#"shingle_disk_state{disk="0",state="active"}"#,
        r#"shingle_disk_state{disk="1",state="active"}"#,
        r#"shingle_requests_total{disk="0",op="put",status="ok"}"#,
        r#"shingle_requests_total{disk="1",op="put",status="ok"}"#,
        r#"shingle_connections{core="0"}"#,
        r#"shingle_connections{core="1"}"#,
        r#"shingle_recovery_duration_seconds{disk="1"}"#,
        r#"shingle_zones{disk="0",condition="empty"}"#,
    ];
    let before = scrape_until(addr, |text| {
        serving(text) && expected.iter().all(|s| sample(text, s).is_some())
    });
    promtool_check(&before);
    assert_eq!(sample(&before, r#"shingle_disk_state{disk="0",state="active"}"#), Some(1.0));
    assert_eq!(sample(&before, r#"shingle_disk_state{disk="0",state="failed"}"#), Some(0.0));
    let capacity = value_of(&before, r#"shingle_capacity_bytes{disk="0"}"#);
    assert!(capacity > 0.0, "{before}");
    assert_eq!(value_of(&before, r#"shingle_free_bytes{disk="0"}"#), capacity);

    // Through the main port, so that disk 1's requests are forwarded by whichever core took
    // the connection half the time, and through shard ports.
    const PUTS: u64 = 20;
    const LEN: usize = 3000;
    let main = client(&node, false);
    let sharded = client(&node, true);
    for n in 0..PUTS {
        let c = if n % 2 == 0 { &main } else { &sharded };
        assert_eq!(c.put(0, &key(n), &value(n, LEN)).unwrap(), PutOutcome::Stored);
        assert_eq!(c.put(1, &key(n), &value(n, LEN)).unwrap(), PutOutcome::Stored);
    }
    for n in 0..PUTS {
        assert_eq!(sharded.get(0, &key(n), None).unwrap().data, value(n, LEN));
    }
    // Three failures of known kinds.
    let other = sharded.put(0, &key(0), &value(99, LEN)).unwrap_err();
    assert_eq!(other.status(), Some(Status::ExistsWithOtherContent));
    let missing = sharded.get(0, &key(1_000_000), None).unwrap_err();
    assert_eq!(missing.status(), Some(Status::NotFound));
    assert_eq!(raw_stat(node.addr(), 7), Status::NoSuchDisk as u16);
    bad_frame(node.addr());
    main.disk_status(None).unwrap();

    let after = scrape(addr);
    promtool_check(&after);
    let delta = |series: &str| value_of(&after, series) - value_of(&before, series);
    for disk in ["0", "1"] {
        let puts = format!(r#"shingle_requests_total{{disk="{disk}",op="put",status="ok"}}"#);
        assert_eq!(delta(&puts), PUTS as f64, "{puts}\n{after}");
        let bytes = format!(r#"shingle_value_received_bytes_total{{disk="{disk}",op="put"}}"#);
        assert_eq!(delta(&bytes), (PUTS as usize * LEN) as f64, "{bytes}");
        // Disk 0 also timed the PUT that found other content.
        let timed = format!(r#"shingle_request_duration_seconds_count{{disk="{disk}",op="put"}}"#);
        let conflicts = if disk == "0" { 1.0 } else { 0.0 };
        assert_eq!(delta(&timed), PUTS as f64 + conflicts, "{timed}");
        let batches = format!(r#"shingle_batches_total{{disk="{disk}"}}"#);
        assert!(delta(&batches) >= 1.0, "{batches}");
        let records = format!(r#"shingle_batch_records_sum{{disk="{disk}"}}"#);
        assert_eq!(delta(&records), PUTS as f64, "{records}");
        let keys = format!(r#"shingle_live_keys{{disk="{disk}"}}"#);
        assert_eq!(value_of(&after, &keys), PUTS as f64, "{keys}");
        let live = format!(r#"shingle_live_bytes{{disk="{disk}"}}"#);
        assert_eq!(value_of(&after, &live), (PUTS as usize * LEN) as f64, "{live}");
    }
    let gets = r#"shingle_requests_total{disk="0",op="get",status="ok"}"#;
    assert_eq!(delta(gets), PUTS as f64);
    let sent = r#"shingle_value_sent_bytes_total{disk="0",op="get"}"#;
    assert_eq!(delta(sent), (PUTS as usize * LEN) as f64);
    let conflict =
        r#"shingle_requests_total{disk="0",op="put",status="exists_with_other_content"}"#;
    assert_eq!(delta(conflict), 1.0);
    assert_eq!(delta(r#"shingle_requests_total{disk="0",op="get",status="not_found"}"#), 1.0);
    let unknown = r#"shingle_requests_total{disk="unknown",op="stat",status="no_such_disk"}"#;
    assert_eq!(delta(unknown), 1.0);
    let closed = delta(r#"shingle_protocol_errors_total{core="0",kind="closed"}"#)
        + delta(r#"shingle_protocol_errors_total{core="1",kind="closed"}"#);
    assert_eq!(closed, 1.0, "the frame with a bad magic");
    let status = r#"shingle_requests_total{disk="node",op="disk_status",status="ok"}"#;
    assert_eq!(delta(status), 1.0);
    let hellos = delta(r#"shingle_requests_total{disk="node",op="hello",status="ok"}"#);
    assert!(hellos >= 2.0, "one per connection: {hellos}");
    let forwarded = delta(r#"shingle_forwarded_requests_total{core="0"}"#)
        + delta(r#"shingle_forwarded_requests_total{core="1"}"#);
    assert!(forwarded >= 1.0, "disk 1 requests through the main port of core 0 are forwarded");
    let connections = value_of(&after, r#"shingle_connections{core="0"}"#)
        + value_of(&after, r#"shingle_connections{core="1"}"#);
    assert!(connections >= 2.0, "{after}");
    // Other paths and methods.
    assert_eq!(http_get(addr, "/").0, "HTTP/1.1 404 Not Found");
    drop((main, sharded));
    running.stop();
}

#[test]
fn scrapes_while_both_cores_serve_clients() {
    let node = Node::new(&Options::default());
    let running = node.start();
    let addr = node.metrics_addr();
    // Both cores serve once they registered their metrics (see `serving` below).
    scrape_until(addr, serving);
    let stop = AtomicBool::new(false);
    let stored = AtomicU64::new(0);
    let mut scrape_times = Vec::new();
    std::thread::scope(|s| {
        // Four clients, two per disk, each through its shard port and through the main port.
        for worker in 0..4u64 {
            let (node, stop, stored) = (&node, &stop, &stored);
            s.spawn(move || {
                let c = client(node, worker % 2 == 0);
                let disk = (worker % 2) as u16;
                for i in 0..5_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let n = worker << 32 | i;
                    c.put(disk, &key(n), &value(n, 8192)).unwrap();
                    assert_eq!(c.get(disk, &key(n), None).unwrap().data.len(), 8192);
                    stored.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Scrape every 100 ms for 3 s while they run.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            let t = Instant::now();
            let text = scrape(addr);
            scrape_times.push(t.elapsed());
            assert!(sample(&text, r#"shingle_in_flight_requests{core="0"}"#).is_some());
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let slowest = scrape_times.iter().max().unwrap();
    assert!(*slowest < Duration::from_secs(2), "a scrape took {slowest:?}");
    let text = scrape(addr);
    promtool_check(&text);
    let puts: f64 = ["0", "1"]
        .iter()
        .map(|d| {
            value_of(
                &text,
                &format!(r#"shingle_requests_total{{disk="{d}",op="put",status="ok"}}"#),
            )
        })
        .sum();
    let stored = stored.load(Ordering::Relaxed);
    assert!(stored > 0);
    assert_eq!(puts, stored as f64, "every PUT the clients saw succeed is counted once");
    // Once the clients stopped, nothing is in flight and every byte of the budgets is back
    // (the last replies' buffers are released when their send completes: give it a moment).
    let settled = |text: &str| {
        ["0", "1"].iter().all(|core| {
            value_of(text, &format!(r#"shingle_in_flight_requests{{core="{core}"}}"#)) == 0.0
                && value_of(text, &format!(r#"shingle_budget_used_bytes{{core="{core}"}}"#)) == 0.0
        })
    };
    scrape_until(addr, settled);
    eprintln!(
        "{} scrapes under load, slowest {slowest:?}; {stored} PUT+GET pairs",
        scrape_times.len()
    );
    running.stop();
}
