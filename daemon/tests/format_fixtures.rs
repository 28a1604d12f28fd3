//! Golden fixtures that pin on-disk format versions 1 and 2: exact bytes of every encoded
//! structure, and a small disk image of each version, written by the build that introduced it,
//! that every later build must open and read identically. A change that breaks reading an old
//! disk fails here.
//!
//! An image is regenerated only on purpose, and only the current version's (a new format
//! version keeps the old images and adds a new one):
//! `SHINGLE_WRITE_FIXTURES=1 cargo test -p shingle-daemon --test format_fixtures`.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::path::PathBuf;

use ioengine::Core;
use ioengine::device::{Disk, DiskOptions};
use shingle_daemon::store::format::{
    self, BatchInfo, CheckpointEntry, CheckpointHeader, Location, OverflowEntry, RecordKind,
    Superblock, ZoneState,
};
use shingle_daemon::store::{self, FormatOptions, Store, StoreConfig, StoreError};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const SUPERBLOCK_HEX: &str = "5348494e474c4500010000008000000030313233343536373839616263646566005e56eea1010000001000000c0000000000010000000000010000000040000066656463626139383736353433323130000000000000000000000000000000000000000000000000000000000000000000000000000000000000000081a80c25";
const RECORD_HEX: &str = "534852430101000007000000000000000a0000009e060c28111111111111111111111111111111111111111111111111111111111111111100000000d068427a9e060c28303132333435363738390000";
const TOMBSTONE_HEX: &str = "534852430102000008000000000000000000000000000000222222222222222222222222222222222222222222222222222222222222222200000000cd85d359";
const PADDING_HEX: &str = "534852430103000000000000000000000800000000000000000000000000000000000000000000000000000000000000000000000000000000000000343779910000000000000000";
const BATCH_INFO_HEX: &str = "002000000000000000100000000000000300000000000000";
const CHECKPOINT_HEADER_HEX: &str = "5348434b505400000100000001000000020000000000000064000000000000006500000000000000010000000000000058000000000000007856341201000000015e56eea101000001000000303132333435363738396162636465661d76c606";
const CHECKPOINT_BODY_HEX: &str = "03000000010000000020000000000000a00f000000000000080706050403020103000000480000000a000000333333333333333333333333333333333333333333333333333333333333333303000000480000000a000000";

fn superblock() -> Superblock {
    Superblock {
        format_version: 1,
        disk_uuid: *b"0123456789abcdef",
        created_unix_ms: 1_795_000_000_000,
        block_bytes: 4096,
        zone_size_bytes: 64 << 10,
        zone_count: 12,
        checkpoint_zones_per_set: 1,
        tag_seed: *b"fedcba9876543210",
        value_bytes_max: 16 << 10,
    }
}

/// A checkpoint header of `format_version` and a body of one zone state, one index entry and
/// one overflow entry at `location`, encoded.
fn checkpoint_pieces(
    format_version: u32,
    location: Location,
) -> ([u8; format::CHECKPOINT_HEADER_BYTES], Vec<u8>) {
    let entry = format::checkpoint_entry_bytes(format_version) as u64;
    let overflow = format::checkpoint_overflow_bytes(format_version) as u64;
    let header = CheckpointHeader {
        format_version,
        generation: 2,
        covered_seq: 100,
        next_seq: 101,
        zone_count: 1,
        entry_count: 1,
        overflow_count: 1,
        body_bytes: 24 + entry + overflow,
        body_crc: 0x1234_5678,
        written_unix_ms: 1_795_000_000_001,
        clean: true,
        disk_uuid: *b"0123456789abcdef",
    }
    .encode();
    let mut body = Vec::new();
    ZoneState { zone: 3, write_offset: 8192, live_bytes: 4000, flags: 1 }.encode_into(&mut body);
    CheckpointEntry { tag: 0x0102_0304_0506_0708, location }.encode_into(&mut body, format_version);
    OverflowEntry { key: [0x33; 32], location }.encode_into(&mut body, format_version);
    (header, body)
}

/// Each (what, encoded hex, pinned hex) must match.
fn assert_pinned(actual: &[(&str, String, &str)]) {
    for (what, got, want) in actual {
        assert_eq!(got, want, "{what} encoding changed: bump the format version instead");
    }
}

#[test]
fn encodings_are_pinned() {
    let sb = superblock().encode();
    let mut record = vec![0u8; format::record_bytes(10)];
    format::encode_record(&mut record, RecordKind::Block, 7, &[0x11; 32], b"0123456789");
    let mut tombstone = vec![0u8; format::record_bytes(0)];
    format::encode_record(&mut tombstone, RecordKind::Tombstone, 8, &[0x22; 32], b"");
    let mut padding = vec![0u8; 72];
    format::encode_padding(&mut padding);
    let batch = BatchInfo { batch_bytes: 8192, acked_end: 4096, record_count: 3 }.encode();
    let (header, body) = checkpoint_pieces(1, Location::inline(3, 72, 10));
    let actual = [
        ("superblock", hex(&sb), SUPERBLOCK_HEX),
        ("record", hex(&record), RECORD_HEX),
        ("tombstone", hex(&tombstone), TOMBSTONE_HEX),
        ("padding", hex(&padding), PADDING_HEX),
        ("batch info", hex(&batch), BATCH_INFO_HEX),
        ("checkpoint header", hex(&header), CHECKPOINT_HEADER_HEX),
        ("checkpoint body", hex(&body), CHECKPOINT_BODY_HEX),
    ];
    assert_pinned(&actual);
}

const SUPERBLOCK_V2_HEX: &str = "5348494e474c4500020000008000000030313233343536373839616263646566005e56eea1010000001000000c000000000001000000000001000000004000006665646362613938373635343332313000000000000000000000000000000000000000000000000000000000000000000000000000000000000000005b3fb01e";
const DETACHED_HEX: &str = "5348524302010000090000000000000000100000d44b23ba5555555555555555555555555555555555555555555555555555555555555555380f00000fe3e37dd44b23ba00000000";
const CHECKPOINT_HEADER_V2_HEX: &str = "5348434b505400000200000001000000020000000000000064000000000000006500000000000000010000000000000064000000000000007856341201000000015e56eea1010000010000003031323334353637383961626364656644da9981";
const CHECKPOINT_BODY_V2_HEX: &str = "03000000010000000020000000000000a00f000000000000080706050403020103000000c800000000100000d4c3b2a10100333333333333333333333333333333333333333333333333333333333333333303000000c800000000100000d4c3b2a10100";

#[test]
fn version_2_encodings_are_pinned() {
    let sb = Superblock { format_version: 2, ..superblock() }.encode();
    let value = [0x44u8; 4096];
    let mut crcs = Vec::new();
    let checksummed = format::Checksummed::compute(&value, &mut crcs);
    let mut detached = vec![0u8; format::detached_header_bytes(4096)];
    format::encode_detached_header(
        &mut detached,
        9,
        &[0x55; 32],
        4096,
        checksummed.chunk_crcs,
        checksummed.value_crc,
        4096 - 200,
    );
    let location =
        Location { zone: 3, offset: 200, value_len: 4096, check: 0xA1B2_C3D4, value_blocks: 1 };
    let (header, body) = checkpoint_pieces(2, location);
    let actual = [
        ("superblock", hex(&sb), SUPERBLOCK_V2_HEX),
        ("detached block header", hex(&detached), DETACHED_HEX),
        ("checkpoint header", hex(&header), CHECKPOINT_HEADER_V2_HEX),
        ("checkpoint body", hex(&body), CHECKPOINT_BODY_V2_HEX),
    ];
    assert_pinned(&actual);
}

fn fixture_path(version: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/disk-v{version}.img"))
}

const ZONE: u64 = 64 << 10;
const ZONES: u64 = 12;

fn fixture_key(i: u32) -> [u8; 32] {
    let mut key = [0x5Au8; 32];
    key[..4].copy_from_slice(&i.to_be_bytes());
    key
}

/// The value of key `i` in the fixture of `version`: the version 2 image also has values of
/// whole blocks (4 and 8 KiB), which that version writes detached, and smaller others (the
/// image is small).
fn fixture_value(version: u32, i: u32) -> Vec<u8> {
    let len = match version {
        1 => 1 + (i as usize * 997) % 9000,
        _ if i % 3 == 0 => 4096 * (1 + (i as usize / 3) % 2),
        _ => 1 + (i as usize * 997) % 3000,
    };
    (0..len).map(|j| (j as u32 ^ i.wrapping_mul(31)) as u8).collect()
}

/// Keys written to the fixture: 0..60; every fifth deleted; a checkpoint after key 30; no
/// clean shutdown, so opening it replays a tail after the checkpoint.
fn expected(version: u32, i: u32) -> Option<Vec<u8>> {
    (i % 5 != 0).then(|| fixture_value(version, i))
}

/// Writes the current format version's fixture image.
fn write_fixture(path: &std::path::Path) {
    let version = format::FORMAT_VERSION;
    let _ = std::fs::remove_file(path);
    let path = path.to_path_buf();
    Core::new(64).unwrap().block_on(async move {
        let options = DiskOptions {
            zone_size_bytes: ZONE,
            create_size_bytes: Some(ZONES * ZONE),
            fresh: true,
            ..DiskOptions::default()
        };
        let disk = Disk::open(&path, &options).unwrap();
        let format_options =
            FormatOptions { value_bytes_max: 16 << 10, checkpoint_zones_per_set: 1 };
        store::format(&disk, &format_options, false).await.unwrap();
        let s =
            Store::open(disk, StoreConfig { value_bytes_max: 16 << 10, ..StoreConfig::default() })
                .await
                .unwrap();
        for i in 0..60u32 {
            s.put(&fixture_key(i), &fixture_value(version, i)).await.unwrap();
            if i == 30 {
                s.write_checkpoint(false).await.unwrap();
            }
        }
        for i in (0..60u32).step_by(5) {
            s.delete(&fixture_key(i)).await.unwrap();
        }
    });
}

#[test]
fn the_version_1_fixture_disk_opens_reads_back_and_stays_version_1() {
    let detached = fixture_opens_and_reads_back(1);
    assert_eq!(detached, 0, "a version 1 disk is written in version 1");
}

#[test]
fn the_version_2_fixture_disk_opens_and_reads_back() {
    if std::env::var("SHINGLE_WRITE_FIXTURES").is_ok_and(|v| v == "1") {
        write_fixture(&fixture_path(format::FORMAT_VERSION));
    }
    fixture_opens_and_reads_back(2);
}

/// Opens a copy of the fixture of `version`, checks every key, then stores a value of whole
/// blocks on it, reopens it and reads that too. Returns how many values that wrote detached.
fn fixture_opens_and_reads_back(version: u32) -> u64 {
    let fixture = fixture_path(version);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("disk.img");
    std::fs::copy(&fixture, &copy).unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
    Core::new(64).unwrap().block_on(async move {
        let options = DiskOptions { zone_size_bytes: ZONE, ..DiskOptions::default() };
        let disk = Disk::open(&copy, &options).unwrap();
        let s =
            Store::open(disk, StoreConfig { value_bytes_max: 16 << 10, ..StoreConfig::default() })
                .await
                .unwrap();
        let report = s.recovery_report().clone();
        assert!(report.checkpoint_generation.is_some(), "{report:?}");
        assert!(report.tail_records > 0, "{report:?}");
        assert_eq!(report.corrupt_regions, 0, "{report:?}");
        assert_eq!(s.superblock().format_version, version);
        let check = |s: std::rc::Rc<Store<Disk>>| async move {
            for i in 0..60u32 {
                match (expected(version, i), s.get(&fixture_key(i), None).await) {
                    (Some(want), Ok(got)) => assert_eq!(got.as_slice(), &want[..], "key {i}"),
                    (None, Err(StoreError::NotFound)) => {}
                    (want, got) => {
                        panic!("key {i}: expected {:?}, got {got:?}", want.map(|v| v.len()))
                    }
                }
            }
            assert_eq!(s.len(), 48);
            s
        };
        let s = check(s).await;
        let before = s.stats().reads_value_only.get();
        assert_eq!(before > 0, version >= 2, "GETs that read a detached value alone");
        let extra = vec![0x77u8; 8192];
        s.put(&fixture_key(1000), &extra).await.unwrap();
        let detached = s.stats().values_detached.get();
        s.close().await.unwrap();
        drop(s);
        let disk = Disk::open(&copy, &options).unwrap();
        let s =
            Store::open(disk, StoreConfig { value_bytes_max: 16 << 10, ..StoreConfig::default() })
                .await
                .unwrap();
        assert_eq!(s.superblock().format_version, version);
        assert_eq!(s.get(&fixture_key(1000), None).await.unwrap().as_slice(), &extra[..]);
        s.delete(&fixture_key(1000)).await.unwrap();
        let s = check(s).await;
        s.close().await.unwrap();
        detached
    })
}
