//! Fuzzes the record decoders with bytes as they could come off a damaged disk: header span,
//! header and chunk verification must reject or accept, never panic or over-read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shingle_daemon::store::format;

fuzz_target!(|data: &[u8]| {
    let value_bytes_max = 16 << 20;
    if let Ok(span) = format::header_span(data, value_bytes_max) {
        assert!(span >= format::RECORD_HEADER_BYTES);
        if let Ok(header) = format::decode_header(data, value_bytes_max) {
            assert!(span <= data.len());
            if header.is_detached() {
                // A detached value lies past its header, 8-aligned; locating it never panics.
                let at = header.value_at as usize;
                assert!(at >= format::detached_header_bytes(header.value_len) && at % 8 == 0);
                let _ = format::Location::of_record(3, 4096 + 200, &header, 4096);
            }
            let start = format::value_offset(header.value_len);
            if let Some(value) = data.get(start..start + header.value_len as usize) {
                for (i, chunk) in value.chunks(64 << 10).enumerate() {
                    let _ = format::verify_chunk(data, i, chunk);
                }
            }
        }
    }
    let _ = format::BatchInfo::decode(data);
});
