//! Task identity without registration: which function a worker should run.
//!
//! `executor.submit(fib, 30)` on a process pool has to tell another process
//! "run `fib`". Rust has no portable way to name a function at run time, and
//! a registry (every task annotated, or collected by the linker) is a burden
//! on users. This module uses the technique of `mitosis` and `procspawn`
//! instead, made simpler by one restriction: the task type `F` must be
//! **zero-sized** (a `fn` item or a closure that captures nothing), `Copy`,
//! `Send` and `'static`.
//!
//! # The technique
//!
//! 1. For each task signature the parent instantiates a *trampoline*,
//!    [`trampoline::<F, A, R>`](trampoline): a plain, non-generic-looking
//!    `fn(&[u8]) -> Result<Vec<u8>, RemoteError>` that decodes an `A`,
//!    calls `F`, and encodes the `R`. Because `F` has no bytes, the
//!    trampoline needs no data to call it: it *conjures* an `F` out of
//!    nothing. That is the same as copying the parent's value, since every
//!    value of a zero-sized `Copy` type is the same (there are no bits that
//!    could differ).
//! 2. The trampoline's address is sent as an **offset** from a fixed
//!    function of this crate, the *anchor* ([`entry_of`]). Absolute
//!    addresses differ between processes (ASLR), but ASLR moves a loaded
//!    image as a whole, so the distance between two functions of the same
//!    image is the same in every process that runs that image.
//! 3. The worker (the same executable started again) adds the offset to its
//!    own anchor's address and calls the result ([`resolve`]).
//!
//! # Limits (why this is only sound with the handshake)
//!
//! * **Same build.** The offset means something only in the very same
//!   executable. Workers are started from `/proc/self/exe` (the parent's own
//!   file, even if it was replaced on disk), and both sides compare a
//!   [`BuildId`] at handshake; a worker of another build is refused before a
//!   single offset is resolved. A forged or corrupted offset from a trusted
//!   parent would still be undefined behaviour: the pipe is not a security
//!   boundary, and is only ever connected to the parent that spawned it.
//! * **Same image.** The anchor and the trampoline must be in the same loaded
//!   object. They are in an ordinary (statically linked Rust) executable.
//!   They are *not* if this crate is built as a Rust `dylib`
//!   (`-C prefer-dynamic`) or the task lives in a library loaded with
//!   `dlopen`; such programs cannot use the process pool.
//! * **Zero-sized `F` only.** A closure that captures data (or a `fn`
//!   pointer, which is 8 bytes) is a compile error at monomorphisation
//!   (`cargo build`, not always `cargo check`). A closure that captures only
//!   zero-sized `Copy` values is accepted and conjured like a `fn` item.
//!   That is sound for every such capture but one kind: a *proof token*, a
//!   zero-sized `Copy + Send + 'static` type with a private constructor
//!   whose existence promises that something happened in this process
//!   (`initialize()` ran, say). The worker gets a token although nothing
//!   happened there, and a library that relies on the promise in `unsafe`
//!   code would then misbehave. Stable Rust cannot tell such a closure
//!   from one that captures nothing, so the public docs (`executor`
//!   module) say not to capture one; `mitosis` and `procspawn` conjure
//!   tasks the same way and share the gap.
//! * Function pointers must be addresses in the image: true on every
//!   target with processes that Rust supports (on ELFv1 PowerPC64 they point
//!   at descriptors, which are also in the image).
//!
//! All `unsafe` of the process pool lives in this file.
//!
//! # Panics in tasks
//!
//! The trampoline runs the whole task, decoding and encoding included,
//! under `catch_unwind`, so a panic becomes [`RemoteError::Panicked`] with
//! its message and the worker lives on. The backtrace is captured by a panic
//! hook that a worker installs once ([`install_worker_panic_hook`]); it
//! records `Backtrace::capture()` (empty unless `RUST_BACKTRACE` or
//! `RUST_LIB_BACKTRACE` is set) in a thread-local, then calls the previous
//! hook, so the usual message still reaches the worker's stderr.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use once_cell::sync::Lazy;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::codec;
use super::protocol::{PROTOCOL_VERSION, RemoteError};
use crate::Error;
use crate::error::take_panic_message;

/// A resolved task entry: decodes the argument, runs the task, encodes the
/// result. Never unwinds.
pub(crate) type Trampoline = fn(&[u8]) -> Result<Vec<u8>, RemoteError>;

/// The fixed point every entry offset is measured from. Its body is unique
/// so that no linker folds it with another function (harmless, but it keeps
/// the reasoning simple).
#[inline(never)]
fn anchor() -> u64 {
    0x5ca1_ab1e_0f0f_0001
}

/// A second fixed function of this crate, for [`BuildId`].
#[inline(never)]
fn probe() -> u64 {
    0x5ca1_ab1e_0f0f_0002
}

/// The anchor's address in this process. Taken at one single site (this
/// never-inlined function) so every caller, in any crate or codegen unit,
/// gets the same pointer.
#[inline(never)]
fn anchor_ptr() -> *const u8 {
    anchor as fn() -> u64 as *const u8
}

/// The distance from the anchor to `p`, as sent on the wire.
fn offset_from_anchor(p: *const u8) -> u64 {
    (p as usize).wrapping_sub(anchor_ptr() as usize) as u64
}

/// The entry id of the task type `F` with argument `A` and result `R`: the
/// offset of its trampoline from the anchor. Send it in
/// [`ToWorker::Run`](super::protocol::ToWorker::Run); the worker turns it
/// back with [`resolve`]. Fails to compile if `F` is not zero-sized.
pub(crate) fn entry_of<F, A, R>() -> u64
where
    F: Fn(A) -> R + Copy + Send + 'static,
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    const { assert_zero_sized::<F>() };
    let t: Trampoline = trampoline::<F, A, R>;
    offset_from_anchor(t as *const u8)
}

/// Turns an entry id from [`entry_of`] back into the trampoline.
///
/// # Safety
///
/// `entry` must have been produced by [`entry_of`] in a process running the
/// same executable image as this one (the caller has checked the peer's
/// [`BuildId`] against [`BuildId::current`]), and the image must hold both
/// this crate and the task (see the module docs). Any other value makes the
/// returned pointer dangle, and calling it is undefined behaviour.
pub(crate) unsafe fn resolve(entry: u64) -> Trampoline {
    let p = anchor_ptr().wrapping_add(entry as usize);
    // SAFETY: by the caller's contract `entry` is `t - anchor` for a
    // trampoline `t` of this very image, measured in a process where the
    // image was loaded at another base. The loader relocates an image as a
    // whole, so `anchor + entry` here is that same trampoline, a function
    // of type `Trampoline`; a `*const u8` and a `fn` pointer have the same
    // size and representation on every target with processes.
    unsafe { std::mem::transmute::<*const u8, Trampoline>(p) }
}

/// `const` check behind [`entry_of`] and [`trampoline`]: only a zero-sized
/// task can be conjured in another process.
const fn assert_zero_sized<F>() {
    assert!(
        std::mem::size_of::<F>() == 0,
        "a process-pool task must be a fn item or a closure that captures nothing \
         (its type must be zero-sized); pass data through the argument instead"
    );
}

/// The per-signature entry point a worker calls: decodes `A` from `arg`,
/// runs `F`, encodes `R`, all under `catch_unwind`.
///
/// A decode failure, a panic of `A`'s `Deserialize` included, is
/// [`RemoteError::Decode`] (as for a chunk's arguments and for results in
/// the parent), an encode failure, a panic of `R`'s `Serialize` included,
/// [`RemoteError::Encode`] (as `Error::Encode` documents, and as for an
/// argument in the parent; found by review), a panic of the task
/// [`RemoteError::Panicked`].
pub(crate) fn trampoline<F, A, R>(arg: &[u8]) -> Result<Vec<u8>, RemoteError>
where
    F: Fn(A) -> R + Copy + Send + 'static,
    A: DeserializeOwned,
    R: Serialize,
{
    const { assert_zero_sized::<F>() };
    forget_last_backtrace();
    let run = || -> Result<Vec<u8>, RemoteError> {
        // A `Deserialize` that panics is this argument's decode error, as
        // in a chunk and for results (D12), not the task's panic.
        let a: A = codec::decode_caught(arg)?;
        // SAFETY: `F` is zero-sized (asserted at compile time above), so a
        // value of it has no bytes and `zeroed` writes none: it is a valid
        // `F`. `F: Fn` on stable Rust means `F` is a fn item or a closure;
        // zero-sized means it captures nothing, or only zero-sized values.
        // It is `Copy`, so duplicating the value the parent passed to
        // `submit` is allowed, and every value of a zero-sized type is that
        // same value: this is a copy of the parent's `F`. `'static` means it
        // borrows nothing. The one promise a copy cannot carry to another
        // process is a captured proof token's "this happened here"; the
        // module docs and the public docs say not to capture one.
        let f: F = unsafe { std::mem::zeroed() };
        let r = f(a);
        Ok(codec::encode_caught(&r)?)
    };
    match panic::catch_unwind(AssertUnwindSafe(run)) {
        Ok(outcome) => outcome,
        Err(payload) => {
            // A payload whose `Drop` panics must not take the worker down.
            let message = take_panic_message(payload);
            let backtrace = take_last_backtrace();
            Err(RemoteError::Panicked { message, backtrace })
        }
    }
}

thread_local! {
    /// The backtrace text of the last panic on this thread, recorded by the
    /// worker panic hook when backtraces are enabled.
    static LAST_BACKTRACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Forgets a backtrace recorded on this thread and not taken: what is
/// taken next belongs to a panic that happens after this call.
pub(crate) fn forget_last_backtrace() {
    let _ = LAST_BACKTRACE.try_with(|b| b.borrow_mut().take());
}

/// The backtrace text the worker panic hook recorded for the last panic on
/// this thread (none outside a worker, or with backtraces off).
pub(crate) fn take_last_backtrace() -> Option<String> {
    LAST_BACKTRACE
        .try_with(|b| b.borrow_mut().take())
        .ok()
        .flatten()
}

/// Records the backtrace of a panic happening now on this thread, if
/// backtraces are enabled (`RUST_BACKTRACE` / `RUST_LIB_BACKTRACE`).
fn record_backtrace(bt: &Backtrace) {
    if bt.status() == BacktraceStatus::Captured {
        let text = bt.to_string();
        let _ = LAST_BACKTRACE.try_with(|b| *b.borrow_mut() = Some(text));
    }
}

/// Installs, once per process, the panic hook that lets [`trampoline`]
/// report a backtrace. Call it in worker mode only: it is process-global.
/// The previous hook still runs afterwards, so panics are printed as usual.
pub(crate) fn install_worker_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            record_backtrace(&Backtrace::capture());
            previous(info);
        }));
    });
}

/// A cheap fingerprint of the running build, compared at handshake so that
/// a worker that is not the same executable is refused before any entry is
/// resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct BuildId {
    /// [`PROTOCOL_VERSION`] of the message set.
    pub(crate) protocol: u32,
    /// FNV-1a hash of this crate's version string.
    pub(crate) crate_version: u64,
    /// Offset of a second function of this crate from the anchor.
    pub(crate) probe_offset: u64,
    /// Offset of a standard-library function from the anchor (changes with
    /// the link layout).
    pub(crate) std_offset: u64,
    /// The executable file, when its metadata could be read.
    pub(crate) exe: Option<ExeStamp>,
}

/// Identity of the executable file: length, modification time and (on
/// unix) device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct ExeStamp {
    /// File length in bytes.
    pub(crate) len: u64,
    /// Modification time, nanoseconds since the Unix epoch (0 if unknown).
    pub(crate) modified_ns: u64,
    /// Device id (0 off unix).
    pub(crate) dev: u64,
    /// Inode number (0 off unix).
    pub(crate) ino: u64,
}

impl BuildId {
    /// This process's build id, computed once (one `stat` of the
    /// executable). Compute it early (at `init()`), before anyone can
    /// replace the file on disk.
    pub(crate) fn current() -> BuildId {
        // Global state built lazily, once per process: once_cell's job.
        static CURRENT: Lazy<BuildId> = Lazy::new(|| BuildId {
            protocol: PROTOCOL_VERSION,
            crate_version: fnv1a(env!("CARGO_PKG_VERSION").as_bytes()),
            probe_offset: offset_from_anchor(probe as fn() -> u64 as *const u8),
            std_offset: offset_from_anchor(std::process::id as fn() -> u32 as *const u8),
            exe: ExeStamp::current(),
        });
        *CURRENT
    }

    /// `Ok` if `peer` is the same build as `self`; otherwise an
    /// [`Error::Protocol`] naming every field that differs.
    pub(crate) fn check_peer(&self, peer: &BuildId) -> Result<(), Error> {
        let mut diffs = Vec::new();
        let mut cmp = |what: &str, ours: String, theirs: String| {
            if ours != theirs {
                diffs.push(format!("{what}: ours {ours}, theirs {theirs}"));
            }
        };
        cmp(
            "protocol",
            self.protocol.to_string(),
            peer.protocol.to_string(),
        );
        cmp(
            "crate version hash",
            hex(self.crate_version),
            hex(peer.crate_version),
        );
        cmp(
            "code layout",
            hex(self.probe_offset),
            hex(peer.probe_offset),
        );
        cmp("link layout", hex(self.std_offset), hex(peer.std_offset));
        cmp(
            "executable",
            format!("{:?}", self.exe),
            format!("{:?}", peer.exe),
        );
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(Error::Protocol(format!(
                "the worker is not the same build as the parent ({}); \
                 was the executable rebuilt or replaced while the pool ran?",
                diffs.join("; ")
            )))
        }
    }
}

impl ExeStamp {
    /// Reads the running executable's metadata (`/proc/self/exe` on Linux,
    /// which follows the file even if it was replaced; `current_exe`
    /// elsewhere). `None` if it cannot be read.
    fn current() -> Option<ExeStamp> {
        let meta = std::fs::metadata("/proc/self/exe")
            .or_else(|_| std::fs::metadata(std::env::current_exe()?))
            .ok()?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        Some(ExeStamp {
            len: meta.len(),
            modified_ns,
            dev,
            ino,
        })
    }
}

/// `0x`-prefixed hex, for mismatch messages.
fn hex(v: u64) -> String {
    format!("{v:#x}")
}

/// 64-bit FNV-1a: a tiny, stable hash (std's `DefaultHasher` may change
/// between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// [`entry_of`] then [`resolve`] in one go, for tests: safe, because the
/// entry is made and resolved in this same process and image.
#[cfg(test)]
fn entry_and_trampoline<F, A, R>() -> (u64, Trampoline)
where
    F: Fn(A) -> R + Copy + Send + 'static,
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let entry = entry_of::<F, A, R>();
    // SAFETY: `entry` was just made by `entry_of` in this process, so it is
    // measured in this image at this base address.
    (entry, unsafe { resolve(entry) })
}

/// [`resolve`] for the cross-process test, after the build check a worker
/// does: safe in that test because the entry comes from `entry_of` in the
/// parent test process, which `check_peer` proved is the same build.
#[cfg(test)]
fn resolve_checked(entry: u64, parent: &BuildId) -> Trampoline {
    BuildId::current().check_peer(parent).expect("same build");
    // SAFETY: the parent made `entry` with `entry_of` in this same
    // executable (it spawned `current_exe`, and the build ids match).
    unsafe { resolve(entry) }
}

#[cfg(test)]
#[path = "entry_tests.rs"]
mod tests;
