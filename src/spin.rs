//! Spinning for a moment before blocking, and deciding when that pays.
//!
//! Parking a thread and waking it again costs two system calls and, on a
//! virtual machine whose other vCPU is halted, 5–50 µs before the woken
//! thread runs. A submit-then-wait round trip that parks on both sides (the
//! worker waiting for work, the caller waiting for the result) pays that
//! twice. Watching the condition for a few microseconds first, as
//! `std::sync::Mutex`, crossbeam-channel and Go's scheduler do, turns most
//! such round trips into a couple of cache-line transfers.
//!
//! Spinning is not free: it burns a core that another thread (on a 2-core
//! machine, the submitter) may need, and it is wasted CPU whenever the wait
//! is long. Hence two rules:
//!
//! * every spin is bounded in time ([`SPIN_LIMIT`], [`WAIT_SPIN_LIMIT`]:
//!   about the cost of one park and wake-up, the classic "spin as long as
//!   blocking would cost" bound, never worse than twice the optimum), and
//!   backs off from busy polling to `yield_now`, which hands the core to
//!   any other runnable thread on it ([`crossbeam_utils::Backoff`]);
//! * an idle *worker* only spins while spinning has been paying off
//!   ([`IdleSpin`]): a pool that gets one task per millisecond parks its
//!   workers at once and costs no more CPU than one that never spins.
//!
//! A thread blocked in `result()` spins unconditionally for its bound: it
//! has nothing else to do, and its wait ends the moment the task does.
//!
//! *How often* an idle worker looks matters too. A look reads the queue's
//! indices and slots, the very cache lines a submitting thread writes, and
//! each look pulls them over to the worker's core; the submitter's next
//! push must pull them back, and its next fence waits for that. A worker
//! that looks every few nanoseconds while a thread streams tasks takes them
//! one at a time and makes every submit pay a round trip between cores (a
//! 200k-task stream: 28–38 ms against 21–25 ms when the worker looks every
//! ~6 µs and finds several queued). But a caller doing submit-then-wait
//! round trips needs the next task noticed at once (0.4 µs round trips
//! against 6.4 µs). The worker tells the two apart by whether anyone was
//! waiting for the result of the task it just ran ([`note_task_awaited`],
//! from the future's `AWAITED` hint): if so it looks eagerly, otherwise it
//! looks every [`RELAXED_POLL`] pause instructions.

use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;

/// How long an idle worker watches the queues before it parks.
pub(crate) const SPIN_LIMIT: Duration = Duration::from_micros(20);

/// How long a thread blocked in `result()` watches its future before it
/// parks: longer than a worker's [`SPIN_LIMIT`], because a park here costs
/// more than the two system calls. A parked caller leaves its CPU idle, a
/// virtual machine halts an idle vCPU, and the wake-up that ends the wait
/// then takes 20–50 µs before the caller runs (measured on the 2-vCPU CI
/// machine). A process-pool round trip (12–20 µs) outlasts a 20 µs watch
/// often enough that callers parked on every task: 2k sequential round
/// trips took a median 13–56 µs from run to run (p99 50–75 µs); watching
/// for 60 µs gives 12–14 µs (p99 33–35 µs), and the thread pool's p99
/// round trip drops from 9.5 to under 2 µs. Past a few steps the watch
/// yields the core on each look, so a worker sharing the caller's CPU
/// loses little to it.
#[cfg_attr(cf_loom, allow(dead_code))]
pub(crate) const WAIT_SPIN_LIMIT: Duration = Duration::from_micros(60);

/// An idle period up to this long counts as "a spin would have caught it"
/// even when the worker parked: it covers the wake-up latency that the
/// measured idle time includes (see [`IdleSpin::idle_ended`]).
const WORTH_SPINNING: Duration = Duration::from_micros(100);

/// Polls `ready` until it returns true (returns true) or `until` passes
/// (returns false), spinning first and then yielding the core.
pub(crate) fn spin_until(until: Instant, ready: impl Fn() -> bool) -> bool {
    let backoff = Backoff::new();
    look_until(until, ready, || backoff.snooze())
}

/// Polls `ready` until it holds (true) or `until` passes (false), calling
/// `between` between two looks.
fn look_until(until: Instant, ready: impl Fn() -> bool, mut between: impl FnMut()) -> bool {
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        between();
    }
}

/// How many `spin_loop` hints a worker waits between looks at the queues
/// when nobody was waiting for its last result (about 6 µs on this
/// machine's CPUs; see the module docs).
const RELAXED_POLL: u32 = 256;

thread_local! {
    static LAST_TASK_AWAITED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Records, on the thread that ran a task, whether a caller was already
/// waiting for its result when it ended.
pub(crate) fn note_task_awaited(awaited: bool) {
    LAST_TASK_AWAITED.with(|a| a.set(awaited));
}

/// What [`note_task_awaited`] last recorded on this thread.
#[cfg(all(test, not(cf_loom)))]
pub(crate) fn last_task_awaited() -> bool {
    LAST_TASK_AWAITED.with(|a| a.get())
}

/// Like [`spin_until`], but looks only every [`RELAXED_POLL`] pauses.
fn spin_relaxed_until(until: Instant, ready: impl Fn() -> bool) -> bool {
    look_until(until, ready, || {
        for _ in 0..RELAXED_POLL {
            std::hint::spin_loop();
        }
    })
}

/// A worker's record of whether spinning before parking has been paying.
///
/// Starts hopeful. A spin that ends without work switches spinning off; an
/// idle period short enough that a spin would have caught it (the worker
/// parked and was woken within [`WORTH_SPINNING`]) switches it back on.
/// Steady low-rate traffic thus parks at once, and back-to-back round trips
/// keep the worker awake between them.
#[derive(Debug)]
pub(crate) struct IdleSpin {
    worthwhile: bool,
    idle_since: Option<Instant>,
}

impl IdleSpin {
    pub(crate) fn new() -> Self {
        IdleSpin {
            worthwhile: true,
            idle_since: None,
        }
    }

    /// The worker found its queues empty: an idle period starts (if one
    /// has not already).
    pub(crate) fn idle_started(&mut self) {
        self.idle_started_at(Instant::now());
    }

    fn idle_started_at(&mut self, now: Instant) {
        self.idle_since.get_or_insert(now);
    }

    /// The worker found a task after being idle.
    pub(crate) fn idle_ended(&mut self) {
        self.idle_ended_at(Instant::now());
    }

    fn idle_ended_at(&mut self, now: Instant) {
        if let Some(since) = self.idle_since.take() {
            if now.saturating_duration_since(since) <= WORTH_SPINNING {
                self.worthwhile = true;
            }
        }
    }

    /// Spins until `has_work` says yes (true) or the spin budget of this
    /// idle period is spent (false, and spinning is switched off until an
    /// idle period shows it would pay again).
    pub(crate) fn spin(&mut self, has_work: impl Fn() -> bool) -> bool {
        if !self.worthwhile {
            return false;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        let until = since + SPIN_LIMIT;
        let found = if LAST_TASK_AWAITED.with(|a| a.get()) {
            spin_until(until, has_work)
        } else {
            spin_relaxed_until(until, has_work)
        };
        if found {
            return true;
        }
        self.worthwhile = false;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn spin_until_returns_true_as_soon_as_the_condition_holds() {
        let polls = Cell::new(0);
        let far = Instant::now() + Duration::from_secs(60);
        assert!(spin_until(far, || {
            polls.set(polls.get() + 1);
            polls.get() == 3
        }));
        assert_eq!(polls.get(), 3);
    }

    #[test]
    fn spin_until_gives_up_at_its_limit() {
        assert!(!spin_until(Instant::now(), || false));
    }

    #[test]
    fn a_worker_spins_until_work_shows_up() {
        let mut idle = IdleSpin::new();
        idle.idle_started();
        let polls = Cell::new(0);
        assert!(idle.spin(|| {
            polls.set(polls.get() + 1);
            polls.get() > 2
        }));
        assert!(idle.worthwhile);
    }

    #[test]
    fn a_spin_that_found_nothing_switches_spinning_off() {
        let mut idle = IdleSpin::new();
        let long_ago = Instant::now() - Duration::from_secs(1);
        idle.idle_started_at(long_ago);
        // The idle period is older than the budget: no polling at all.
        let polled = Cell::new(false);
        assert!(!idle.spin(|| {
            polled.set(true);
            false
        }));
        assert!(!idle.worthwhile);
        // While off, a worker parks at once without looking.
        polled.set(false);
        assert!(!idle.spin(|| {
            polled.set(true);
            true
        }));
        assert!(!polled.get());
    }

    #[test]
    fn a_long_idle_period_keeps_spinning_off() {
        let mut idle = IdleSpin::new();
        idle.worthwhile = false;
        let t0 = Instant::now();
        idle.idle_started_at(t0);
        idle.idle_ended_at(t0 + Duration::from_millis(1));
        assert!(!idle.worthwhile);
    }

    #[test]
    fn a_short_idle_period_switches_spinning_back_on() {
        let mut idle = IdleSpin::new();
        idle.worthwhile = false;
        let t0 = Instant::now();
        idle.idle_started_at(t0);
        idle.idle_ended_at(t0 + Duration::from_micros(10));
        assert!(idle.worthwhile);
    }

    #[test]
    fn an_idle_period_is_timed_from_its_first_start() {
        let mut idle = IdleSpin::new();
        idle.worthwhile = false;
        let t0 = Instant::now();
        idle.idle_started_at(t0);
        idle.idle_started_at(t0 + Duration::from_millis(5));
        idle.idle_ended_at(t0 + Duration::from_millis(5));
        assert!(!idle.worthwhile);
    }
}
