//! A file-backed disk is never shared: a second open of the same file, by this process or
//! another, is refused while the first is open, and allowed once it is closed.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use ioengine::Error;
use ioengine::device::{Disk, DiskOptions};

#[test]
fn a_second_open_of_a_file_disk_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let options = DiskOptions {
        zone_size_bytes: 4 << 20,
        create_size_bytes: Some(16 << 20),
        fresh: true,
        ..DiskOptions::default()
    };
    let first = Disk::open(&path, &options).unwrap();
    let again = DiskOptions { fresh: false, ..options.clone() };
    let err = Disk::open(&path, &again).unwrap_err();
    assert!(matches!(err, Error::DeviceInUse { .. }), "{err}");
    assert!(err.to_string().contains("holds its lock"), "{err}");
    drop(first);
    Disk::open(&path, &again).unwrap();
}
