//! Tests of [`super`]: each spawn behaviour on both the `posix_spawn` path
//! and the `Command` + `pre_exec` fallback.

use super::*;
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

fn both() -> [How; 2] {
    [How::Fastest, How::Fork]
}

/// The descriptors of process `pid` and what each points to.
fn fds_of(pid: u32) -> BTreeMap<i32, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect()
}

/// Waits until `check` holds for `pid`'s descriptors (the child may
/// still be starting, and `sleep` opens and closes locale files).
fn eventually(pid: u32, what: &str, check: impl Fn(&BTreeMap<i32, String>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fds = fds_of(pid);
        if check(&fds) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {fds:#?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    u64::from_str_radix(line[field.len()..].trim(), 16).unwrap()
}

#[test]
fn a_missing_program_is_an_error_of_the_spawn() {
    for how in both() {
        let mut cmd = Command::new("/nonexistent/concurrent-futures-test");
        let e = spawn_how(&mut cmd, false, &[], how).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{how:?}: {e}");
    }
}

#[test]
fn exit_codes_and_arguments_and_environment_reach_the_child() {
    for how in both() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "exit $(( $1 + ${CF_SPAWN_TEST:-100} ))", "sh", "3"])
            .env("CF_SPAWN_TEST", "4");
        let mut child = spawn_how(&mut cmd, false, &[], how).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(7), "{how:?}");
        // Reaped once; the status stays, and no signal goes out.
        assert_eq!(child.wait().unwrap().code(), Some(7), "{how:?}");
        child.kill().unwrap();
    }
}

#[test]
fn a_removed_variable_is_not_passed() {
    // (Not PATH: a shell sets a default one.)
    if std::env::var_os("HOME").is_none() {
        return;
    }
    for how in both() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "test -z \"${HOME+set}\""])
            .env_remove("HOME");
        let mut child = spawn_how(&mut cmd, false, &[], how).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0), "{how:?}");
    }
}

#[test]
fn the_child_holds_exactly_its_mapped_descriptors() {
    let dir = std::env::temp_dir();
    for how in both() {
        // A descriptor the parent leaves without close-on-exec, high
        // (above the mapped range) ...
        let leak_path = dir.join(format!("cf-spawn-leak-{}-{how:?}", std::process::id()));
        let leak = std::fs::File::create(&leak_path).unwrap();
        // SAFETY: F_DUPFD makes a new descriptor (without close-on-exec)
        // numbered 900 or more, which nothing else owns.
        let high = unsafe {
            let fd = libc::fcntl(leak.as_raw_fd(), libc::F_DUPFD, 900);
            assert!(fd >= 900, "{}", io::Error::last_os_error());
            OwnedFd::from_raw_fd(fd)
        };
        let high_target = fds_of(std::process::id())[&high.as_raw_fd()].clone();
        let (r, w) = io::pipe().unwrap();
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("30");
        // ... and a hole at 4 between the mapped 3 and 5.
        let map = [(r.as_fd(), 3), (w.as_fd(), 5)];
        let mut child = spawn_how(&mut cmd, true, &map, how).unwrap();
        let pid = child.id();
        let pipe_r = fds_of(std::process::id())[&r.as_raw_fd()].clone();
        eventually(pid, &format!("{how:?}: fds of the child"), |fds| {
            fds.keys().copied().collect::<Vec<_>>() == [0, 1, 2, 3, 5]
                && !fds.values().any(|t| *t == high_target)
                && fds[&0] == "/dev/null"
                && fds[&1] == "/dev/null"
                && fds[&3] == pipe_r
                && fds[&5] == pipe_r
        });
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{how:?}");
        drop(high);
        let _ = std::fs::remove_file(&leak_path);
    }
}

#[test]
fn sources_inside_the_target_range_are_moved_safely() {
    // Map 3 → 4 and 4 → 3 (if the parent holds those numbers, the
    // sources lie inside the target range and swap places).
    for how in both() {
        let (r, w) = io::pipe().unwrap();
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("30");
        let map = [(w.as_fd(), 3), (r.as_fd(), 4)];
        let mut child = spawn_how(&mut cmd, false, &map, how).unwrap();
        let pid = child.id();
        let mine = fds_of(std::process::id());
        let (pr, pw) = (mine[&r.as_raw_fd()].clone(), mine[&w.as_raw_fd()].clone());
        eventually(pid, &format!("{how:?}: swapped fds"), |fds| {
            fds.keys().copied().collect::<Vec<_>>() == [0, 1, 2, 3, 4]
                && fds[&3] == pw
                && fds[&4] == pr
        });
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn the_child_gets_default_signals_and_an_empty_mask() {
    for how in both() {
        // Block SIGUSR1 in this thread; the test harness (Rust) also
        // ignores SIGPIPE in this process.
        // SAFETY: sigset_t is plain data; pthread_sigmask changes only
        // this thread's mask and reads/writes the sets we own.
        let old = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            old
        };
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("30");
        let result = spawn_how(&mut cmd, false, &[], how);
        // SAFETY: restores this thread's mask from a set we own.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        let mut child = result.unwrap();
        let pid = child.id();
        let pipe_bit = 1u64 << (libc::SIGPIPE - 1);
        assert_eq!(status_field(pid, "SigBlk:"), 0, "{how:?}");
        assert_eq!(status_field(pid, "SigIgn:") & pipe_bit, 0, "{how:?}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn bad_maps_are_refused() {
    let (r, _w) = io::pipe().unwrap();
    for map in [
        [(r.as_fd(), 2)].as_slice(),
        &[(r.as_fd(), 3), (r.as_fd(), 3)],
    ] {
        let mut cmd = Command::new("/bin/true");
        let e = spawn(&mut cmd, false, map).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}

#[test]
fn a_program_found_through_path_still_starts() {
    let mut cmd = Command::new("true");
    let mut child = spawn(&mut cmd, false, &[]).unwrap();
    assert!(child.wait().unwrap().success());
}

/// A child reaped behind our back (a program that ignores SIGCHLD, or
/// calls `waitpid(-1)`) is signalled through its pidfd, which names it
/// alone: the signal goes nowhere, whoever has its pid by then.
#[cfg(target_os = "linux")]
#[test]
fn a_child_reaped_by_someone_else_is_not_signalled_by_pid() {
    for how in both() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "exit 0"]);
        let mut child = spawn_how(&mut cmd, false, &[], how).unwrap();
        assert!(child.pidfd.is_some(), "{how:?}: no pidfd on Linux");
        let mut status = 0;
        // SAFETY: waitpid writes one int into `status`, which we own.
        let r = unsafe { libc::waitpid(child.id() as libc::pid_t, &mut status, 0) };
        assert_eq!(r, child.id() as libc::pid_t, "{how:?}");
        child
            .kill()
            .expect("the pidfd says the child is gone: no error");
    }
}
