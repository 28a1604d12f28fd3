//! Fuzzes the superblock and checkpoint decoders: arbitrary bytes are rejected with an error or
//! decoded into values that satisfy the documented invariants; never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shingle_daemon::store::format::{
    CheckpointEntry, CheckpointHeader, OverflowEntry, Superblock, ZoneState,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(sb) = Superblock::decode(data) {
        assert!(sb.block_bytes.is_power_of_two());
        assert!(sb.first_data_zone() < sb.zone_count);
        assert_eq!(Superblock::decode(&sb.encode()).ok(), Some(sb));
    }
    if let Ok(header) = CheckpointHeader::decode(data) {
        assert_eq!(CheckpointHeader::decode(&header.encode()).ok(), Some(header));
    }
    let _ = ZoneState::decode(data);
    // Entry sizes depend on the checkpoint's format version (1: 20/44 bytes, 2: 26/50).
    for version in [1, 2] {
        if let Ok(entry) = CheckpointEntry::decode(data, version) {
            let mut out = Vec::new();
            entry.encode_into(&mut out, version);
            assert_eq!(out[..], data[..out.len()]);
        }
        let _ = OverflowEntry::decode(data, version);
    }
});
