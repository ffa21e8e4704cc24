//! The supervisor thread of a process pool: starts the workers the pool
//! wants, keeps the deadlines (task limits, startup timeouts, idle
//! retirement), and exits once the pool is shut down and every worker is
//! reaped.

use std::process::Command;
use std::time::{Duration, Instant};

use super::freeze::Freeze;
use super::pool::{Config, Shared};
use super::state::{Failures, Starting, State, passed};
use super::{link, os, own_thread, worker};
use crate::Error;
use crate::sync::{Arc, Mutex, MutexGuard, lock};

/// The supervisor thread: starts workers when asked, enforces task and
/// startup deadlines, and exits once the pool is shut down and every worker
/// is reaped. Workers are started from this thread because, on Linux, the
/// parent-death signal follows the thread that started a child.
pub(super) fn supervise(shared: Arc<Shared>) {
    own_thread::enter(&shared, own_thread::Role::Supervisor);
    loop {
        let mut st = lock(&shared.state);
        let id = loop {
            if st.want > 0 && !st.should_replace() {
                st.want = 0; // broken, or shut down with nothing left to run
                // A shutdown waiting on a pool thread may wait for just this.
                shared.cond.notify_all();
            }
            if st.want > 0 {
                st.want -= 1;
                st.live += 1;
                st.next_worker += 1;
                break st.next_worker;
            }
            if st.live == 0 && !st.should_replace() {
                drop(st);
                shared.cond.notify_all();
                return;
            }
            let next = match keep_deadlines(&shared, st) {
                Kept::Killed(g) => {
                    st = g;
                    continue;
                }
                Kept::Next(g, next) => {
                    st = g;
                    next
                }
            };
            st = match crate::sync::wait_deadline(&shared.cond, st, next) {
                Ok(g) | Err(g) => g,
            };
        };
        drop(st);
        start_worker(&shared, id);
    }
}

/// What [`keep_deadlines`] did.
pub(super) enum Kept<'a> {
    /// It killed workers, with the lock released: the state may have
    /// changed meanwhile, look at it again.
    Killed(MutexGuard<'a, State>),
    /// Nothing was due; when the next deadline is, if any (at least 1 ms
    /// away: no busy loop).
    Next(MutexGuard<'a, State>, Option<Instant>),
}

/// The supervisor's watch over deadlines, which no other thread keeps:
/// workers whose task ran past its limit or whose start took too long are
/// killed, idle workers past `idle_timeout` retired. Also called while the
/// supervisor waits in a `shutdown(wait)` that a done-callback it ran
/// made: the tasks it waits for may need their limits kept to end.
pub(super) fn keep_deadlines<'a>(shared: &'a Shared, mut st: MutexGuard<'a, State>) -> Kept<'a> {
    let now = Instant::now();
    let freezes = enforce_deadlines(&mut st, &shared.config, now);
    if !freezes.is_empty() {
        drop(st);
        super::freeze::settle(shared, freezes);
        return Kept::Killed(lock(&shared.state));
    }
    st.retire_idle(&shared.config.limits, now);
    let next = st
        .next_deadline(shared.config.startup_timeout, &shared.config.limits)
        .map(|d| d.max(now + Duration::from_millis(1)));
    Kept::Next(st, next)
}

/// Kills workers whose start takes too long, and freezes those whose
/// running task passed its limit: they are returned, to be settled (and
/// most likely killed with their process trees) once the lock is released.
/// Their readers see the end of the pipe and clean up.
fn enforce_deadlines(st: &mut State, config: &Config, now: Instant) -> Vec<Freeze> {
    let mut freezes = Vec::new();
    for l in &mut st.links {
        // A retry due freezes the worker, and so makes its stop pending.
        freezes.extend(l.take_due_retry(now));
        let Some(limit) = l.in_flight.front().and_then(|p| p.timeout) else {
            continue;
        };
        if !l.stop_pending() && passed(l.head_since, limit, now) {
            freezes.extend(l.freeze_head(Error::TaskTimeout { limit }));
        }
    }
    for s in st.starting.iter().filter(|s| !s.initializing) {
        if passed(s.since, config.startup_timeout, now) {
            let _ = lock(&s.child).kill();
        }
    }
    // A killed start stays in `starting` until its reader reaps it; move its
    // clock so it is not killed again every millisecond.
    for s in st.starting.iter_mut().filter(|s| !s.initializing) {
        if passed(s.since, config.startup_timeout, now) {
            s.since = now;
        }
    }
    freezes
}

fn start_worker(shared: &Arc<Shared>, id: u64) {
    let c = &shared.config;
    let mut cmd = Command::new(&c.program);
    cmd.args(&c.args)
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .env(
            worker::WORKER_ENV,
            format!(
                "v1:{}{}",
                std::process::id(),
                if c.hold_stdout { ":fd" } else { "" }
            ),
        );
    match os::spawn_worker(cmd, c.hold_stdout) {
        Ok(spawned) => {
            let child = Arc::new(Mutex::new(spawned.child));
            let mut st = lock(&shared.state);
            st.starting.push(Starting {
                id,
                since: Instant::now(),
                child: child.clone(),
                initializing: false,
            });
            // A hard stop (`kill_workers` and the like) that came while this
            // worker was being spawned found it in neither `links` nor
            // `starting`, and so did not signal it: do it here. A stop that
            // comes later finds it in `starting`.
            let late_stop = st.hard_stop;
            drop(st);
            if let Some(why) = late_stop {
                let _ = lock(&child).signal(why.late_signal());
            }
            shared.cond.notify_all();
            let s2 = shared.clone();
            let (to, from) = (spawned.to_worker, spawned.from_worker);
            let child2 = child.clone();
            let reader = std::thread::Builder::new()
                .name(format!("cf-process-reader-{id}"))
                .spawn(move || link::run(s2, id, child2, to, from));
            if let Err(e) = reader {
                // Without its reader the worker can never be served or
                // reaped: stop and reap it now, as a failed start.
                let error = Error::Io(format!("could not start a reader thread: {e}"));
                link::start_failed(shared, id, &child, error);
            }
        }
        Err(e) => {
            let mut st = lock(&shared.state);
            st.live -= 1;
            st.finishing += 1;
            let mut failures = Failures::new();
            // Counted after shutdown too: queued work still wants workers
            // then (S4), and uncounted failures would respawn forever.
            if st.hard_stop.is_none() {
                st.start_failures += 1;
            }
            if st.start_failures >= 3 && st.broken.is_none() {
                st.broken = Some(format!("could not start worker processes: {e}"));
                let refusal = st.refusal().expect("broken");
                st.fail_queue(&refusal, &mut failures);
            }
            st.dispatch(&shared.config.limits, &mut failures);
            drop(st);
            shared.finish_worker(failures);
        }
    }
}
