//! When io_uring cannot be used, startup fails with an error that names the cause and the fix,
//! never a panic. A child process installs a seccomp filter that refuses io_uring_setup with
//! EPERM (what a container runtime's default profile does) and then tries to start a core.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::process::Command;

use ioengine::{Core, Error};

const CHILD_ENV: &str = "SHINGLE_TEST_SECCOMP_CHILD";
const TEST_NAME: &str = "blocked_io_uring_setup_names_the_cause_and_the_fix";

#[test]
fn blocked_io_uring_setup_names_the_cause_and_the_fix() {
    if std::env::var_os(CHILD_ENV).is_some() {
        deny_io_uring_setup();
        let err = Core::new(64).unwrap_err();
        assert!(matches!(err, Error::UringBlocked { errno_name: "EPERM" }), "{err:?}");
        println!("startup error: {err}");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("io_uring_setup is not permitted here (EPERM)"), "{stdout}");
    assert!(stdout.contains("allow the io_uring_setup"), "the fix is named: {stdout}");
}

/// Installs a seccomp filter that makes io_uring_setup fail with EPERM in this process.
fn deny_io_uring_setup() {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const OFFSET_NR: u32 = 0;
    const OFFSET_ARCH: u32 = 4;
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump =
        |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { code: code as u16, jt, jf, k };
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut filter = [
        stmt(ld, OFFSET_ARCH),
        jump(jeq, AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ld, OFFSET_NR),
        jump(jeq, libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    // SAFETY: prctl with plain integer arguments.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }, 0);
    // SAFETY: passes a pointer to a valid sock_fprog whose filter array outlives the call.
    let rc = unsafe {
        libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &raw const prog, 0, 0)
    };
    assert_eq!(rc, 0, "seccomp filter install: {}", std::io::Error::last_os_error());
}
