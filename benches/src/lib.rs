//! Shared pieces of shingle's benchmark binaries: running fio and reading its JSON report
//! (`fio`), CPU, block-device and latency accounting with medians over runs (`measure`), the
//! preallocated test file (`testfile`), the description of the system under test that every
//! report starts with (`system`), and for the end-to-end benchmarks a real `shingled` process
//! (`node`) and a closed-loop load generator on the client library (`load`). The binaries in
//! `src/bin/` drive shingle's side of each comparison.

#![forbid(unsafe_code)]

pub mod fio;
pub mod fiojob;
pub mod fioreport;
pub mod jobrun;
pub mod load;
pub mod measure;
pub mod node;
pub mod system;
pub mod testfile;
