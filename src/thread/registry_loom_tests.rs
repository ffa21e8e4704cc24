//! Shutdown racing a submit: an accepted task is never stranded, that
//! is, left queued with no worker alive to run it and nobody to fail it.
//!
//! The deques synchronize with std atomics, which loom cannot see; the
//! models check the handshake around them (the shut-down flag, the
//! fences, the `live` lock and the sleep state) under every
//! interleaving.

use super::Registry;
use crate::executor::ClosureTask;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use std::sync::Arc;

#[test]
fn loom_shutdown_racing_submit_never_strands_an_accepted_task() {
    loom::model(|| {
        let (registry, _locals) = Registry::new(1);
        let retired = Arc::new(AtomicBool::new(false));
        let (r1, r2, r3) = (registry.clone(), registry.clone(), registry.clone());
        // Created before any thread starts (see the module docs).
        let (job, fut) = ClosureTask::create(|| 1u8);
        let job = job.into_thin();
        let submitter = thread::spawn(move || r1.inject(job, None).is_ok());
        let stopper = thread::spawn(move || r2.shutdown(false));
        let r4 = retired.clone();
        let worker = thread::spawn(move || {
            if r3.try_retire() {
                r4.store(true, Ordering::SeqCst);
            }
        });
        let accepted = submitter.join().unwrap();
        stopper.join().unwrap();
        worker.join().unwrap();
        if retired.load(Ordering::SeqCst) {
            assert!(
                !registry.has_work(),
                "the last worker retired with a task queued"
            );
            if accepted {
                assert!(
                    fut.done(),
                    "an accepted task outlived every worker unfinished"
                );
            }
        }
    });
}

/// S5: `shutdown(cancel_futures = true)` racing a submit. Once both
/// calls have returned, the task was refused, or it is cancelled, not
/// left queued to run: the submit that pushed after the shutdown's
/// sweep sweeps again, and the pool's fate is `Cancel` for anything a
/// worker still takes.
#[test]
fn loom_shutdown_cancelling_queued_work_racing_submit_never_leaves_the_task_to_run() {
    loom::model(|| {
        let (registry, _locals) = Registry::new(1);
        let (r1, r2) = (registry.clone(), registry.clone());
        let (job, fut) = ClosureTask::create(|| 1u8);
        let job = job.into_thin();
        // As `ThreadPoolExecutor::execute`: a refused task is failed.
        let submitter = thread::spawn(move || match r1.inject(job, None) {
            Ok(()) => true,
            Err((job, error)) => {
                job.fail(error);
                false
            }
        });
        let stopper = thread::spawn(move || r2.shutdown(true));
        let accepted = submitter.join().unwrap();
        stopper.join().unwrap();
        assert_eq!(registry.fate(), super::Fate::Cancel);
        if accepted {
            assert!(fut.cancelled(), "an accepted task is left to run");
        } else {
            assert!(fut.done() && !fut.cancelled(), "a refused task fails");
        }
        assert!(!registry.has_work(), "a cancelled task stays queued");
    });
}

/// S3 with S5: a `shutdown(wait = true)` racing another thread's
/// `shutdown(cancel_futures = true)` returns only once the queued task
/// is ended, whoever took it: the worker (which cannot retire while it
/// is queued) or the sweep (which counts itself in before it looks).
#[test]
fn loom_shutdown_wait_racing_a_cancelling_sweep_returns_after_the_task_ended() {
    loom::model(|| {
        let (registry, _locals) = Registry::new(1);
        let (job, fut) = ClosureTask::create(|| 1u8);
        assert!(registry.inject(job.into_thin(), None).is_ok());
        let (r1, r2) = (registry.clone(), registry.clone());
        let stopper = thread::spawn(move || r1.shutdown(true));
        let worker = thread::spawn(move || {
            loop {
                if let Some(job) = r2.steal_any() {
                    job.run();
                } else if r2.try_retire() {
                    return;
                } else {
                    thread::yield_now();
                }
            }
        });
        assert!(registry.wait_for_exit(false, None));
        assert!(fut.done(), "shutdown(wait) returned before the task ended");
        stopper.join().unwrap();
        worker.join().unwrap();
    });
}

/// An idle worker that sees no work parks; a submit racing shutdown
/// must neither leave it parked forever (loom reports the deadlock) nor
/// let it retire before the task is ended.
#[test]
fn loom_idle_worker_parked_during_a_racing_submit_ends_the_task_and_retires() {
    loom::model(|| {
        let (registry, _locals) = Registry::new(1);
        let (r1, r2, r3) = (registry.clone(), registry.clone(), registry.clone());
        let (job, fut) = ClosureTask::create(|| 1u8);
        let job = job.into_thin();
        let worker = thread::spawn(move || {
            let sleep = &r3.sleep;
            loop {
                if let Some(job) = r3.steal_any() {
                    job.run();
                    continue;
                }
                if r3.try_retire() {
                    return;
                }
                sleep.start_searching();
                sleep.sleep(0, || r3.has_work() || r3.is_shutdown());
                sleep.stop_searching();
            }
        });
        let submitter = thread::spawn(move || r1.inject(job, None).is_ok());
        r2.shutdown(false);
        let accepted = submitter.join().unwrap();
        worker.join().unwrap();
        assert!(!registry.has_work());
        if accepted {
            assert!(
                fut.done(),
                "an accepted task outlived the worker unfinished"
            );
        }
    });
}
