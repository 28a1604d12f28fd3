//! Frame encode and decode cost: what the server pays per request before any disk I/O.
//!
//! Benchmark ids: `frame/encode/put_request`, `frame/decode/put_request` (header, meta crc and
//! message), `frame/encode/get_response`, `frame/decode/hello_response_64_disks`,
//! `frame/decode/list_page_10000_keys`. Run: `cargo bench -p shingle-proto --bench frame` (add
//! `-- --test` for a one-iteration smoke run).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use proto::messages::{
    Capabilities, DiskInfo, DiskState, GetResponse, HelloResponse, ListCursor, ListPage,
    PutRequest, Request, RequestBody, Response, ResponseBody,
};
use proto::wire::{self, Decoded, Limits, Opcode};

fn key(n: u32) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..4].copy_from_slice(&n.to_le_bytes());
    key[31] = 0x77;
    key
}

fn decode_response(bytes: &[u8]) -> Response {
    match wire::decode_frame(bytes, &Limits::format_max()) {
        Ok(Decoded::Ready(frame)) => match Response::decode(&frame.header, frame.meta) {
            Ok(response) => response,
            Err(err) => panic!("{err}"),
        },
        other => panic!("{other:?}"),
    }
}

fn response_bytes(response: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    response.encode(&mut out);
    out
}

fn frame_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(1));

    let put = Request {
        request_id: 7,
        disk_id: 3,
        key: key(1),
        body: RequestBody::Put(PutRequest { value_len: 4096, value_crc32c: 0x1234_5678 }),
    };
    let mut encoded = Vec::with_capacity(256);
    group.bench_function("encode/put_request", |b| {
        b.iter(|| {
            encoded.clear();
            black_box(&put).encode(&mut encoded);
        });
    });
    let limits = Limits::default();
    group.bench_function("decode/put_request", |b| {
        b.iter(|| match wire::decode_frame(black_box(&encoded), &limits) {
            Ok(Decoded::Ready(frame)) => Request::decode(&frame.header, frame.meta).is_ok(),
            _ => false,
        });
    });

    let get = Response {
        request_id: 9,
        opcode: Opcode::Get,
        disk_id: 1,
        key: key(2),
        body: ResponseBody::Get(GetResponse {
            value_len: 4096,
            value_crc32c: 1,
            offset: 0,
            data_len: 4096,
            data_crc32c: 1,
        }),
    };
    group.bench_function("encode/get_response", |b| {
        b.iter(|| {
            encoded.clear();
            black_box(&get).encode(&mut encoded);
        });
    });

    let disks = (0..64u16)
        .map(|id| DiskInfo {
            disk_id: id,
            state: DiskState::Active,
            shard: id % 8,
            shard_port: 7710 + id % 8,
            capacity_bytes: 20 << 40,
            free_bytes: 10 << 40,
            disk_uuid: [id as u8; 16],
        })
        .collect();
    let hello = response_bytes(&Response {
        request_id: 1,
        opcode: Opcode::Hello,
        disk_id: 0,
        key: wire::KEY_NONE,
        body: ResponseBody::Hello(HelloResponse {
            version: 1,
            capabilities: Capabilities::SHARD_PORTS,
            value_bytes_max: 16 << 20,
            requests_in_flight_max: 128,
            server_proof: None,
            disks,
        }),
    });
    group.bench_function("decode/hello_response_64_disks", |b| {
        b.iter(|| decode_response(black_box(&hello)));
    });

    let list = response_bytes(&Response {
        request_id: 2,
        opcode: Opcode::List,
        disk_id: 0,
        key: wire::KEY_NONE,
        body: ResponseBody::List(ListPage {
            keys: (0..10_000).map(key).collect(),
            next: Some(ListCursor::from_u64(10_000)),
        }),
    });
    group.bench_function("decode/list_page_10000_keys", |b| {
        b.iter(|| decode_response(black_box(&list)));
    });
    group.finish();
}

criterion_group!(benches, frame_benches);
criterion_main!(benches);
