//! shingle's wire protocol: the binary frame format spoken between frontends and `shingled`
//! (docs/PROTOCOL.md), typed messages for every operation, and the optional HMAC
//! authentication. Pure code over bytes: no I/O besides reading a secret file, no dependency on
//! `ioengine`, no unsafe. The server and the client library build on it.
//!
//! - [`wire`]: the frame header, opcodes, flags, statuses, limits, and the incremental decoder
//!   (the one module that knows the header's layout).
//! - [`messages`]: request and response bodies for each opcode.
//! - [`auth`]: the HELLO challenge-response.
//! - [`error`]: the crate's error type, and what a server does about each error.

#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
pub mod messages;
pub mod wire;

pub use error::{Disposition, Error, Result};
