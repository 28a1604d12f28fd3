//! The zoned test device an environment variable names inside `../shared/zoned-vm/run`
//! (`ZONED_ZNS_DEV`, `ZONED_SMR_DEV`); shared by the daemon's zoned test binaries.

use std::path::PathBuf;

/// The device `var` names; `None` (the test skips) outside the VM, unless
/// `SHINGLE_REQUIRE_ZONED=1` says it must run there (CI), which fails instead.
pub fn device(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            let required = std::env::var("SHINGLE_REQUIRE_ZONED").is_ok_and(|v| v == "1");
            assert!(!required, "{var} is not set: this test must run inside zoned-vm/run");
            eprintln!("{var} not set (not inside zoned-vm/run): skipped");
            None
        }
    }
}
