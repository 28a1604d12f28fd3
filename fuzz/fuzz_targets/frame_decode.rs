//! Fuzzes the frame decoder and the message decoders with bytes as a peer could send them:
//! every input is rejected with an error or decoded into a frame that re-encodes to the same
//! bytes; never a panic, an over-read, or an allocation the input does not pay for.
//!
//! Random bytes almost never carry a valid header crc32c, so each input is tried three ways:
//! as it is; with the header's crcs recomputed (reaching the field checks); and as a
//! structured case (opcode, direction, status and meta taken from the input, wrapped in a valid
//! header) that reaches every message decoder.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::messages::{Request, Response};
use proto::wire::{
    self, Decoded, Flags, FrameHeader, HEADER_BYTES, KEY_NONE, Limits, Opcode, Status,
};

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= HEADER_BYTES {
        check(&with_valid_crcs(data));
    }
    if let Some(frame) = structured(data) {
        check(&frame);
    }
});

fn check(bytes: &[u8]) {
    let limits = Limits::default();
    match wire::decode_frame(bytes, &limits) {
        Ok(Decoded::NeedMore { bytes: more }) => {
            assert!(more > 0);
            assert!((bytes.len() + more) as u64 <= limits.frame_bytes_max());
        }
        Ok(Decoded::Ready(frame)) => {
            assert!(frame.frame_bytes() <= bytes.len());
            assert_eq!(frame.header.encode()[..], bytes[..HEADER_BYTES]);
            let head_and_meta = &bytes[..HEADER_BYTES + frame.meta.len()];
            let mut out = Vec::new();
            if frame.header.is_response() {
                if let Ok(response) = Response::decode(&frame.header, frame.meta) {
                    response.encode(&mut out);
                    assert_eq!(out, head_and_meta);
                }
            } else if let Ok(request) = Request::decode(&frame.header, frame.meta) {
                request.encode(&mut out);
                assert_eq!(out, head_and_meta);
            }
        }
        Err(err) => {
            let _ = err.disposition();
            if let Some(frame) = err.frame() {
                // What a server would send back decodes as a frame for the same request.
                let mut out = Vec::new();
                wire::encode_rejection(&mut out, frame, Status::BadRequest, "rejected");
                match wire::decode_frame(&out, &Limits::format_max()) {
                    Ok(Decoded::Ready(reply)) => {
                        assert_eq!(reply.header.request_id, frame.request_id);
                        assert!(Response::decode(&reply.header, reply.meta).is_ok());
                    }
                    Err(reply_err) => {
                        assert_eq!(reply_err.frame().map(|f| f.request_id), Some(frame.request_id))
                    }
                    Ok(Decoded::NeedMore { .. }) => panic!("a rejection is a whole frame"),
                }
            }
        }
    }
}

/// `data` with magic and version set and both crcs recomputed over what follows.
fn with_valid_crcs(data: &[u8]) -> Vec<u8> {
    let mut bytes = data.to_vec();
    bytes[..4].copy_from_slice(&wire::FRAME_MAGIC);
    bytes[4] = wire::PROTOCOL_VERSION;
    let meta_len = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
    let meta_end = HEADER_BYTES.saturating_add(meta_len).min(bytes.len());
    let meta_crc = wire::crc32c(&bytes[HEADER_BYTES..meta_end]);
    bytes[56..60].copy_from_slice(&meta_crc.to_le_bytes());
    let header_crc = wire::crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&header_crc.to_le_bytes());
    bytes
}

/// A frame with a valid header around a meta section taken from the input: byte 0 picks the
/// opcode, byte 1 the direction and status, bytes 2..6 the data length, the rest is meta.
fn structured(data: &[u8]) -> Option<Vec<u8>> {
    let (&[op, dir, d0, d1, d2, d3], meta) = data.split_first_chunk::<6>()?;
    let opcode = Opcode::ALL[usize::from(op) % Opcode::ALL.len()];
    let response = dir & 1 == 1;
    let status =
        if response { Status::ALL[usize::from(dir >> 1) % Status::ALL.len()] } else { Status::Ok };
    let header = FrameHeader {
        opcode,
        flags: if response { Flags::RESPONSE } else { Flags::NONE },
        request_id: 1,
        disk_id: 0,
        status,
        key: if opcode.has_key() { [7; 32] } else { KEY_NONE },
        meta_len: u32::try_from(meta.len()).ok()?,
        data_len: u32::from_le_bytes([d0, d1, d2, d3]) % 64,
        meta_crc32c: wire::crc32c(meta),
    };
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(meta);
    bytes.resize(bytes.len() + header.data_len as usize, 0x5a);
    Some(bytes)
}
