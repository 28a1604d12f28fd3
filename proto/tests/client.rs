//! The client library against an in-process fake node (`fake/`): the handshake and topology,
//! pipelining with answers out of order, the in-flight limit, integrity checks, timeouts,
//! retries after lost connections and notices, DELETE's retry rule, authentication, unknown
//! disks, and shard-aware routing.

#![allow(clippy::unwrap_used, reason = "tests")]

mod fake;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use fake::{Fake, Store, Topology, disk, key};
use proto::auth::Secret;
use proto::client::{Client, ClientError, ClientOptions, CompletionQueue};
use proto::messages::{
    ByteRange, Capabilities, GetResponse, HelloRequest, PutOutcome, PutRequest, RequestBody,
    ResponseBody,
};
use proto::wire::{KEY_NONE, Opcode, Status};

/// Generous, so that a loaded machine does not fail a test; the tests that wait for a timeout
/// set their own.
fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(20),
        request_timeout: Duration::from_secs(60),
        ..ClientOptions::default()
    }
}

fn connect(fake: &Fake) -> Client {
    Client::connect(fake.addr, options()).unwrap()
}

#[test]
fn hello_reports_the_topology_and_every_operation_works() {
    let mut topology = Topology::two_disks();
    topology.value_bytes_max = 4096;
    topology.requests_in_flight_max = 7;
    let store = Arc::new(Store::default());
    let fake = Fake::serving(topology.clone(), Arc::clone(&store));
    let client = connect(&fake);

    let hello = client.hello();
    assert_eq!(hello.version, 1);
    assert_eq!(hello.value_bytes_max, 4096);
    assert_eq!(hello.requests_in_flight_max, 7);
    assert_eq!(client.disks(), topology.disks.as_slice());
    assert_eq!(client.addr(), fake.addr);

    assert_eq!(client.put(1, &key(1), b"hello").unwrap(), PutOutcome::Stored);
    assert_eq!(client.put(1, &key(1), b"hello").unwrap(), PutOutcome::AlreadyStored);
    let err = client.put(1, &key(1), b"other").unwrap_err();
    assert_eq!(err.status(), Some(Status::ExistsWithOtherContent), "{err}");
    assert_eq!(store.get(1, &key(1)).unwrap(), b"hello");

    let got = client.get(1, &key(1), None).unwrap();
    assert_eq!((got.value_len, got.offset, got.data.as_slice()), (5, 0, &b"hello"[..]));
    let range = ByteRange { offset: 1, len: 3 };
    assert_eq!(client.get(1, &key(1), Some(range)).unwrap().data, b"ell");
    let stat = client.stat(1, &key(1)).unwrap();
    assert_eq!((stat.value_len, stat.value_crc32c), (5, crc32c::crc32c(b"hello")));
    assert!(client.exists(1, &key(1)).unwrap());
    assert!(!client.exists(0, &key(1)).unwrap());

    for n in 10..15 {
        client.put(0, &key(n), &[n]).unwrap();
    }
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = client.list(0, cursor, 2).unwrap();
        assert!(page.keys.len() <= 2);
        listed.extend(page.keys);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, (10..15).map(key).collect::<Vec<_>>());

    let all = client.disk_status(None).unwrap();
    assert_eq!(
        all.iter().map(|d| (d.info.disk_id, d.live_keys)).collect::<Vec<_>>(),
        [(0, 5), (1, 1)]
    );
    assert_eq!(client.disk_status(Some(1)).unwrap().len(), 1);

    client.delete(1, &key(1)).unwrap();
    let err = client.get(1, &key(1), None).unwrap_err();
    assert_eq!(err.status(), Some(Status::NotFound), "{err}");
    // No connection was lost, so NOT_FOUND is the answer.
    let err = client.delete(1, &key(1)).unwrap_err();
    assert_eq!(err.status(), Some(Status::NotFound), "{err}");
    assert_eq!(fake.connections(), 1);
}

#[test]
fn requests_are_refused_before_sending_when_they_cannot_be_valid() {
    let fake = Fake::serving(Topology::two_disks(), Arc::default());
    let client = connect(&fake);
    assert!(matches!(client.get(7, &key(1), None), Err(ClientError::NoSuchDisk(7))));
    assert!(matches!(client.put(9, &key(1), b"x"), Err(ClientError::NoSuchDisk(9))));
    assert!(matches!(client.disk_status(Some(3)), Err(ClientError::NoSuchDisk(3))));
    assert!(matches!(client.put(0, &key(1), b""), Err(ClientError::InvalidRequest(_))));
    let big = vec![0u8; (1 << 20) + 1];
    assert!(matches!(client.put(0, &key(1), &big), Err(ClientError::ValueTooLarge { .. })));
    assert!(matches!(client.list(0, None, 0), Err(ClientError::InvalidRequest(_))));
    let empty = Some(ByteRange { offset: 0, len: 0 });
    assert!(matches!(client.get(0, &key(1), empty), Err(ClientError::InvalidRequest(_))));
    fn invalid<T>(result: Result<T, ClientError>) -> bool {
        matches!(result, Err(ClientError::InvalidRequest(_)))
    }
    assert!(invalid(client.submit(0, key(1), RequestBody::Stat, Some(b"a value"))));
    assert!(invalid(client.submit(0, key(1), RequestBody::DiskStatus, None)), "a key");
    let hello = HelloRequest {
        version_min: 1,
        version_max: 1,
        capabilities: Capabilities::NONE,
        auth: None,
    };
    assert!(invalid(client.submit(0, KEY_NONE, RequestBody::Hello(hello), None)));
    let put = RequestBody::Put(PutRequest { value_len: 3, value_crc32c: 0 });
    assert!(invalid(client.submit(0, key(1), put.clone(), None)), "no value");
    assert!(invalid(client.submit(0, key(1), put, Some(b"four"))), "another length");
    let zero = ClientOptions { request_timeout: Duration::ZERO, ..options() };
    assert!(invalid(Client::connect(fake.addr, zero)));
    // Nothing but HELLO reached the node.
    assert_eq!(fake.log(), []);
}

#[test]
fn pipelined_requests_are_matched_to_answers_in_any_order() {
    const THREADS: u8 = 8;
    let store = Arc::new(Store::default());
    for n in 0..THREADS {
        store.insert(0, key(n), &[n; 100]);
    }
    let topology = Topology::two_disks();
    let fake_store = Arc::clone(&store);
    let fake = Fake::start(move |mut conn| {
        assert!(conn.handshake(&topology));
        // Every request is in flight before the first answer, and the answers go out last
        // request first.
        let requests: Vec<_> = (0..THREADS).map(|_| conn.recv().unwrap()).collect();
        for (request, data) in requests.iter().rev() {
            conn.answer(&topology, &fake_store, request, data);
        }
        conn.serve(&topology, &fake_store);
    });
    let client = connect(&fake);
    std::thread::scope(|scope| {
        for n in 0..THREADS {
            let client = &client;
            scope.spawn(move || {
                let got = client.get(0, &key(n), None).unwrap();
                assert_eq!(got.data, [n; 100], "request for key {n}");
            });
        }
    });
    assert_eq!(fake.connections(), 1, "one connection carried every request");
}

#[test]
fn submit_keeps_many_requests_in_flight_from_one_thread() {
    let store = Arc::new(Store::default());
    for n in 0..20 {
        store.insert(1, key(n), &[n]);
    }
    let topology = Topology::two_disks();
    let fake_store = Arc::clone(&store);
    let fake = Fake::start(move |mut conn| {
        assert!(conn.handshake(&topology));
        let requests: Vec<_> = (0..20).map(|_| conn.recv().unwrap()).collect();
        for (request, data) in requests.iter().rev() {
            conn.answer(&topology, &fake_store, request, data);
        }
    });
    let client = connect(&fake);
    let pending: Vec<_> =
        (0..20).map(|n| client.submit(1, key(n), RequestBody::Stat, None).unwrap()).collect();
    let ids: std::collections::HashSet<u32> = pending.iter().map(|p| p.request_id()).collect();
    assert_eq!(ids.len(), 20, "request ids are unique");
    assert!(!ids.contains(&0));
    for (n, pending) in pending.into_iter().enumerate() {
        let reply = pending.wait().unwrap();
        assert_eq!(reply.response.key, key(n as u8));
        assert!(matches!(reply.response.body, ResponseBody::Stat(stat) if stat.value_len == 1));
    }
}

#[test]
fn a_completion_queue_takes_answers_in_the_order_they_arrive() {
    let store = Arc::new(Store::default());
    for n in 0..20 {
        store.insert(1, key(n), &[n; 3]);
    }
    let topology = Topology::two_disks();
    let fake_store = Arc::clone(&store);
    let fake = Fake::start(move |mut conn| {
        assert!(conn.handshake(&topology));
        let requests: Vec<_> = (0..20).map(|_| conn.recv().unwrap()).collect();
        for (request, data) in requests.iter().rev() {
            conn.answer(&topology, &fake_store, request, data);
        }
    });
    let client = connect(&fake);
    let queue = CompletionQueue::new();
    let mut out = Vec::new();
    assert_eq!(queue.wait(&mut out, Duration::from_secs(5)), 0, "nothing outstanding");
    for n in 0..20u8 {
        let get = RequestBody::Get(proto::messages::GetRequest { range: None });
        client.submit_to(&queue, 100 + u64::from(n), 1, key(n), get, None).unwrap();
    }
    assert_eq!(queue.len(), 20);
    while out.len() < 20 {
        queue.wait(&mut out, Duration::from_secs(30));
    }
    let tags: Vec<u64> = out.iter().map(|c| c.tag).collect();
    assert_eq!(tags, (100..120).rev().collect::<Vec<_>>(), "the node answered last-first");
    for completion in out {
        let n = (completion.tag - 100) as u8;
        let reply = completion.result.unwrap();
        assert_eq!((reply.response.key, reply.data), (key(n), vec![n; 3]));
    }
    assert!(queue.is_empty());
    assert_eq!(queue.wait(&mut Vec::new(), Duration::from_secs(5)), 0);
}

#[test]
fn a_completion_queue_times_requests_out_and_fails_them_when_the_connection_is_lost() {
    let topology = Topology::two_disks();
    let (close, closed) = mpsc::channel::<()>();
    let closed = Mutex::new(closed);
    let fake = Fake::start(move |mut conn| {
        assert!(conn.handshake(&topology));
        // Never answers; closes the connection when told.
        let _ = closed.lock().unwrap().recv();
        drop(conn);
    });
    let client = Client::connect(
        fake.addr,
        ClientOptions { request_timeout: Duration::from_millis(300), ..options() },
    )
    .unwrap();
    let queue = CompletionQueue::new();
    client.submit_to(&queue, 7, 0, key(1), RequestBody::Exists, None).unwrap();
    let mut out = Vec::new();
    let started = Instant::now();
    while out.is_empty() {
        queue.wait(&mut out, Duration::from_secs(30));
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out[0].tag, 7);
    assert!(matches!(out[0].result, Err(ClientError::Timeout)), "{:?}", out[0].result);

    let client = Client::connect(fake.addr, options()).unwrap();
    for tag in 0..3 {
        client.submit_to(&queue, tag, 0, key(1), RequestBody::Exists, None).unwrap();
    }
    close.send(()).unwrap();
    close.send(()).unwrap();
    let mut out = Vec::new();
    while out.len() < 3 {
        queue.wait(&mut out, Duration::from_secs(30));
    }
    for completion in &out {
        assert!(matches!(completion.result, Err(ClientError::Disconnected)), "{completion:?}");
    }
}

#[test]
fn a_batch_sends_its_requests_together_and_each_is_answered_once() {
    const LIMIT: usize = 4;
    let mut topology = Topology::two_disks();
    topology.requests_in_flight_max = LIMIT as u32;
    let store = Arc::new(Store::default());
    let exceeded = Arc::new(AtomicBool::new(false));
    let (fake_store, fake_exceeded) = (Arc::clone(&store), Arc::clone(&exceeded));
    let fake = Fake::start(move |mut conn| {
        assert!(conn.handshake(&topology));
        // In rounds of LIMIT requests; no further request may come while they are unanswered.
        loop {
            let mut round = Vec::new();
            for _ in 0..LIMIT {
                match conn.recv() {
                    Some(request) => round.push(request),
                    None => return,
                }
            }
            if conn.more_within(Duration::from_millis(100)) {
                fake_exceeded.store(true, Ordering::SeqCst);
            }
            for (request, data) in round.iter().rev() {
                conn.answer(&topology, &fake_store, request, data);
            }
        }
    });
    let client = connect(&fake);
    let queue = CompletionQueue::new();
    let values: Vec<Vec<u8>> = (0..3 * LIMIT as u8).map(|n| vec![n; 10 + usize::from(n)]).collect();
    let mut batch = client.batch(&queue);
    for (n, value) in values.iter().enumerate() {
        let put = RequestBody::Put(PutRequest {
            value_len: value.len() as u32,
            value_crc32c: crc32c::crc32c(value),
        });
        batch.submit(n as u64, 1, key(n as u8), put, Some(value)).unwrap();
    }
    batch.send();
    let mut out = Vec::new();
    while out.len() < values.len() {
        queue.wait(&mut out, Duration::from_secs(30));
    }
    let mut tags: Vec<u64> = out.iter().map(|c| c.tag).collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..values.len() as u64).collect::<Vec<_>>(), "each answered once");
    for completion in out {
        let reply = completion.result.unwrap();
        assert!(matches!(reply.response.body, ResponseBody::Put(PutOutcome::Stored)));
    }
    for (n, value) in values.iter().enumerate() {
        assert_eq!(store.get(1, &key(n as u8)).unwrap(), *value, "value {n} arrived whole");
    }
    assert!(!exceeded.load(Ordering::SeqCst), "more than {LIMIT} requests were in flight");
    assert!(queue.is_empty());
}

#[test]
fn a_completion_queue_gets_nothing_for_a_request_refused_before_sending() {
    let fake = Fake::serving(Topology::two_disks(), Arc::new(Store::default()));
    let client = connect(&fake);
    let queue = CompletionQueue::new();
    let err = client.submit_to(&queue, 1, 9, key(1), RequestBody::Stat, None).unwrap_err();
    assert!(matches!(err, ClientError::NoSuchDisk(9)), "{err}");
    assert!(queue.is_empty());
    assert_eq!(queue.wait(&mut Vec::new(), Duration::from_secs(5)), 0);
}

#[test]
fn no_more_than_the_nodes_in_flight_limit_is_sent() {
    const LIMIT: usize = 2;
    let mut topology = Topology::two_disks();
    topology.requests_in_flight_max = LIMIT as u32;
    let store = Arc::new(Store::default());
    let exceeded = Arc::new(AtomicBool::new(false));
    let (fake_store, fake_exceeded) = (Arc::clone(&store), Arc::clone(&exceeded));
    let fake = Fake::start(move |mut conn| {
        assert!(conn.handshake(&topology));
        // In rounds: take LIMIT requests, check that no further one comes while they are
        // unanswered, then answer them.
        loop {
            let mut round = Vec::new();
            for _ in 0..LIMIT {
                match conn.recv() {
                    Some(request) => round.push(request),
                    None => return,
                }
            }
            if conn.more_within(Duration::from_millis(200)) {
                fake_exceeded.store(true, Ordering::SeqCst);
            }
            for (request, data) in &round {
                conn.answer(&topology, &fake_store, request, data);
            }
        }
    });
    let client = connect(&fake);
    std::thread::scope(|scope| {
        for n in 0..(3 * LIMIT as u8) {
            let client = &client;
            scope.spawn(move || assert!(!client.exists(0, &key(n)).unwrap()));
        }
    });
    assert!(!exceeded.load(Ordering::SeqCst), "more than {LIMIT} requests were in flight");
}

#[test]
fn get_bytes_that_fail_their_checksum_are_never_returned() {
    let topology = Topology::two_disks();
    let fake = Fake::start(move |mut conn| {
        assert!(conn.handshake(&topology));
        while let Some((request, _)) = conn.recv() {
            let crc = crc32c::crc32c(b"hello");
            let get = GetResponse {
                value_len: 5,
                value_crc32c: crc,
                offset: 0,
                data_len: 5,
                data_crc32c: crc,
            };
            // One bit flipped in transit.
            conn.reply(&request, ResponseBody::Get(get), b"hellO");
        }
    });
    let client = connect(&fake);
    let err = client.get(0, &key(1), None).unwrap_err();
    let ClientError::Integrity(message) = &err else { panic!("{err:?}") };
    assert!(message.contains("checksum mismatch"), "{message}");
    assert_eq!(fake.log(), [(Opcode::Get, 0)], "an integrity error is not retried");
}

#[test]
fn a_request_not_answered_in_time_times_out_and_its_late_answer_is_dropped() {
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let store = Arc::new(Store::default());
    store.insert(0, key(2), b"two");
    let topology = Topology::two_disks();
    let fake_store = Arc::clone(&store);
    let fake = Fake::start(move |mut conn| {
        assert!(conn.handshake(&topology));
        let (stuck, _) = conn.recv().unwrap();
        // Answered only after the client gave up on it.
        released.lock().unwrap().recv().unwrap();
        conn.reply(&stuck, ResponseBody::Exists(true), &[]);
        conn.serve(&topology, &fake_store);
    });
    let timeout = Duration::from_secs(2);
    let options = ClientOptions { request_timeout: timeout, ..options() };
    let client = Client::connect(fake.addr, options).unwrap();
    let started = Instant::now();
    let err = client.exists(0, &key(1)).unwrap_err();
    assert!(matches!(err, ClientError::Timeout), "{err:?}");
    assert!(started.elapsed() >= timeout);
    release.send(()).unwrap();
    // The late answer (EXISTS true, for key 1) must not be taken for this request's answer.
    assert_eq!(client.stat(0, &key(2)).unwrap().value_len, 3);
    assert!(!client.exists(0, &key(1)).unwrap());
    assert_eq!(fake.connections(), 1);
}

#[test]
fn a_connection_lost_mid_request_is_reopened_and_the_request_retried() {
    let store = Arc::new(Store::default());
    let topology = Topology::two_disks();
    let fake_store = Arc::clone(&store);
    let fake = Fake::start(move |mut conn| {
        assert!(conn.handshake(&topology));
        if conn.index == 0 {
            // Read the request, then drop the connection without an answer.
            let _ = conn.recv().unwrap();
            return;
        }
        conn.serve(&topology, &fake_store);
    });
    let client = connect(&fake);
    assert_eq!(client.put(0, &key(1), b"value").unwrap(), PutOutcome::Stored);
    assert_eq!(store.get(0, &key(1)).unwrap(), b"value");
    assert_eq!(fake.connections(), 2);
    assert_eq!(fake.log(), [(Opcode::Put, 0), (Opcode::Put, 0)]);
}

#[test]
fn a_lost_connection_fails_the_request_when_retries_are_off() {
    let topology = Topology::two_disks();
    let fake = Fake::start(move |mut conn| {
        assert!(conn.handshake(&topology));
        let _ = conn.recv();
    });
    let client = Client::connect(fake.addr, ClientOptions { retries: 0, ..options() }).unwrap();
    let err = client.stat(0, &key(1)).unwrap_err();
    assert!(matches!(err, ClientError::Disconnected), "{err:?}");
    assert!(err.is_retryable());
}

#[test]
fn a_busy_notice_fails_what_is_in_flight_and_the_request_is_retried() {
    let store = Arc::new(Store::default());
    store.insert(0, key(1), b"abc");
    let topology = Topology::two_disks();
    let fake_store = Arc::clone(&store);
    let fake = Fake::start(move |mut conn| {
        assert!(conn.handshake(&topology));
        if conn.index == 0 {
            let _ = conn.recv().unwrap();
            conn.notice(Status::Busy);
            return;
        }
        conn.serve(&topology, &fake_store);
    });
    let client = connect(&fake);
    assert_eq!(client.stat(0, &key(1)).unwrap().value_len, 3);
    assert_eq!(fake.connections(), 2);
}

#[test]
fn a_busy_notice_at_connect_is_retried() {
    let topology = Topology::two_disks();
    let fake = Fake::start(move |mut conn| {
        if conn.index == 0 {
            // Over the connection limit: a notice, then close, before reading anything.
            conn.notice(Status::Busy);
            return;
        }
        assert!(conn.handshake(&topology));
        conn.serve(&topology, &Store::default());
    });
    let client = connect(&fake);
    assert_eq!(client.disks().len(), 2);
    assert_eq!(fake.connections(), 2);
}

#[test]
fn a_node_that_stays_busy_fails_the_connect_after_the_retries() {
    let fake = Fake::start(|mut conn| conn.notice(Status::Busy));
    let err = Client::connect(fake.addr, ClientOptions { retries: 0, ..options() }).unwrap_err();
    assert_eq!(err.status(), Some(Status::Busy), "{err}");
    assert_eq!(fake.connections(), 1);
    let err = Client::connect(fake.addr, ClientOptions { retries: 2, ..options() }).unwrap_err();
    assert_eq!(err.status(), Some(Status::Busy), "{err}");
    assert_eq!(fake.connections(), 4);
}

#[test]
fn a_delete_retried_after_a_lost_connection_counts_not_found_as_done() {
    let store = Arc::new(Store::default());
    store.insert(0, key(1), b"doomed");
    let topology = Topology::two_disks();
    let fake_store = Arc::clone(&store);
    let fake = Fake::start(move |mut conn| {
        assert!(conn.handshake(&topology));
        if conn.index == 0 {
            // The delete takes effect, but its answer is lost with the connection.
            let (request, _) = conn.recv().unwrap();
            assert!(fake_store.remove(request.disk_id, &request.key));
            return;
        }
        conn.serve(&topology, &fake_store);
    });
    let client = connect(&fake);
    client.delete(0, &key(1)).unwrap();
    assert_eq!(fake.log(), [(Opcode::Delete, 0), (Opcode::Delete, 0)]);
    assert!(store.get(0, &key(1)).is_none());
}

#[test]
fn authentication_with_the_shared_secret() {
    let topology = Topology::two_disks().with_secret();
    let fake = Fake::serving(topology, Arc::default());
    let secret = Arc::new(Secret::new(fake::SECRET).unwrap());
    let options = ClientOptions { secret: Some(secret), ..options() };
    let client = Client::connect(fake.addr, options).unwrap();
    assert!(client.hello().server_proof.is_some());
    assert_eq!(client.put(0, &key(1), b"authenticated").unwrap(), PutOutcome::Stored);
}

#[test]
fn authentication_failures() {
    let fake = Fake::serving(Topology::two_disks().with_secret(), Arc::default());
    let connect_with = |secret: Option<&[u8]>| {
        let secret = secret.map(|s| Arc::new(Secret::new(s).unwrap()));
        Client::connect(fake.addr, ClientOptions { secret, ..options() }).unwrap_err()
    };
    let err = connect_with(Some(b"0123456789abcdef0123456789abcdeX"));
    let ClientError::AuthFailed(message) = &err else { panic!("{err:?}") };
    assert!(message.contains("refused"), "{message}");

    let err = connect_with(None);
    let ClientError::AuthFailed(message) = &err else { panic!("{err:?}") };
    assert_eq!(message, "the node requires authentication; pass a secret file");

    // A node that accepts the proof but cannot prove it holds the secret.
    let mut impostor = Topology::two_disks().with_secret();
    impostor.bogus_server_proof = true;
    let fake = Fake::serving(impostor, Arc::default());
    let secret = Some(Arc::new(Secret::new(fake::SECRET).unwrap()));
    let err = Client::connect(fake.addr, ClientOptions { secret, ..options() }).unwrap_err();
    let ClientError::AuthFailed(message) = &err else { panic!("{err:?}") };
    assert!(message.contains("does not hold"), "{message}");
}

#[test]
fn requests_go_to_their_shards_port() {
    let store = Arc::new(Store::default());
    let shard_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let shard_port = shard_listener.local_addr().unwrap().port();
    let mut topology = Topology::two_disks();
    topology.disks = vec![disk(0, 0), disk(1, shard_port), disk(2, shard_port)];
    let (main_topology, main_store) = (topology.clone(), Arc::clone(&store));
    let main = Fake::serving(main_topology, main_store);
    let (shard_topology, shard_store) = (topology.clone(), Arc::clone(&store));
    let shard = Fake::start_on(shard_listener, move |mut conn| {
        if conn.handshake(&shard_topology) {
            conn.serve(&shard_topology, &shard_store);
        }
    });

    let client = connect(&main);
    client.put(1, &key(1), b"one").unwrap();
    client.put(2, &key(2), b"two").unwrap();
    client.put(0, &key(0), b"zero").unwrap();
    assert_eq!(shard.log(), [(Opcode::Put, 1), (Opcode::Put, 2)]);
    assert_eq!(main.log(), [(Opcode::Put, 0)]);
    assert_eq!(shard.connections(), 1, "disks of one shard share its connection");
    // A request for every disk goes to the main port.
    client.disk_status(None).unwrap();
    assert_eq!(main.log().last(), Some(&(Opcode::DiskStatus, proto::wire::DISK_ID_ALL)));

    // Not shard-aware: everything goes to the main port.
    let options = ClientOptions { shard_aware: false, ..options() };
    let client = Client::connect(main.addr, options).unwrap();
    client.get(1, &key(1), None).unwrap();
    assert_eq!(main.log().last(), Some(&(Opcode::Get, 1)));
    assert_eq!(shard.log().len(), 2);

    // A node without SHARD_PORTS: its ports are not used either.
    let mut no_shards = topology;
    no_shards.capabilities = Capabilities::NONE;
    let plain = Fake::serving(no_shards, Arc::clone(&store));
    connect(&plain).get(2, &key(2), None).unwrap();
    assert_eq!(plain.log(), [(Opcode::Get, 2)]);
    assert_eq!(shard.log().len(), 2);
}

#[test]
fn a_shard_port_that_cannot_be_reached_falls_back_to_the_main_port() {
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut topology = Topology::two_disks();
    topology.disks = vec![disk(0, 0), disk(1, closed_port)];
    let fake = Fake::serving(topology, Arc::default());
    let client = connect(&fake);
    client.put(1, &key(1), b"one").unwrap();
    assert!(client.exists(1, &key(1)).unwrap());
    assert_eq!(fake.log(), [(Opcode::Put, 1), (Opcode::Exists, 1)]);
}

#[test]
fn a_client_is_shared_by_threads_for_mixed_work() {
    let fake = Fake::serving(Topology::two_disks(), Arc::default());
    let client = connect(&fake);
    std::thread::scope(|scope| {
        for n in 0..16u8 {
            let client = &client;
            scope.spawn(move || {
                let disk = u16::from(n % 2);
                let value = vec![n; 1000 + usize::from(n)];
                client.put(disk, &key(n), &value).unwrap();
                assert_eq!(client.get(disk, &key(n), None).unwrap().data, value);
                client.delete(disk, &key(n)).unwrap();
                assert!(!client.exists(disk, &key(n)).unwrap());
            });
        }
    });
    assert_eq!(fake.connections(), 1);
}
