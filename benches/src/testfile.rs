//! The preallocated test file every fio comparison runs on: created at its full size with
//! fallocate (blocks allocated, not yet written), returned to that state on demand, removed on
//! drop unless asked to keep it.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The test file; removed on drop unless `keep`.
#[derive(Debug)]
pub struct TestFile {
    path: PathBuf,
    size_bytes: u64,
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
        let test_file = TestFile { path, size_bytes, keep, tool };
        ioengine::sys::fallocate(&file, 0, 0, size_bytes).with_context(|| {
            format!(
                "preallocating {size_bytes} bytes for {} (is there room on the file system?)",
                test_file.path.display()
            )
        })?;
        Ok(test_file)
    }

    /// Makes every block unwritten again (FALLOC_FL_ZERO_RANGE, space kept), as just after
    /// [`TestFile::create`] and as a zone reset leaves a file-backed disk. Cheap, and it makes
    /// removing the file cheap: after small random writes ext4 holds the file in thousands of
    /// extents, and freeing those (with online discard) takes seconds to minutes.
    pub fn zero(&self) -> Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .with_context(|| format!("opening {} to zero it", self.path.display()))?;
        let mode = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
        ioengine::sys::fallocate(&file, mode, 0, self.size_bytes)
            .with_context(|| format!("zeroing {}", self.path.display()))
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

/// Makes durable whatever writes to `path` still sit in the device's volatile cache (fdatasync,
/// which on ext4 flushes the device even when the file has nothing dirty in the page cache) and
/// returns how long that took. Call it after a run that wrote without syncing (fio's unsynced
/// references), so that the next run's first flushes do not pay for it.
pub fn flush(path: &Path) -> Result<Duration> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {} to flush it", path.display()))?;
    let started = Instant::now();
    file.sync_data().with_context(|| format!("fdatasync of {}", path.display()))?;
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_syncs_a_file_and_names_one_it_cannot_open() {
        let dir = std::env::temp_dir().join(format!("shingle-testfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let file = TestFile::create(path.clone(), 1 << 20, false, "test").unwrap();
        std::fs::write(&path, b"written, not yet synced").unwrap();
        assert!(flush(file.path()).is_ok());
        drop(file);
        let err = flush(&path).unwrap_err();
        assert!(format!("{err:#}").contains(&path.display().to_string()), "{err:#}");
        std::fs::remove_dir(&dir).unwrap();
    }
}
