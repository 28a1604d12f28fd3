//! End to end: the real `shingled` binary on loopback with two file-backed disks on two cores,
//! driven through the client library, the `shingle` CLI and raw frames. Every limit of
//! docs/PROTOCOL.md is hit on purpose, and after each the daemon still serves other clients.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Node, Options};
use proto::auth::Secret;
use proto::client::{Client, ClientError, ClientOptions};
use proto::messages::{
    ByteRange, Capabilities, DiskState, HelloRequest, PutOutcome, PutRequest, Request, RequestBody,
    Response, ResponseBody,
};
use proto::wire::{self, Decoded, HEADER_BYTES, KEY_NONE, Key, Limits, PROTOCOL_VERSION, Status};

fn key(n: u64) -> Key {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&n.to_le_bytes());
    key[8..16]
        .copy_from_slice(&(n ^ 0x5bd1_e995).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    key[31] = 0xa5;
    key
}

fn value(n: u64, len: usize) -> Vec<u8> {
    let mut state = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn client(addr: SocketAddr, shard_aware: bool) -> Client {
    let options = ClientOptions { shard_aware, ..ClientOptions::default() };
    Client::connect(addr, options).unwrap()
}

/// A raw connection for frames the client library would never send.
struct Raw {
    stream: TcpStream,
    rx: Vec<u8>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw { stream, rx: Vec::new() }
    }

    fn send(&mut self, request: &Request, value: &[u8]) {
        let mut out = Vec::new();
        request.encode(&mut out);
        out.extend_from_slice(value);
        self.stream.write_all(&out).unwrap();
    }

    fn hello(&mut self) -> Response {
        let hello = HelloRequest {
            version_min: 1,
            version_max: PROTOCOL_VERSION,
            capabilities: Capabilities::NONE,
            auth: None,
        };
        self.send(
            &Request { request_id: 1, disk_id: 0, key: KEY_NONE, body: RequestBody::Hello(hello) },
            &[],
        );
        self.response().unwrap().0
    }

    /// The next answer's request id and status, whatever its opcode (an UNKNOWN_OPCODE answer
    /// repeats an opcode no decoder knows), or `None` when the server closed the connection.
    fn answer(&mut self) -> Option<(u32, u16)> {
        while self.rx.len() < HEADER_BYTES {
            if !self.read_more() {
                return None;
            }
        }
        let request_id = u32::from_le_bytes(self.rx[8..12].try_into().unwrap());
        let status = u16::from_le_bytes(self.rx[14..16].try_into().unwrap());
        let meta_len = u32::from_le_bytes(self.rx[16..20].try_into().unwrap()) as usize;
        let data_len = u32::from_le_bytes(self.rx[20..24].try_into().unwrap()) as usize;
        let total = HEADER_BYTES + meta_len + data_len;
        while self.rx.len() < total {
            assert!(self.read_more(), "closed inside a frame");
        }
        self.rx.drain(..total);
        Some((request_id, status))
    }

    fn read_more(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        match self.stream.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.rx.extend_from_slice(&buf[..n]);
                true
            }
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(err) => panic!("reading a response: {err}"),
        }
    }

    /// The next response, or `None` when the server closed the connection.
    fn response(&mut self) -> Option<(Response, Vec<u8>)> {
        loop {
            match wire::decode_frame(&self.rx, &Limits::format_max()).unwrap() {
                Decoded::Ready(frame) => {
                    let response = Response::decode(&frame.header, frame.meta).unwrap();
                    let data = frame.data.to_vec();
                    let used = frame.frame_bytes();
                    self.rx.drain(..used);
                    return Some((response, data));
                }
                Decoded::NeedMore { .. } => {
                    if !self.read_more() {
                        return None;
                    }
                }
            }
        }
    }

    /// Reads until the server closes; panics if it answers something else first.
    fn expect_closed(&mut self) {
        if let Some((response, _)) = self.response() {
            panic!("expected the connection to close, got {response:?}");
        }
    }
}

fn status_of(response: &Response) -> Status {
    response.status()
}

fn put_request(id: u32, disk: u16, key: Key, value: &[u8]) -> Request {
    Request {
        request_id: id,
        disk_id: disk,
        key,
        body: RequestBody::Put(PutRequest {
            value_len: value.len() as u32,
            value_crc32c: wire::crc32c(value),
        }),
    }
}

/// The daemon answers on both disks whatever core a connection lands on.
fn check_everything_works(client: &Client, base: u64) {
    for disk in [0u16, 1] {
        let k = key(base + u64::from(disk));
        let v = value(base + u64::from(disk), 10_000 + usize::from(disk) * 70_000);
        assert_eq!(client.put(disk, &k, &v).unwrap(), PutOutcome::Stored);
        assert_eq!(client.put(disk, &k, &v).unwrap(), PutOutcome::AlreadyStored);
        let got = client.get(disk, &k, None).unwrap();
        assert_eq!(got.data, v);
        assert_eq!(got.value_crc32c, wire::crc32c(&v));
        let range = client.get(disk, &k, Some(ByteRange { offset: 100, len: 50 })).unwrap();
        assert_eq!(range.data, v[100..150]);
        assert_eq!(range.offset, 100);
        let stat = client.stat(disk, &k).unwrap();
        assert_eq!(stat.value_len as usize, v.len());
        assert!(client.exists(disk, &k).unwrap());
    }
}

#[test]
fn put_get_range_delete_stat_list_on_two_cores_forwarded_and_shard_aware() {
    let node = Node::new(&Options::default());
    let daemon = node.start();

    // Not shard-aware: every request goes to the main port, so the requests for one of the
    // two disks are forwarded to the other core.
    let plain = client(node.addr(), false);
    let hello = plain.hello();
    assert_eq!(hello.disks.len(), 2);
    assert!(hello.capabilities.contains(Capabilities::SHARD_PORTS));
    for (i, disk) in hello.disks.iter().enumerate() {
        assert_eq!(disk.disk_id, i as u16);
        assert_eq!(disk.shard, i as u16);
        assert_eq!(disk.shard_port, node.ports.shard_base + i as u16);
        assert_eq!(disk.state, DiskState::Active);
        assert!(disk.capacity_bytes > 0 && disk.free_bytes <= disk.capacity_bytes);
    }
    check_everything_works(&plain, 1000);

    // Shard-aware: each disk's requests go straight to its core's port.
    let sharded = client(node.addr(), true);
    check_everything_works(&sharded, 2000);

    // A request sent to core 1's shard port for core 0's disk is forwarded too.
    let shard1 = SocketAddr::from(([127, 0, 0, 1], node.ports.shard_base + 1));
    let direct = client(shard1, false);
    let k = key(3000);
    direct.put(0, &k, b"through core 1").unwrap();
    assert_eq!(plain.get(0, &k, None).unwrap().data, b"through core 1");

    // Delete, and what a deleted key answers.
    plain.delete(0, &k).unwrap();
    let err = plain.get(0, &k, None).unwrap_err();
    assert_eq!(err.status(), Some(Status::NotFound), "{err}");
    assert!(!plain.exists(0, &k).unwrap());
    assert_eq!(plain.delete(0, &k).unwrap_err().status(), Some(Status::NotFound));

    // Other content under a stored key is refused; a range outside the value too.
    let k = key(1000);
    let err = plain.put(0, &k, b"other content").unwrap_err();
    assert_eq!(err.status(), Some(Status::ExistsWithOtherContent), "{err}");
    let err = plain.get(0, &k, Some(ByteRange { offset: 9_999, len: 2 })).unwrap_err();
    assert_eq!(err.status(), Some(Status::BadRange), "{err}");
    let err = plain.get(7, &k, None).unwrap_err();
    assert!(matches!(err, ClientError::NoSuchDisk(7)), "{err}");

    // LIST pages through every key of a disk.
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = sharded.list(1, cursor, 1).unwrap();
        listed.extend(page.keys);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    listed.sort();
    let mut expected = vec![key(1001), key(2001)];
    expected.sort();
    assert_eq!(listed, expected);

    // DISK_STATUS counts what is stored.
    let status = plain.disk_status(None).unwrap();
    assert_eq!(status.len(), 2);
    assert_eq!(status[1].live_keys, 2);
    assert_eq!(status[1].live_value_bytes, 2 * 80_000);
    assert_eq!(status[0].checksum_errors, 0);
    daemon.stop();
}

#[test]
fn a_restart_keeps_everything_and_a_crash_keeps_every_acknowledged_put() {
    let node = Node::new(&Options::default());
    let daemon = node.start();
    let c = client(node.addr(), true);
    for n in 0..200u64 {
        c.put((n % 2) as u16, &key(n), &value(n, 1 + (n as usize * 997) % 20_000)).unwrap();
    }
    drop(c);
    daemon.stop();

    let daemon = node.start();
    let c = client(node.addr(), true);
    for n in 0..200u64 {
        let got = c.get((n % 2) as u16, &key(n), None).unwrap();
        assert_eq!(got.data, value(n, 1 + (n as usize * 997) % 20_000), "key {n}");
    }
    // More, then a crash: every acknowledged PUT is there after the restart. Values of 1 MiB
    // and up are written from the buffer they were received in (a batch of their own), the
    // others copied into shared batches; both kinds, on both disks, shard-aware and not.
    for n in 200..400u64 {
        c.put((n % 2) as u16, &key(n), &value(n, 4096)).unwrap();
    }
    let forwarded = client(node.addr(), false);
    for n in 400..406u64 {
        let via = if n < 403 { &c } else { &forwarded };
        via.put((n % 2) as u16, &key(n), &value(n, large_len(n))).unwrap();
    }
    drop(c);
    drop(forwarded);
    daemon.kill();

    let daemon = node.start();
    let c = client(node.addr(), true);
    for n in 0..406u64 {
        let len = match n {
            0..200 => 1 + (n as usize * 997) % 20_000,
            200..400 => 4096,
            _ => large_len(n),
        };
        assert_eq!(c.get((n % 2) as u16, &key(n), None).unwrap().data, value(n, len), "key {n}");
    }
    drop(c);
    daemon.stop();
}

/// Lengths from just under 1 MiB to 3 MiB: the smallest shares a batch, the others do not.
fn large_len(n: u64) -> usize {
    [(1 << 20) - 4096, 1 << 20, (3 << 20) + 5][(n % 3) as usize]
}

#[test]
fn authentication_on_refuses_everything_but_hello_until_the_proof_verifies() {
    let secret_bytes = b"an-example-shared-secret-of-40-bytes-xyz";
    let node = Node::new(&Options::default());
    let secret_path = node.dir.path().join("secret");
    std::fs::write(&secret_path, secret_bytes).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let node = Node::new(&Options {
        server_extra: format!("auth_secret_file = \"{}\"", secret_path.display()),
        ..Options::default()
    });
    let daemon = node.start();

    // The right secret works, on the main and the shard connections.
    let options = ClientOptions {
        secret: Some(Arc::new(Secret::new(secret_bytes).unwrap())),
        ..ClientOptions::default()
    };
    let good = Client::connect(node.addr(), options).unwrap();
    assert!(good.hello().capabilities.contains(Capabilities::AUTH_HMAC_SHA256));
    check_everything_works(&good, 100);

    // No secret, or the wrong one: refused.
    let err = Client::connect(node.addr(), ClientOptions::default()).unwrap_err();
    assert!(matches!(err, ClientError::AuthFailed(_)), "{err}");
    let wrong = ClientOptions {
        secret: Some(Arc::new(Secret::new(b"another-secret-that-is-long-enough-000").unwrap())),
        ..ClientOptions::default()
    };
    let err = Client::connect(node.addr(), wrong).unwrap_err();
    assert!(matches!(err, ClientError::AuthFailed(_)), "{err}");

    // A request before HELLO is answered UNAUTHORIZED; HELLO then gets a challenge.
    let mut raw = Raw::connect(node.addr());
    raw.send(&put_request(5, 0, key(1), b"x"), b"x");
    let (response, _) = raw.response().unwrap();
    assert_eq!(status_of(&response), Status::Unauthorized);
    assert!(matches!(raw.hello().body, ResponseBody::AuthRequired(_)));
    drop(raw);

    // The authenticated client is still served after all those refusals.
    check_everything_works(&good, 200);
    daemon.stop();

    let open = Node::new(&Options::default());
    let daemon = open.start();
    let mut raw = Raw::connect(open.addr());
    let hello = raw.hello();
    let ResponseBody::Hello(hello) = hello.body else { panic!("{hello:?}") };
    assert!(!hello.capabilities.contains(Capabilities::AUTH_HMAC_SHA256));
    assert_eq!(hello.server_proof, None);
    daemon.stop();
}

#[test]
fn every_limit_hit_on_purpose_and_the_daemon_still_serves() {
    let node = Node::new(&Options {
        server_extra: "max_connections = 6\nmax_in_flight_per_connection = 4\n\
                       read_timeout_ms = 500\nidle_timeout_ms = 1000\n"
            .into(),
        ..Options::default()
    });
    let daemon = node.start();
    let addr = node.addr();
    let good = client(addr, false);
    assert_eq!(good.hello().requests_in_flight_max, 4);

    // Garbage bytes: closed.
    let mut raw = Raw::connect(addr);
    raw.stream.write_all(&[0xab; 200]).unwrap();
    raw.expect_closed();

    // A flipped bit in a header: closed.
    let mut raw = Raw::connect(addr);
    let mut frame = Vec::new();
    put_request(9, 0, key(9), b"abc").encode(&mut frame);
    frame[20] ^= 1;
    frame.extend_from_slice(b"abc");
    raw.stream.write_all(&frame).unwrap();
    raw.expect_closed();

    // A frame over the frame limit (16 MiB + 64 KiB by default): VALUE_TOO_LARGE, then closed,
    // without the daemon reading (or allocating) the value.
    let mut raw = Raw::connect(addr);
    let mut frame = Vec::new();
    let huge = Request {
        request_id: 3,
        disk_id: 0,
        key: key(3),
        body: RequestBody::Put(PutRequest { value_len: 64 << 20, value_crc32c: 0 }),
    };
    huge.encode(&mut frame);
    raw.stream.write_all(&frame).unwrap();
    let (response, _) = raw.response().unwrap();
    assert_eq!(status_of(&response), Status::ValueTooLarge);
    assert_eq!(response.request_id, 3);
    raw.expect_closed();

    // On one connection: an unknown opcode, a bad PUT checksum, a request id 0, each answered,
    // and the connection goes on serving.
    let mut raw = Raw::connect(addr);
    let mut unknown = Vec::new();
    put_request(11, 0, key(11), b"v").encode(&mut unknown);
    unknown[5] = 0x7e; // the opcode
    let crc = wire::crc32c(&unknown[..60]);
    unknown[60..64].copy_from_slice(&crc.to_le_bytes());
    unknown.push(b'v');
    raw.stream.write_all(&unknown).unwrap();
    assert_eq!(raw.answer(), Some((11, Status::UnknownOpcode as u16)));
    let mut bad_crc = put_request(12, 0, key(12), b"value");
    if let RequestBody::Put(put) = &mut bad_crc.body {
        put.value_crc32c ^= 1;
    }
    raw.send(&bad_crc, b"value");
    let (response, _) = raw.response().unwrap();
    assert_eq!((response.request_id, status_of(&response)), (12, Status::ChecksumMismatch));
    assert!(!good.exists(0, &key(12)).unwrap(), "nothing stored after a checksum mismatch");
    raw.send(&put_request(13, 0, key(13), b"fine"), b"fine");
    let (response, _) = raw.response().unwrap();
    assert_eq!((response.request_id, status_of(&response)), (13, Status::Ok));

    // Many more requests in flight than the limit: the daemon stops reading at 4 and goes on
    // as it answers; every request is answered, none refused.
    let mut burst = Vec::new();
    for id in 100..164u32 {
        Request {
            request_id: id,
            disk_id: (id % 2) as u16,
            key: key(13),
            body: RequestBody::Exists,
        }
        .encode(&mut burst);
    }
    raw.stream.write_all(&burst).unwrap();
    let mut answered = Vec::new();
    for _ in 100..164 {
        let (response, _) = raw.response().unwrap();
        assert_eq!(status_of(&response), Status::Ok);
        answered.push(response.request_id);
    }
    answered.sort_unstable();
    assert_eq!(answered, (100..164).collect::<Vec<_>>());

    // A slow client that never finishes its frame is closed after the read timeout.
    let mut slow = Raw::connect(addr);
    let started = Instant::now();
    slow.stream.write_all(&frame[..HEADER_BYTES / 2]).unwrap();
    slow.expect_closed();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400), "closed after {waited:?}");
    assert!(waited < Duration::from_secs(15), "closed after {waited:?}");

    // A PUT whose large value stops arriving halfway (the daemon receives such a value in
    // one operation): closed after the read timeout, and nothing is stored.
    let mut stalled = Raw::connect(addr);
    let big = value(77, 2 << 20);
    let mut frame = Vec::new();
    put_request(77, 0, key(77), &big).encode(&mut frame);
    frame.extend_from_slice(&big[..1 << 20]);
    let started = Instant::now();
    stalled.stream.write_all(&frame).unwrap();
    stalled.expect_closed();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400), "closed after {waited:?}");
    assert!(waited < Duration::from_secs(15), "closed after {waited:?}");
    assert!(!good.exists(0, &key(77)).unwrap(), "nothing stored from a stalled value");

    // An idle connection is closed after the idle timeout.
    let mut idle = Raw::connect(addr);
    let started = Instant::now();
    idle.expect_closed();
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());

    // The connection limit: 6 in all (`good` and `raw` hold one each, unless the idle timeout
    // closed them); open connections until one is refused with a BUSY notice.
    let mut extra = Vec::new();
    let refused = loop {
        let mut conn = Raw::connect(addr);
        conn.stream.set_read_timeout(Some(Duration::from_millis(150))).unwrap();
        let mut byte = [0u8; HEADER_BYTES];
        match conn.stream.read(&mut byte) {
            Ok(n) if n > 0 => {
                conn.rx.extend_from_slice(&byte[..n]);
                conn.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                break conn;
            }
            _ => {
                conn.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                extra.push(conn);
                assert!(extra.len() <= 8, "no connection was refused");
            }
        }
    };
    let mut refused = refused;
    let (notice, _) = refused.response().unwrap();
    assert_eq!((notice.request_id, status_of(&notice)), (wire::REQUEST_ID_NOTICE, Status::Busy));
    refused.expect_closed();
    drop(extra);
    drop(raw);

    // After all of that, a new client is served.
    std::thread::sleep(Duration::from_millis(200));
    let fresh = client(addr, true);
    check_everything_works(&fresh, 500);
    check_everything_works(&good, 600);
    let log = daemon.stop();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_value_over_the_cap_within_the_frame_limit_is_answered_and_skipped() {
    let node = Node::new(&Options::default());
    // value cap 16 MiB (default); raise the frame limit so a 17 MiB frame is within it.
    let config = std::fs::read_to_string(&node.config).unwrap();
    let config = config.replace("[server]\n", "[server]\nmax_frame_bytes = \"32MiB\"\n");
    std::fs::write(&node.config, config).unwrap();
    let daemon = node.start();
    let mut raw = Raw::connect(node.addr());
    let big = vec![7u8; 17 << 20];
    raw.send(&put_request(21, 1, key(21), &big), &big);
    let (response, _) = raw.response().unwrap();
    assert_eq!((response.request_id, status_of(&response)), (21, Status::ValueTooLarge));
    // The skipped value did not desynchronise the stream.
    raw.send(&put_request(22, 1, key(22), b"after"), b"after");
    let (response, _) = raw.response().unwrap();
    assert_eq!((response.request_id, status_of(&response)), (22, Status::Ok));
    daemon.stop();
}

#[test]
fn the_cli_puts_gets_lists_and_fails_with_one_line() {
    let node = Node::new(&Options::default());
    let daemon = node.start();
    let cli = common::shingle_cli();
    let server = node.addr().to_string();
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let mut child = std::process::Command::new(&cli)
            .arg("--server")
            .arg(&server)
            .args(args)
            .current_dir(node.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    let content = value(77, 200_000);
    std::fs::write(node.dir.path().join("in.bin"), &content).unwrap();
    let out = run(&["put", "--disk", "1", "in.bin"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key_hex = String::from_utf8(out.stdout).unwrap().trim().to_string();
    use sha2::Digest as _;
    let expected: String =
        sha2::Sha256::digest(&content).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(key_hex, expected);

    let out = run(&["get", &key_hex, "-o", "out.bin"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(node.dir.path().join("out.bin")).unwrap(), content);
    let out = run(&["get", &key_hex, "--range", "10:5"], None);
    assert_eq!(out.stdout, content[10..15]);
    let out = run(&["put", "-"], Some(b"from stdin"));
    assert!(out.status.success());
    let out = run(&["list", "--disk", "1"], None);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), key_hex);
    let out = run(&["stat", &key_hex], None);
    assert!(String::from_utf8(out.stdout).unwrap().contains("200000"));
    let out = run(&["status"], None);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3, "header + 2 disks");
    let out = run(&["delete", &key_hex], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["get", &key_hex], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("shingle: ") && stderr.trim().lines().count() == 1, "{stderr}");
    daemon.stop();
}

/// Resident memory of a process, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn a_client_that_does_not_read_its_answers_is_not_read_either() {
    let node = Node::new(&Options {
        server_extra: "max_in_flight_per_connection = 8\n".into(),
        ..Options::default()
    });
    let daemon = node.start();
    let c = client(node.addr(), false);
    let v = value(5, 100_000);
    c.put(0, &key(5), &v).unwrap();
    let before = rss_bytes(daemon.child.id());

    // 2,000 GETs of 100 KB: 200 MB of answers if the daemon queued them all.
    let mut raw = Raw::connect(node.addr());
    let mut requests = Vec::new();
    for id in 1..=2000u32 {
        let get = RequestBody::Get(proto::messages::GetRequest { range: None });
        Request { request_id: id, disk_id: 0, key: key(5), body: get }.encode(&mut requests);
    }
    raw.stream.write_all(&requests).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let grown = rss_bytes(daemon.child.id()).saturating_sub(before);
    assert!(grown < 48 << 20, "the daemon grew by {grown} bytes for a client that does not read");

    // Other clients are served meanwhile, and every answer arrives once the client reads.
    assert_eq!(c.get(0, &key(5), None).unwrap().data, v);
    for _ in 1..=2000u32 {
        let (response, data) = raw.response().unwrap();
        assert_eq!(status_of(&response), Status::Ok);
        assert_eq!(data, v);
    }
    daemon.stop();
}
