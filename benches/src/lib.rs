//! Shared pieces of shingle's benchmark binaries: running fio and reading its JSON report
//! (`fio`), CPU, block-device and latency accounting with medians over runs (`measure`), the
//! preallocated test file (`testfile`), and the description of the system under test that every report starts with (`system`). The
//! binaries in `src/bin/` drive shingle's side of each comparison.

#![forbid(unsafe_code)]

pub mod fio;
pub mod measure;
pub mod system;
pub mod testfile;
