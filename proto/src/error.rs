//! The crate's one error type. Every way bytes from the network can be wrong has a variant that
//! carries the evidence, and [`Error::disposition`] says what a server does about it: close the
//! connection (the byte stream can no longer be trusted) or answer with a status and go on.

use std::path::PathBuf;

use crate::wire::{FrameContext, Status};

/// Everything this crate can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    // Fatal framing errors: the peer does not speak this protocol, or the stream is corrupt, so
    // where the next frame starts is unknown.
    /// The first four bytes of a header are not the frame magic.
    #[error("bad frame magic {found:02x?} (expected {expected:02x?}): not a shingle peer")]
    BadMagic { found: [u8; 4], expected: [u8; 4] },
    /// The header's version byte is one this build does not speak.
    #[error("frame version {found} is not supported (this build speaks {min}..={max})")]
    UnsupportedVersion { found: u8, min: u8, max: u8 },
    /// The header's crc32c does not match its bytes.
    #[error("frame header checksum mismatch: stored {expected:#010x}, computed {got:#010x}")]
    HeaderChecksum { expected: u32, got: u32 },
    /// A length field exceeds the format's limit.
    #[error("frame {field} of {len} bytes exceeds the format limit of {max} bytes")]
    FrameTooLarge { field: &'static str, len: u64, max: u64 },

    // The header is sound (its crc matched, its lengths are within the format's limits), so the
    // frame can be skipped and answered.
    /// The opcode is not one this build knows.
    #[error("request {}: unknown opcode {value:#04x}", frame.request_id)]
    UnknownOpcode { frame: FrameContext, value: u8 },
    /// A response carries a status this build does not know.
    #[error("request {}: unknown status {value}", frame.request_id)]
    UnknownStatus { frame: FrameContext, value: u16 },
    /// Flag bits this build does not know are set.
    #[error("request {}: unknown flags {flags:#06x}", frame.request_id)]
    UnknownFlags { frame: FrameContext, flags: u16 },
    /// A header field has a value its opcode does not allow.
    #[error("request {}: header field {field} = {value} is not valid here", frame.request_id)]
    BadHeaderField { frame: FrameContext, field: &'static str, value: u64 },
    /// The frame is larger than the configured frame limit (but within the format's limit).
    #[error("request {}: frame of {len} bytes exceeds the limit of {max} bytes", frame.request_id)]
    FrameOverLimit { frame: FrameContext, len: u64, max: u64 },
    /// The value is larger than the configured cap (but within the format's limit).
    #[error("request {}: value of {len} bytes exceeds the limit of {max} bytes", frame.request_id)]
    ValueTooLarge { frame: FrameContext, len: u32, max: u32 },
    /// The meta section does not match the crc32c in the header.
    #[error(
        "request {}: meta checksum mismatch: header says {expected:#010x}, computed {got:#010x}",
        frame.request_id
    )]
    MetaChecksum { frame: FrameContext, expected: u32, got: u32 },

    // Errors in a message body (the meta section), found after the header was accepted.
    /// The meta section ends before a field the message needs.
    #[error("{what} is truncated: {len} bytes, needs {needed}")]
    Truncated { what: &'static str, len: usize, needed: usize },
    /// The meta section is longer than the message it holds.
    #[error("{what} has {len} bytes, the message ends after {expected}")]
    TrailingBytes { what: &'static str, len: usize, expected: usize },
    /// A field has a value the message does not allow.
    #[error("{what}: invalid field {field} = {value}")]
    BadField { what: &'static str, field: &'static str, value: u64 },
    /// A count exceeds its limit.
    #[error("{what}: {count} entries exceed the limit of {max}")]
    TooMany { what: &'static str, count: u64, max: u64 },
    /// A text field is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    BadUtf8 { what: &'static str },
    /// Received bytes do not match the crc32c sent with them (a PUT value, a GET range).
    #[error("{what} checksum mismatch: sent {expected:#010x}, received bytes have {got:#010x}")]
    DataChecksum { what: &'static str, expected: u32, got: u32 },

    // Authentication.
    /// A proof did not verify: the peer does not hold the shared secret.
    #[error("authentication failed: the {who} proof does not match the shared secret")]
    AuthFailed { who: &'static str },
    /// A shared secret of unusable length.
    #[error("the shared secret has {len} bytes; it needs {min}..={max}")]
    BadSecret { len: usize, min: usize, max: usize },
    /// The shared-secret file cannot be used.
    #[error("shared-secret file {}: {detail}", path.display())]
    SecretFile { path: PathBuf, detail: String },

    // Configuration of this crate's types.
    /// A limit outside its documented range.
    #[error("{name} = {value} is outside {min}..={max}")]
    BadLimit { name: &'static str, value: u64, min: u64, max: u64 },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// What a server does about an error decoding a client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The stream cannot be trusted (or was never ours): close the connection without a reply.
    Close,
    /// Skip the rest of the frame, answer its request id with this status, and go on.
    Reply(Status),
    /// Answer with this status, then close the connection.
    ReplyAndClose(Status),
}

impl Error {
    /// What a server does about this error. Errors that never come from a connection's bytes
    /// (secret and limit configuration) say [`Disposition::Close`].
    pub fn disposition(&self) -> Disposition {
        match self {
            Error::BadMagic { .. }
            | Error::UnsupportedVersion { .. }
            | Error::HeaderChecksum { .. }
            | Error::FrameTooLarge { .. }
            | Error::BadSecret { .. }
            | Error::SecretFile { .. }
            | Error::BadLimit { .. } => Disposition::Close,
            Error::UnknownOpcode { .. } => Disposition::Reply(Status::UnknownOpcode),
            Error::ValueTooLarge { .. } => Disposition::Reply(Status::ValueTooLarge),
            Error::MetaChecksum { .. } | Error::DataChecksum { .. } => {
                Disposition::Reply(Status::ChecksumMismatch)
            }
            Error::UnknownStatus { .. }
            | Error::UnknownFlags { .. }
            | Error::BadHeaderField { .. }
            | Error::Truncated { .. }
            | Error::TrailingBytes { .. }
            | Error::BadField { .. }
            | Error::TooMany { .. }
            | Error::BadUtf8 { .. } => Disposition::Reply(Status::BadRequest),
            Error::AuthFailed { .. } => Disposition::ReplyAndClose(Status::Unauthorized),
            // Skipping a payload this large costs more than a new connection.
            Error::FrameOverLimit { .. } => Disposition::ReplyAndClose(Status::ValueTooLarge),
        }
    }

    /// The frame a header-level rejection is about: what a server needs to skip the frame's
    /// payload and address its reply. [`crate::wire::decode_frame`] also checks the meta
    /// checksum, so that error carries the frame too. `None` for errors found before the header
    /// could be trusted, and for errors in a message (the caller has its header).
    pub fn frame(&self) -> Option<&FrameContext> {
        match self {
            Error::UnknownOpcode { frame, .. }
            | Error::UnknownStatus { frame, .. }
            | Error::UnknownFlags { frame, .. }
            | Error::BadHeaderField { frame, .. }
            | Error::FrameOverLimit { frame, .. }
            | Error::ValueTooLarge { frame, .. }
            | Error::MetaChecksum { frame, .. } => Some(frame),
            _ => None,
        }
    }
}
