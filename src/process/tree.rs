//! A worker's process tree: the processes a task started, and theirs.
//!
//! When the pool stops a worker on purpose (a task timeout, a cancel in a
//! `kill_on_cancel` pool, `kill_workers`, `terminate_workers`, a
//! `shutdown_within` deadline), the processes its task started must stop
//! too: a timed-out task that ran `ffmpeg` should not leave `ffmpeg`
//! running (loky L6). A worker that exits on its own is not a stop: what
//! its task left running, a daemon it meant to start included, is left
//! alone.
//!
//! Linux keeps no list of a process's descendants that can be read in one
//! go here (`/proc/<pid>/task/<tid>/children` needs a kernel option this
//! crate cannot count on), so the tree is found by reading every
//! `/proc/<pid>/stat` for its parent pid, as loky does with psutil. It
//! must be found while the worker is alive: once the worker dies its
//! children belong to init, and nothing links them to the worker any more.
//!
//! Between reading `/proc` and signalling, a descendant may exit and its
//! pid be reused by an unrelated process. So each descendant is opened as a
//! pidfd first, which names that process and no other for as long as the
//! descriptor lives, and its parent is read again after the open: a pid
//! reused meanwhile has another parent and is skipped. Every descendant is
//! opened before any is signalled, so a parent dying from its signal does
//! not hide its children.
//!
//! This is best effort, as loky's is: a process that forks between the
//! scan and the signal, or that left the tree (daemonized) before, is not
//! reached.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

/// Signals every current descendant of `pid` (not `pid` itself). Linux
/// only; elsewhere it does nothing.
pub(crate) fn signal_descendants(pid: u32, signal: libc::c_int) {
    #[cfg(target_os = "linux")]
    for (_, fd) in open_descendants(pid) {
        send(&fd, signal);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (pid, signal);
}

/// The descendants of `pid`, each with a pidfd checked to name the process
/// that was `pid`'s descendant (see the module docs).
#[cfg(target_os = "linux")]
fn open_descendants(pid: u32) -> Vec<(u32, OwnedFd)> {
    let children = children_by_parent();
    let mut found = Vec::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        for &child in children.get(&parent).into_iter().flatten() {
            let Some(fd) = crate::process::child::open_pidfd(child as libc::pid_t) else {
                continue;
            };
            if parent_of(child) == Some(parent) {
                found.push((child, fd));
                parents.push(child);
            }
        }
    }
    found
}

/// Every process's children, from `/proc/*/stat`.
#[cfg(target_os = "linux")]
fn children_by_parent() -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return children;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(parent) = parent_of(pid) {
            children.entry(parent).or_default().push(pid);
        }
    }
    children
}

/// The parent pid of `pid`, or `None` if it is gone.
#[cfg(target_os = "linux")]
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_parent(&stat)
}

/// The fourth field of a `/proc/<pid>/stat` line. The second, the command
/// name in parentheses, may itself hold spaces and parentheses, so the
/// fields are counted from the last `)`.
fn parse_parent(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(target_os = "linux")]
fn send(pidfd: &OwnedFd, signal: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal takes a descriptor we own, a signal number,
    // a null siginfo (allowed: "as if by kill") and flags; it touches no
    // memory of ours. A process that has exited meanwhile gives ESRCH,
    // which is what we want anyway.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_is_read_after_the_last_parenthesis_of_the_command_name() {
        assert_eq!(parse_parent("42 (sh) S 7 42 42 0"), Some(7));
        assert_eq!(parse_parent("42 (a) b (c) R 9 1 1"), Some(9));
        assert_eq!(parse_parent("42 (no end"), None);
        assert_eq!(parse_parent(""), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_tree_of_a_shell_holds_its_child_and_grandchild_and_both_stop() {
        use std::process::{Child, Command, Stdio};
        use std::time::{Duration, Instant};

        /// Stops the whole tree even if the test fails half-way, so that
        /// no `sleep 1000` outlives it.
        struct Outer(Child);
        impl Drop for Outer {
            fn drop(&mut self) {
                signal_descendants(self.0.id(), libc::SIGKILL);
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }

        // The background job is a child of the outer shell, and the sleep
        // (not its last command, so not exec'd in its place) its child.
        let mut outer = Outer(
            Command::new("sh")
                .args(["-c", "(sleep 1000; true) & wait"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sh runs"),
        );
        let pid = outer.0.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        let tree = loop {
            let tree: Vec<u32> = open_descendants(pid).into_iter().map(|(p, _)| p).collect();
            if tree.len() == 2 {
                break tree;
            }
            assert!(Instant::now() < deadline, "tree never grew: {tree:?}");
            std::thread::sleep(Duration::from_millis(5));
        };
        signal_descendants(pid, libc::SIGKILL);
        // The outer shell's `wait` returns once its child is gone.
        outer.0.wait().expect("reaped");
        for p in tree {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                if stat.is_empty() || stat.contains(") Z ") {
                    break;
                }
                assert!(Instant::now() < deadline, "{p} survived: {stat}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
