//! The preallocated test file every fio comparison runs on: created at its full size with
//! fallocate (blocks allocated, not yet written), removed on drop unless asked to keep it.

use std::fs::OpenOptions;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// The test file; removed on drop unless `keep`.
#[derive(Debug)]
pub struct TestFile {
    path: PathBuf,
    keep: bool,
    tool: &'static str,
}

impl TestFile {
    /// Creates (truncating) `path` with `size_bytes` preallocated. `tool` names the benchmark
    /// in the message printed if the file cannot be removed later.
    pub fn create(
        path: PathBuf,
        size_bytes: u64,
        keep: bool,
        tool: &'static str,
    ) -> Result<TestFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("creating the test file {}", path.display()))?;
        let test_file = TestFile { path, keep, tool };
        ioengine::sys::fallocate(&file, 0, 0, size_bytes).with_context(|| {
            format!(
                "preallocating {size_bytes} bytes for {} (is there room on the file system?)",
                test_file.path.display()
            )
        })?;
        Ok(test_file)
    }

    /// Where the file is.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(err) = std::fs::remove_file(&self.path) {
                eprintln!("{}: could not remove {}: {err}", self.tool, self.path.display());
            }
        }
    }
}
