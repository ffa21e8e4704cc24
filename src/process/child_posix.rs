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
