//! Worker-side tools for the tests of the process pool's stop path
//! (`src/process/freeze.rs`): tasks call these inside a worker to make the
//! situations a stop must handle — a worker stalled in the middle of a
//! result frame, a worker that cannot stop, a count of the freezes it went
//! through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use concurrent_futures::{ProcessPoolBuilder, ProcessPoolExecutor};

/// The worker's end of the worker → parent pipe (src/process/os.rs RES_FD).
pub const RESULT_FD: i32 = 4;

/// Writes the start of a frame to the worker's result pipe: a header
/// announcing 1,000 bytes, and 10 of them. The reader then waits inside
/// the frame until the worker writes the rest (never) or exits.
pub fn write_partial_frame() {
    let mut bytes = 1000u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[3; 10]);
    // SAFETY: writes a live buffer to the worker's own result pipe.
    let n = unsafe { libc::write(RESULT_FD, bytes.as_ptr().cast(), bytes.len()) };
    assert_eq!(n, bytes.len() as isize, "a partial frame written whole");
}

/// Leaves a thread of this process in a CLONE_VFORK wait for `ms`: a
/// SIGSTOP of the worker then never completes a group stop while it
/// lasts, so the worker never counts as stopped (a thread held in the
/// kernel, as `freeze.rs` describes). Returns at once; the receiver hears
/// when the thread is about to enter the wait.
pub fn start_holding_stop(ms: u64) -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _ = tx.send(());
        // SAFETY: clone without CLONE_VM is a fork (a copy-on-write copy of
        // this thread); the child only calls nanosleep and _exit, both
        // async-signal-safe. CLONE_VFORK makes this thread wait for it.
        unsafe {
            let r = libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_VFORK | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            );
            if r == 0 {
                let ts = libc::timespec {
                    tv_sec: (ms / 1000) as libc::time_t,
                    tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
                };
                libc::nanosleep(&ts, std::ptr::null_mut());
                libc::_exit(0);
            }
            if r > 0 {
                libc::waitpid(r as libc::pid_t, std::ptr::null_mut(), 0);
            }
        }
    });
    rx
}

/// [`start_holding_stop`], returning once the thread is in the wait (a
/// margin after it said it was about to enter it; not a timing assertion).
pub fn hold_stop(ms: u64) {
    let _ = start_holding_stop(ms).recv();
    std::thread::sleep(Duration::from_millis(50));
}

static CONTS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigcont(_: libc::c_int) {
    CONTS.fetch_add(1, Ordering::SeqCst);
}

/// Sleeps `ms` and returns how many SIGCONTs the worker got meanwhile:
/// each one ends a freeze of the worker by the pool.
pub fn sigconts_while_sleeping(ms: u64) -> u64 {
    // SAFETY: installs a handler that only increments an atomic.
    unsafe {
        libc::signal(
            libc::SIGCONT,
            on_sigcont as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    CONTS.store(0, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(ms));
    CONTS.load(Ordering::SeqCst)
}

/// A one-worker pool's builder, for the test harness: a stop test's
/// pipeline is that worker's.
pub fn one_worker() -> ProcessPoolBuilder {
    ProcessPoolExecutor::builder().max_workers(1).test_harness()
}

/// Ends a test's pool for sure: SIGKILLs its workers, then waits (under a
/// hang guard) for `shutdown(wait = true)`, which returns once they are
/// reaped and every task they held has ended.
pub fn kill_and_reap(pool: ProcessPoolExecutor) {
    pool.kill_workers();
    let pool = Arc::new(pool);
    super::guarded("shutdown(wait = true) after kill_workers", move || {
        pool.shutdown(true, false)
    });
}
