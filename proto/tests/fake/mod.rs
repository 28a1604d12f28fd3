//! An in-process fake node for the client's tests: a TCP listener whose connections run a
//! handler written by the test, over the crate's own frame and message code. [`FakeConn`]
//! receives requests and sends responses; [`FakeConn::handshake`] and [`FakeConn::serve`] do
//! what a well-behaved node does (HELLO with optional authentication, then an in-memory store),
//! so a test only scripts the misbehaviour it is about.

#![allow(dead_code, reason = "each test crate uses part of the fake")]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::auth::{self, Nonce, Secret};
use proto::messages::{
    AuthChallenge, Capabilities, DiskInfo, DiskState, DiskStatus, ErrorResponse, GetResponse,
    HelloResponse, ListCursor, ListPage, PutOutcome, Request, RequestBody, Response, ResponseBody,
    StatResponse,
};
use proto::wire::{
    self, DISK_ID_ALL, Decoded, HEADER_BYTES, KEY_NONE, Key, Limits, Opcode, REQUEST_ID_NOTICE,
    Status,
};

/// The secret of the authentication tests (docs/PROTOCOL.md's known-answer secret).
pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
/// Most keys in one of the fake's LIST pages.
pub const LIST_PAGE_KEYS_MAX: usize = 8;
/// The fake's challenge nonce.
pub const SERVER_NONCE: Nonce = [0x11; 32];

/// What the fake node announces in HELLO, and how it authenticates.
#[derive(Debug, Clone)]
pub struct Topology {
    pub disks: Vec<DiskInfo>,
    pub capabilities: Capabilities,
    pub value_bytes_max: u32,
    pub requests_in_flight_max: u32,
    /// Require authentication with this secret.
    pub secret: Option<Secret>,
    /// Answer a good proof with a server proof that is wrong.
    pub bogus_server_proof: bool,
}

impl Topology {
    /// Disks 0 and 1, both active, no shard ports.
    pub fn two_disks() -> Topology {
        Topology {
            disks: vec![disk(0, 0), disk(1, 0)],
            capabilities: Capabilities::SHARD_PORTS,
            value_bytes_max: 1 << 20,
            requests_in_flight_max: 128,
            secret: None,
            bogus_server_proof: false,
        }
    }

    pub fn with_secret(mut self) -> Topology {
        self.secret = Some(Secret::new(SECRET).expect("a valid secret"));
        self.capabilities = Capabilities(self.capabilities.0 | Capabilities::AUTH_HMAC_SHA256.0);
        self
    }
}

/// An active disk with id `id` on a shard listening on `shard_port` (0: none).
pub fn disk(id: u16, shard_port: u16) -> DiskInfo {
    DiskInfo {
        disk_id: id,
        state: DiskState::Active,
        shard: id,
        shard_port,
        capacity_bytes: 1 << 30,
        free_bytes: 1 << 29,
        disk_uuid: [id as u8; 16],
    }
}

/// Values by disk and key, shared by a fake's connections (and by several fakes).
#[derive(Debug, Default)]
pub struct Store {
    pub values: Mutex<BTreeMap<(u16, Key), Vec<u8>>>,
}

impl Store {
    pub fn insert(&self, disk: u16, key: Key, value: &[u8]) {
        self.values.lock().unwrap().insert((disk, key), value.to_vec());
    }

    pub fn get(&self, disk: u16, key: &Key) -> Option<Vec<u8>> {
        self.values.lock().unwrap().get(&(disk, *key)).cloned()
    }

    pub fn remove(&self, disk: u16, key: &Key) -> bool {
        self.values.lock().unwrap().remove(&(disk, *key)).is_some()
    }
}

/// A running fake node.
#[derive(Debug)]
pub struct Fake {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Every request other than HELLO received, in order: (opcode, disk id).
    pub log: Arc<Mutex<Vec<(Opcode, u16)>>>,
}

impl Fake {
    /// Listens on a free port of 127.0.0.1; each connection runs `handler` on its own thread.
    pub fn start(handler: impl Fn(FakeConn) + Send + Sync + 'static) -> Fake {
        Fake::start_on(TcpListener::bind("127.0.0.1:0").expect("bind"), handler)
    }

    /// Like [`Fake::start`], on a listener the test bound (to know its port first).
    pub fn start_on(
        listener: TcpListener,
        handler: impl Fn(FakeConn) + Send + Sync + 'static,
    ) -> Fake {
        let addr = listener.local_addr().expect("local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let (accepted, logged) = (Arc::clone(&connections), Arc::clone(&log));
        // The accept thread and the connections' threads end with the test process.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let index = accepted.fetch_add(1, Ordering::SeqCst);
                let conn = FakeConn { stream, index, log: Arc::clone(&logged) };
                let handler = Arc::clone(&handler);
                std::thread::spawn(move || handler(conn));
            }
        });
        Fake { addr, connections, log }
    }

    /// A well-behaved node: HELLO, then the store.
    pub fn serving(topology: Topology, store: Arc<Store>) -> Fake {
        Fake::start(move |mut conn| {
            if conn.handshake(&topology) {
                conn.serve(&topology, &store);
            }
        })
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn log(&self) -> Vec<(Opcode, u16)> {
        self.log.lock().unwrap().clone()
    }
}

/// One accepted connection, as the fake node sees it.
#[derive(Debug)]
pub struct FakeConn {
    pub stream: TcpStream,
    /// 0 for the fake's first connection, 1 for the next, ...
    pub index: usize,
    log: Arc<Mutex<Vec<(Opcode, u16)>>>,
}

impl FakeConn {
    /// The next request and its data; `None` when the client closed the connection.
    pub fn recv(&mut self) -> Option<(Request, Vec<u8>)> {
        let mut header = [0u8; HEADER_BYTES];
        self.stream.read_exact(&mut header).ok()?;
        let Ok(Decoded::Ready(header)) = wire::decode_header(&header, &Limits::default()) else {
            panic!("the client sent a bad header");
        };
        let mut meta = vec![0; header.meta_len as usize];
        let mut data = vec![0; header.data_len as usize];
        self.stream.read_exact(&mut meta).ok()?;
        self.stream.read_exact(&mut data).ok()?;
        let request = Request::decode(&header, &meta).expect("the client sent a bad request");
        if request.body.opcode() != Opcode::Hello {
            self.log.lock().unwrap().push((request.body.opcode(), request.disk_id));
        }
        Some((request, data))
    }

    /// Whether a frame's first byte arrives within `wait` (without consuming it).
    pub fn more_within(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let arrived = matches!(self.stream.peek(&mut [0u8; 1]), Ok(n) if n > 0);
        self.stream.set_read_timeout(None).unwrap();
        arrived
    }

    pub fn send(&mut self, response: &Response, data: &[u8]) {
        let mut out = Vec::new();
        response.encode(&mut out);
        out.extend_from_slice(data);
        // The client may be gone; the test notices through the client's result.
        let _ = self.stream.write_all(&out);
    }

    pub fn reply(&mut self, request: &Request, body: ResponseBody, data: &[u8]) {
        let response = Response {
            request_id: request.request_id,
            opcode: request.body.opcode(),
            disk_id: request.disk_id,
            key: request.key,
            body,
        };
        self.send(&response, data);
    }

    /// A notice (request id 0) with `status`, as a node sends just before it closes.
    pub fn notice(&mut self, status: Status) {
        let body = ResponseBody::Error(ErrorResponse { status, message: "notice".into() });
        let response = Response {
            request_id: REQUEST_ID_NOTICE,
            opcode: Opcode::Hello,
            disk_id: 0,
            key: KEY_NONE,
            body,
        };
        self.send(&response, &[]);
    }

    /// The HELLO exchange as a node does it; false if the client did not get through.
    pub fn handshake(&mut self, topology: &Topology) -> bool {
        let Some((hello, _)) = self.recv() else { return false };
        assert!(matches!(hello.body, RequestBody::Hello(_)), "{hello:?}");
        let mut server_proof = None;
        if let Some(secret) = &topology.secret {
            let challenge = AuthChallenge { server_nonce: SERVER_NONCE };
            self.reply(&hello, ResponseBody::AuthRequired(challenge), &[]);
            let Some((proven, _)) = self.recv() else { return false };
            let RequestBody::Hello(body) = &proven.body else { panic!("{proven:?}") };
            let proof = body.auth.expect("a proof");
            let client_nonce = proof.client_nonce;
            if auth::verify_client_proof(secret, &SERVER_NONCE, &client_nonce, &proof.proof)
                .is_err()
            {
                let refusal = ErrorResponse { status: Status::Unauthorized, message: "no".into() };
                self.reply(&proven, ResponseBody::Error(refusal), &[]);
                return false;
            }
            let mut proof = auth::server_proof(secret, &SERVER_NONCE, &client_nonce);
            if topology.bogus_server_proof {
                proof[0] ^= 1;
            }
            server_proof = Some(proof);
        }
        let response = HelloResponse {
            version: 1,
            capabilities: topology.capabilities,
            value_bytes_max: topology.value_bytes_max,
            requests_in_flight_max: topology.requests_in_flight_max,
            server_proof,
            disks: topology.disks.clone(),
        };
        let id = if topology.secret.is_some() { 2 } else { 1 };
        let response = Response {
            request_id: id,
            opcode: Opcode::Hello,
            disk_id: 0,
            key: KEY_NONE,
            body: ResponseBody::Hello(response),
        };
        self.send(&response, &[]);
        true
    }

    /// Answers every request from `store` until the client closes the connection.
    pub fn serve(&mut self, topology: &Topology, store: &Store) {
        while let Some((request, data)) = self.recv() {
            self.answer(topology, store, &request, &data);
        }
    }

    /// Answers one request from `store`.
    pub fn answer(&mut self, topology: &Topology, store: &Store, request: &Request, data: &[u8]) {
        let (body, data) = answer(topology, store, request, data);
        self.reply(request, body, &data);
    }
}

fn error(status: Status) -> ResponseBody {
    ResponseBody::Error(ErrorResponse { status, message: format!("fake: {status:?}") })
}

/// What a node with `store` answers to `request`.
pub fn answer(
    topology: &Topology,
    store: &Store,
    request: &Request,
    data: &[u8],
) -> (ResponseBody, Vec<u8>) {
    let disk = request.disk_id;
    let all_disks = disk == DISK_ID_ALL && request.body == RequestBody::DiskStatus;
    if !all_disks && !topology.disks.iter().any(|d| d.disk_id == disk) {
        return (error(Status::NoSuchDisk), Vec::new());
    }
    let key = request.key;
    let body = match &request.body {
        RequestBody::Put(put) => {
            if put.check_value(data).is_err() {
                error(Status::ChecksumMismatch)
            } else {
                match store.get(disk, &key) {
                    Some(old) if old == data => ResponseBody::Put(PutOutcome::AlreadyStored),
                    Some(_) => error(Status::ExistsWithOtherContent),
                    None => {
                        store.insert(disk, key, data);
                        ResponseBody::Put(PutOutcome::Stored)
                    }
                }
            }
        }
        RequestBody::Get(get) => {
            let Some(value) = store.get(disk, &key) else {
                return (error(Status::NotFound), Vec::new());
            };
            let (offset, len) = match get.range {
                Some(range) => (range.offset as usize, range.len as usize),
                None => (0, value.len()),
            };
            let Some(bytes) = value.get(offset..offset + len) else {
                return (error(Status::BadRange), Vec::new());
            };
            let get = GetResponse {
                value_len: value.len() as u32,
                value_crc32c: wire::crc32c(&value),
                offset: offset as u32,
                data_len: len as u32,
                data_crc32c: wire::crc32c(bytes),
            };
            return (ResponseBody::Get(get), bytes.to_vec());
        }
        RequestBody::Delete => {
            if store.remove(disk, &key) {
                ResponseBody::Delete
            } else {
                error(Status::NotFound)
            }
        }
        RequestBody::Stat => match store.get(disk, &key) {
            Some(value) => ResponseBody::Stat(StatResponse {
                value_len: value.len() as u32,
                value_crc32c: wire::crc32c(&value),
                seq: 42,
            }),
            None => error(Status::NotFound),
        },
        RequestBody::Exists => ResponseBody::Exists(store.get(disk, &key).is_some()),
        RequestBody::List(list) => {
            let keys: Vec<Key> = store
                .values
                .lock()
                .unwrap()
                .keys()
                .filter(|(d, _)| *d == disk)
                .map(|(_, key)| *key)
                .collect();
            let start = list.cursor.and_then(|c| c.to_u64()).unwrap_or(0) as usize;
            // Fewer than asked for, as a node may: clients must follow the cursor.
            let page_keys = (list.keys_max as usize).min(LIST_PAGE_KEYS_MAX);
            let end = (start + page_keys).min(keys.len());
            let next = (end < keys.len()).then(|| ListCursor::from_u64(end as u64));
            ResponseBody::List(ListPage { keys: keys[start.min(end)..end].to_vec(), next })
        }
        RequestBody::DiskStatus => {
            let values = store.values.lock().unwrap();
            let disks = topology
                .disks
                .iter()
                .filter(|d| disk == DISK_ID_ALL || d.disk_id == disk)
                .map(|info| {
                    let live = values.iter().filter(|((d, _), _)| *d == info.disk_id);
                    DiskStatus {
                        info: *info,
                        live_keys: live.clone().count() as u64,
                        live_value_bytes: live.map(|(_, v)| v.len() as u64).sum(),
                        checksum_errors: 0,
                    }
                })
                .collect();
            ResponseBody::DiskStatus(disks)
        }
        RequestBody::Hello(_) => error(Status::BadRequest),
    };
    (body, Vec::new())
}

/// A key made from `n`.
pub fn key(n: u8) -> Key {
    let mut key = [0u8; 32];
    key[0] = 0xab;
    key[31] = n;
    key
}
