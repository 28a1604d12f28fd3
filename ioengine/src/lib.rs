//! shingle's I/O engine: a per-core io_uring reactor, zoned devices over three backends,
//! aligned buffers and crc32c checksums. The only crate of the workspace with `unsafe` code.
//!
//! Layers, bottom up (see docs/ARCHITECTURE.md):
//! `sys` (system calls and ioctls) → `reactor` and `op` (the ring and one file per io_uring
//! operation) → `executor` and `runtime` (tasks, priorities, pinned cores, cross-core queues)
//! → `device` (zones over zoned block devices, conventional block devices and files).

pub mod blocking;
pub mod buf;
pub mod checksum;
pub mod device;
pub mod error;
pub mod executor;
pub mod net;
pub mod op;
pub mod reactor;
pub mod runtime;
pub mod sys;
pub mod time;

pub use error::{Error, OpKind, Result};
pub use executor::{
    Core, CoreHandle, JoinHandle, spawn, spawn_background, spawn_with, submit_now, yield_now,
};
pub use reactor::Priority;
pub use runtime::{CoreInfo, Runtime, RuntimeConfig};
