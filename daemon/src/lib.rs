//! The shingle daemon's library: the per-disk store (and, in later steps, the server). The
//! `shingled` binary is a thin layer over it.

#![forbid(unsafe_code)]

pub mod admin;
pub mod metrics;
pub mod notify;
pub mod server;
pub mod store;
