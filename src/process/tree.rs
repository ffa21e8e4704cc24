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
//! `/proc/<pid>/stat` for its parent pid, as loky does with psutil
//! ([`ProcessTable`]). It must be found while the worker is alive: once the
//! worker dies its children belong to init, and nothing links them to the
//! worker any more. For the same reason a stop that escalates (SIGTERM,
//! then SIGKILL) keeps the [`Tree`] it found the first time: a process
//! that outlives SIGTERM after its parent died can only be found there.
//!
//! Between reading `/proc` and signalling, a descendant may exit and its
//! pid be reused by an unrelated process. So each descendant is opened as a
//! pidfd first, which names that process and no other for as long as the
//! descriptor lives; its parent pid is read again after the open, and its
//! parent is then checked to still exist through the parent's own pidfd
//! (a process that exists, if only as a zombie, keeps its pid). A pid
//! reused meanwhile fails one of the two checks and is skipped. Every
//! descendant is opened before any is signalled, so a parent dying from
//! its signal does not hide its children.
//!
//! This is best effort, as loky's is: a process that forks between the
//! scan and the signal, or that left the tree (daemonized) before, is not
//! reached. Without pidfds (Linux before 5.3, a seccomp filter that
//! refuses them, other systems) no descendant is signalled at all.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::Instant;

use super::child::{exited_by, open_pidfd, send_via_pidfd};

/// Which process is whose child: read once from `/proc` for one round of
/// stops (a scan reads every process's `stat`, so a pool that stops all
/// its workers at once reads them once, not once per worker).
#[derive(Default)]
pub(crate) struct ProcessTable {
    children: HashMap<u32, Vec<u32>>,
}

impl ProcessTable {
    /// Reads `/proc/*/stat` (Linux; an empty table elsewhere).
    pub(crate) fn read() -> Self {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        #[cfg(target_os = "linux")]
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                if let Some(parent) = parent_of(pid) {
                    children.entry(parent).or_default().push(pid);
                }
            }
        }
        ProcessTable { children }
    }

    /// The descendants of the process that `root` (a pidfd) names, whose pid
    /// is `root_pid`, each opened as a pidfd and checked (module docs).
    pub(crate) fn descendants(&self, root_pid: u32, root: &OwnedFd) -> Tree {
        let mut found: Vec<OwnedFd> = Vec::new();
        // A parent still exists (running or a zombie) after its child was
        // checked, so its pid was not reused meanwhile, and the child's
        // parent pid is really that parent. `None` names the root.
        let exists = |found: &[OwnedFd], at: Option<usize>| {
            send_via_pidfd(at.map_or(root, |i| &found[i]), 0).is_ok()
        };
        if !exists(&found, None) {
            return Tree(found);
        }
        let mut parents: Vec<(u32, Option<usize>)> = vec![(root_pid, None)];
        while let Some((parent, at)) = parents.pop() {
            for &child in self.children.get(&parent).into_iter().flatten() {
                let Some(fd) = open_pidfd(child as libc::pid_t) else {
                    continue;
                };
                if parent_of(child) == Some(parent) && exists(&found, at) {
                    found.push(fd);
                    parents.push((child, Some(found.len() - 1)));
                }
            }
        }
        Tree(found)
    }
}

/// Processes found in a worker's tree, each held by a pidfd: a handle that
/// names that process and no other, whatever happens to its pid.
#[derive(Default)]
pub(crate) struct Tree(Vec<OwnedFd>);

impl Tree {
    /// Sends `signal` to every process of the tree still running.
    pub(crate) fn signal(&self, signal: libc::c_int) {
        for fd in &self.0 {
            // ESRCH (it has exited) is what we want anyway.
            let _ = send_via_pidfd(fd, signal);
        }
    }

    /// Waits until every process of the tree has exited, or `deadline`
    /// passes (`None`: however long that takes); returns whether they all
    /// exited. A failed poll counts as "not exited": the caller then
    /// escalates, which is harmless for a process that is gone.
    pub(crate) fn wait_exited(&self, deadline: Option<Instant>) -> bool {
        self.0.iter().all(|fd| exited_by(fd, deadline))
    }
}

/// The parent pid of `pid`, or `None` if it is gone.
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
                tree_of(self.0.id()).signal(libc::SIGKILL);
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        fn tree_of(pid: u32) -> Tree {
            match open_pidfd(pid as libc::pid_t) {
                Some(root) => ProcessTable::read().descendants(pid, &root),
                None => Tree::default(),
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
            let tree = tree_of(pid);
            if tree.0.len() == 2 {
                break tree;
            }
            assert!(
                Instant::now() < deadline,
                "tree never grew: {}",
                tree.0.len()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(!tree.wait_exited(Some(Instant::now())), "exited by itself");
        tree.signal(libc::SIGKILL);
        assert!(tree.wait_exited(Some(Instant::now() + Duration::from_secs(30))));
        // The outer shell's `wait` returns once its child is gone.
        outer.0.wait().expect("reaped");
    }
}
