//! Starting a child process cheaply, with chosen descriptors and nothing
//! else of the parent's, and the handle that waits for it
//! ([`WorkerChild`]).
//!
//! # Why not just `Command::spawn` with a `pre_exec` hook
//!
//! A worker needs its protocol pipes on fixed descriptor numbers and must
//! inherit no other descriptor of the parent's, even one somebody left
//! without close-on-exec. Done in a `pre_exec` hook (dup2 the pipes into
//! place, close everything above them), that is easy, but any `pre_exec`
//! hook makes std start the child with a real `fork()`: the kernel copies
//! the parent's page tables and marks every writable page copy-on-write,
//! and the parent then takes a page fault on the first write to each of
//! them. That costs time in proportion to the parent's resident memory: a
//! 2-worker pool took ~1.4 ms to its first result from a 2 MiB process,
//! ~3–5.7 ms from a 67 MiB one and ~20–23 ms from a 512 MiB one; with
//! `posix_spawn`, ~1 ms from all three (2-core Linux machine).
//!
//! `posix_spawn` needs none of that. glibc (2.24 and later) implements it
//! with `clone(CLONE_VM | CLONE_VFORK)`: the child runs on the parent's
//! memory, on a small stack of its own, only until it calls `execve`, and
//! the calling thread sleeps until then, so nothing is copied and the cost
//! no longer depends on the parent's size. What the hook did becomes a list
//! of *file actions* that glibc performs in the child: open `/dev/null` on
//! stdin, `dup2` each pipe onto its number, close any unmapped number below
//! the last one and every descriptor above it
//! (`posix_spawn_file_actions_addclosefrom_np`, glibc 2.34+).
//! glibc also reports a failed `execve` as the return value of
//! `posix_spawn`, so a missing program is an error of the spawn, as with
//! std.
//!
//! Two details make the file actions correct whatever numbers the parent's
//! descriptors have:
//!
//! * every source descriptor is first copied (close-on-exec) to a number
//!   above the target range, so no `dup2` overwrites a source that a later
//!   one still needs, and no source is itself a target: `dup2(fd, fd)`
//!   would keep the close-on-exec flag (and the copies are closed in the
//!   child by the final "close from" action);
//! * SIGPIPE goes back to its default action in the child, as std does for
//!   its children (Rust programs ignore SIGPIPE, and an ignored signal stays
//!   ignored across `execve`); and the child starts with no signal blocked,
//!   which std does not do: the mask would otherwise come from whichever
//!   thread built the pool (a program that blocks SIGTERM in its threads
//!   to handle it on one would get workers that `terminate()` cannot stop).
//!
//! `posix_spawn_file_actions_addclosefrom_np` is looked up at run time
//! (`dlsym`), so that a program built here still runs on a glibc older
//! than 2.34. Where it is missing, on other C libraries and Unixes, and for
//! what the fast path does not cover (a working directory, a program name
//! without a `/`, which std looks up in `PATH`), the child is started the
//! old way: std's `Command::spawn` with a `pre_exec` hook doing the same
//! steps, i.e. a `fork`. (The pool's workers always run an absolute path
//! with no working directory.)
//!
//! All the `unsafe` of starting and reaping children is in this module.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};

/// A child process this process started, by pid.
///
/// Unlike `std::process::Child`, it can be built from a pid (the fast
/// path of [`spawn`] has no `Child`). It reaps the child at most once and
/// never signals a pid it has reaped, which could by then name an unrelated
/// process. Like `Child`, dropping it neither kills nor reaps the child.
#[derive(Debug)]
pub(crate) struct WorkerChild {
    pid: libc::pid_t,
    /// Set once the child is reaped: its exit status, or the `errno` of a
    /// wait that found it was no longer our child (reaped by someone else).
    reaped: Option<Result<ExitStatus, i32>>,
}

impl WorkerChild {
    fn new(pid: libc::pid_t) -> WorkerChild {
        WorkerChild { pid, reaped: None }
    }

    /// The child's process id.
    pub(crate) fn id(&self) -> u32 {
        self.pid as u32
    }

    /// SIGKILLs the child. Nothing (and no error) if it was already reaped;
    /// a child that exited but was not reaped yet is a zombie, which the
    /// signal does not hurt.
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Sends `sig` to the child, unless it was already reaped.
    pub(crate) fn signal(&mut self, sig: i32) -> io::Result<()> {
        if self.reaped.is_some() {
            return Ok(());
        }
        // SAFETY: kill() takes two integers and touches no memory of ours.
        // `pid` is our child and not reaped yet (checked above; reaping
        // takes `&mut self`), so it cannot have been reused.
        if unsafe { libc::kill(self.pid, sig) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the child to exit and reaps it (once: later calls return
    /// the same status).
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(r) = self.reaped {
                return r.map_err(io::Error::from_raw_os_error);
            }
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid writes one int into `status`, which we own
            // and which lives across the call.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                self.reaped = Some(Ok(ExitStatus::from_raw(status)));
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Not our child (any more): someone else reaped it, so its
                // pid may be reused; never signal it again.
                Some(libc::ECHILD) => {
                    self.reaped = Some(Err(libc::ECHILD));
                    continue;
                }
                _ => return Err(e),
            }
        }
    }
}

/// Starts `cmd` (its program, arguments, environment changes and working
/// directory; `cmd` must use none of `env_clear`, `arg0`, `stdin`/`stdout`/
/// `stderr`, user or group changes, `process_group` or `pre_exec`) with:
/// stdin from `/dev/null`; stdout `/dev/null` if `stdout_null`, else
/// inherited; stderr inherited; each `(fd, n)` of `map` on descriptor `n`
/// (all `n` > 2 and distinct); and no other descriptor: the unmapped
/// numbers between 3 and the highest `n`, and everything above it, are
/// closed in the child. The parent's descriptors are left as they are.
pub(crate) fn spawn(
    cmd: &mut Command,
    stdout_null: bool,
    map: &[(BorrowedFd<'_>, RawFd)],
) -> io::Result<WorkerChild> {
    spawn_how(cmd, stdout_null, map, How::Fastest)
}

/// Which way [`spawn_how`] starts the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// `posix_spawn` when it can, else `fork`.
    Fastest,
    /// Always `Command::spawn` with a `pre_exec` hook (tests of the
    /// fallback).
    #[cfg_attr(not(test), allow(dead_code))]
    Fork,
}

fn spawn_how(
    cmd: &mut Command,
    stdout_null: bool,
    map: &[(BorrowedFd<'_>, RawFd)],
    how: How,
) -> io::Result<WorkerChild> {
    let last = map.iter().map(|&(_, n)| n).max().unwrap_or(2);
    for (i, &(_, n)) in map.iter().enumerate() {
        if n <= 2 || map[..i].iter().any(|&(_, m)| m == n) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {n} cannot be mapped (stdio, or mapped twice)"),
            ));
        }
    }
    // Sources above the target range (see the module docs); closed here
    // when this function returns, and in the child by the final close.
    let copies = map
        .iter()
        .map(|&(fd, _)| dup_above(fd, last))
        .collect::<io::Result<Vec<OwnedFd>>>()?;
    let moves: Vec<(RawFd, RawFd)> = copies
        .iter()
        .zip(map)
        .map(|(c, &(_, n))| (c.as_raw_fd(), n))
        .collect();
    let holes: Vec<RawFd> = (3..last)
        .filter(|n| !map.iter().any(|&(_, m)| m == *n))
        .collect();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if how == How::Fastest {
        if let Some(result) = posix::spawn(cmd, stdout_null, &moves, &holes, last) {
            return result;
        }
    }
    let _ = how;
    fork_exec(cmd, stdout_null, moves, holes, last)
}

/// A close-on-exec copy of `fd` numbered above `last`.
fn dup_above(fd: BorrowedFd<'_>, last: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor that `fd` keeps open for the
    // call; it touches no memory of ours.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, last + 1) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `r` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// The fallback: std's `fork` + `execve`, with the file actions done by a
/// `pre_exec` hook.
///
/// The hook does not close the descriptors the child must not keep: it
/// marks them close-on-exec, so that `execve` closes them. std reports an
/// `execve` failure to the parent through a close-on-exec pipe of its own,
/// which closing everything above `last` would close too, turning a
/// missing program into a child that silently exits. (That pipe can still
/// be lost when it happens to sit on a number in `3..=last` that is a
/// mapping target; then the failed child exits with status 1 and the
/// caller sees it end before its handshake.)
fn fork_exec(
    cmd: &mut Command,
    stdout_null: bool,
    moves: Vec<(RawFd, RawFd)>,
    holes: Vec<RawFd>,
    last: RawFd,
) -> io::Result<WorkerChild> {
    cmd.stdin(Stdio::null());
    if stdout_null {
        cmd.stdout(Stdio::null());
    }
    let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set, which we own.
    if unsafe { libc::sigemptyset(empty.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: initialised just above.
    let empty = unsafe { empty.assume_init() };
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes `dup2`, `fcntl`,
    // `close_range` and `sigprocmask` calls on integers and on `empty`, and
    // reads `moves` and `holes`, which were allocated before the fork and
    // are not freed in the child; it takes no lock and does not allocate.
    // std has set up stdio before the hook runs, and the sources are all
    // above `last`, so no `dup2` overwrites a descriptor still needed.
    unsafe {
        cmd.pre_exec(move || {
            for &(from, to) in &moves {
                if libc::dup2(from, to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for &n in &holes {
                libc::fcntl(n, libc::F_SETFD, libc::FD_CLOEXEC);
            }
            cloexec_above(last);
            // std keeps the parent thread's signal mask; a worker starts
            // with none blocked (as with `posix_spawn` above).
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // `Child` has no descriptors of ours (no piped stdio) and dropping it
    // neither waits nor kills: the pid is all we keep.
    let pid =
        libc::pid_t::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
    Ok(WorkerChild::new(pid))
}

/// In the child before exec (fallback path): marks every descriptor above
/// `last` close-on-exec, so the program inherits nothing but what was
/// mapped, even from a parent (or a library, or a job runner) that left
/// descriptors without close-on-exec (Python's `close_fds=True`).
fn cloexec_above(last: RawFd) {
    let first = (last + 1) as libc::c_uint;
    #[cfg(target_os = "linux")]
    {
        // SAFETY: close_range on a range of integers; async-signal-safe.
        // CLOSE_RANGE_CLOEXEC (Linux 5.11+) only sets the flag.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if r == 0 {
            return;
        }
    }
    // Older kernels (and other Unixes): one by one up to a bound that
    // covers ordinary descriptor limits.
    for fd in first..65_536 {
        // SAFETY: fcntl on an integer; EBADF for unused ones is harmless.
        unsafe { libc::fcntl(fd as i32, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod posix {
    //! The `posix_spawn` path (glibc).

    use super::WorkerChild;
    use std::ffi::{CString, OsStr, OsString};
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::RawFd;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::process::Command;

    /// Program, arguments and environment of `cmd` as C strings.
    struct Exec {
        program: CString,
        args: Vec<CString>,
        env: Vec<CString>,
    }

    impl Exec {
        /// `None` when `cmd` needs what only std's spawn does: a working
        /// directory, or a `PATH` search (a program name without a `/`).
        fn of(cmd: &Command) -> Option<io::Result<Exec>> {
            if cmd.get_current_dir().is_some() || !cmd.get_program().as_bytes().contains(&b'/') {
                return None;
            }
            Some(Self::build(cmd))
        }

        fn build(cmd: &Command) -> io::Result<Exec> {
            let program = c_string(cmd.get_program())?;
            let args = std::iter::once(Ok(program.clone()))
                .chain(cmd.get_args().map(c_string))
                .collect::<io::Result<Vec<_>>>()?;
            let mut vars: std::collections::BTreeMap<OsString, OsString> =
                std::env::vars_os().collect();
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => vars.insert(k.to_owned(), v.to_owned()),
                    None => vars.remove(k),
                };
            }
            let env = vars
                .into_iter()
                .map(|(k, v)| {
                    let mut kv = k.into_vec();
                    kv.push(b'=');
                    kv.extend_from_slice(v.as_bytes());
                    CString::new(kv).map_err(nul_error)
                })
                .collect::<io::Result<Vec<_>>>()?;
            Ok(Exec { program, args, env })
        }
    }

    fn c_string(s: &OsStr) -> io::Result<CString> {
        CString::new(s.as_bytes()).map_err(nul_error)
    }

    fn nul_error(_: std::ffi::NulError) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in a program name, argument or environment variable",
        )
    }

    /// A null-terminated array of pointers into `strings`, for `execve`.
    fn pointers(strings: &[CString]) -> Vec<*mut libc::c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr().cast_mut())
            .chain(std::iter::once(std::ptr::null_mut()))
            .collect()
    }

    /// `posix_spawn_file_actions_addclosefrom_np`'s type (glibc's spawn.h).
    type AddCloseFrom =
        unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, libc::c_int) -> libc::c_int;

    /// `posix_spawn_file_actions_addclosefrom_np`, if this glibc has it
    /// (2.34+). Looked up once, at run time, so that the program does not
    /// require glibc 2.34 to load.
    fn addclosefrom() -> Option<AddCloseFrom> {
        static FOUND: once_cell::sync::OnceCell<Option<AddCloseFrom>> =
            once_cell::sync::OnceCell::new();
        *FOUND.get_or_init(|| {
            // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only
            // looks the symbol up.
            let p = unsafe {
                libc::dlsym(
                    libc::RTLD_DEFAULT,
                    c"posix_spawn_file_actions_addclosefrom_np".as_ptr(),
                )
            };
            if p.is_null() {
                return None;
            }
            // SAFETY: glibc defines this symbol as a function of exactly
            // this type (spawn.h: `int posix_spawn_file_actions_addclosefrom_np
            // (posix_spawn_file_actions_t *, int)`).
            Some(unsafe { std::mem::transmute::<*mut libc::c_void, AddCloseFrom>(p) })
        })
    }

    /// An error from a `posix_spawn*` call, which returns the error number.
    fn check(r: libc::c_int) -> io::Result<()> {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(r))
        }
    }

    /// An initialised `posix_spawn_file_actions_t`, destroyed on drop. Boxed
    /// so that it never moves after `init` (POSIX does not promise that a
    /// moved one works).
    struct FileActions(Box<MaybeUninit<libc::posix_spawn_file_actions_t>>);

    impl FileActions {
        fn new() -> io::Result<FileActions> {
            let mut b = Box::new(MaybeUninit::uninit());
            // SAFETY: init writes into the allocation, which we own.
            check(unsafe { libc::posix_spawn_file_actions_init(b.as_mut_ptr()) })?;
            Ok(FileActions(b))
        }

        fn as_mut_ptr(&mut self) -> *mut libc::posix_spawn_file_actions_t {
            self.0.as_mut_ptr()
        }
    }

    impl Drop for FileActions {
        fn drop(&mut self) {
            // SAFETY: initialised in `new`, destroyed only here.
            unsafe { libc::posix_spawn_file_actions_destroy(self.0.as_mut_ptr()) };
        }
    }

    /// An initialised `posix_spawnattr_t`, destroyed on drop (boxed as
    /// [`FileActions`]).
    struct Attr(Box<MaybeUninit<libc::posix_spawnattr_t>>);

    impl Attr {
        fn new() -> io::Result<Attr> {
            let mut b = Box::new(MaybeUninit::uninit());
            // SAFETY: init writes into the allocation, which we own.
            check(unsafe { libc::posix_spawnattr_init(b.as_mut_ptr()) })?;
            Ok(Attr(b))
        }

        fn as_mut_ptr(&mut self) -> *mut libc::posix_spawnattr_t {
            self.0.as_mut_ptr()
        }
    }

    impl Drop for Attr {
        fn drop(&mut self) {
            // SAFETY: initialised in `new`, destroyed only here.
            unsafe { libc::posix_spawnattr_destroy(self.0.as_mut_ptr()) };
        }
    }

    /// Starts the child with `posix_spawn`, or `None` when this path cannot
    /// (no `addclosefrom_np` in this glibc, or see [`Exec::of`]).
    pub(super) fn spawn(
        cmd: &Command,
        stdout_null: bool,
        moves: &[(RawFd, RawFd)],
        holes: &[RawFd],
        last: RawFd,
    ) -> Option<io::Result<WorkerChild>> {
        let closefrom = addclosefrom()?;
        let exec = match Exec::of(cmd)? {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        Some(start(&exec, closefrom, stdout_null, moves, holes, last))
    }

    fn start(
        exec: &Exec,
        closefrom: AddCloseFrom,
        stdout_null: bool,
        moves: &[(RawFd, RawFd)],
        holes: &[RawFd],
        last: RawFd,
    ) -> io::Result<WorkerChild> {
        let mut actions = FileActions::new()?;
        let fa = actions.as_mut_ptr();
        let dev_null = c"/dev/null";
        // SAFETY: (every call of this block) `fa` points to the initialised
        // file actions, which outlive the calls; the path is a 'static
        // NUL-terminated string (glibc copies it anyway); the rest are
        // integers. The actions run in the child in this order: stdio, then
        // the moves (sources all above `last`, targets distinct, see
        // `spawn_how`), then the closes, which also close the sources.
        unsafe {
            check(libc::posix_spawn_file_actions_addopen(
                fa,
                libc::STDIN_FILENO,
                dev_null.as_ptr(),
                libc::O_RDONLY,
                0,
            ))?;
            if stdout_null {
                check(libc::posix_spawn_file_actions_addopen(
                    fa,
                    libc::STDOUT_FILENO,
                    dev_null.as_ptr(),
                    libc::O_WRONLY,
                    0,
                ))?;
            }
            for &(from, to) in moves {
                check(libc::posix_spawn_file_actions_adddup2(fa, from, to))?;
            }
            for &n in holes {
                // glibc ignores EBADF here: a hole that is not open in the
                // parent is fine.
                check(libc::posix_spawn_file_actions_addclose(fa, n))?;
            }
            check(closefrom(fa, last + 1))?;
        }

        let mut attr = Attr::new()?;
        let at = attr.as_mut_ptr();
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: (every call of this block) `at` points to the initialised
        // attributes and `set` to a sigset_t we own, both living across the
        // calls; `sigemptyset` initialises `set` before anything reads it.
        unsafe {
            if libc::sigemptyset(set.as_mut_ptr()) < 0 {
                return Err(io::Error::last_os_error());
            }
            check(libc::posix_spawnattr_setsigmask(at, set.as_ptr()))?;
            if libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE) < 0 {
                return Err(io::Error::last_os_error());
            }
            check(libc::posix_spawnattr_setsigdefault(at, set.as_ptr()))?;
            let flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(at, flags as libc::c_short))?;
        }

        let argv = pointers(&exec.args);
        let envp = pointers(&exec.env);
        let mut pid: libc::pid_t = 0;
        // SAFETY: every pointer is valid for the call: `pid` is ours; the
        // program, `argv` and `envp` are NUL-terminated strings in `exec`,
        // and the arrays are null-terminated (`pointers`); file actions and
        // attributes are initialised. glibc runs the child on its own stack
        // with CLONE_VM | CLONE_VFORK: this thread sleeps until the child
        // has called execve (or failed, whose errno is returned here).
        check(unsafe {
            libc::posix_spawn(
                &mut pid,
                exec.program.as_ptr(),
                fa,
                at,
                argv.as_ptr(),
                envp.as_ptr(),
            )
        })?;
        Ok(WorkerChild::new(pid))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
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
}
