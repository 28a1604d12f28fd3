//! shingle's wire protocol: the binary frame format spoken between frontends and `shingled`
//! (docs/PROTOCOL.md), typed messages for every operation, the optional HMAC authentication,
//! and the client library. The protocol modules are pure code over bytes (no I/O besides
//! reading a secret file); `client` adds std networking and threads. No dependency on
//! `ioengine`, no unsafe. The server builds on the protocol modules.
//!
//! - [`wire`]: the frame header, opcodes, flags, statuses, limits, and the incremental decoder
//!   (the one module that knows the header's layout).
//! - [`messages`]: request and response bodies for each opcode.
//! - [`auth`]: the HELLO challenge-response.
//! - [`client`]: the blocking, pipelining, shard-aware client library (the `shingle` command
//!   line tool in `src/bin/shingle.rs` is built on it).
//! - [`error`]: the crate's error type, and what a server does about each error.

#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod error;
pub mod messages;
pub mod wire;

pub use error::{Disposition, Error, Result};
