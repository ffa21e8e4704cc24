//! T10 across pools: a thread-pool worker whose task waits on a
//! process-pool task does not run the waiting task's queued subtasks on top
//! of it. Nothing the thread pool runs completes a process-pool task, and a
//! subtask may be the consumer the waiting task feeds once the value
//! arrives: run on its producer's stack, it would wait for it forever.
//! However the task reached the process pool: `submit`,
//! `submit_with_timeout`, or a user's executor that forwards to it.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use concurrent_futures::{
    Error, Executor, ExecutorExt, Future, ProcessPoolExecutor, Task, ThreadPoolExecutor,
};

concurrent_futures::process_pool_test_worker!();

const GUARD: Duration = Duration::from_secs(30);

fn slow9(x: u8) -> u8 {
    std::thread::sleep(Duration::from_millis(300));
    x
}

/// A user's executor that forwards every task to a process pool, and
/// records no id of its own.
#[derive(Debug)]
struct Forward(ProcessPoolExecutor);

impl Executor for Forward {
    fn execute(&self, task: Task) -> Result<(), (Task, Error)> {
        self.0.execute(task)
    }
    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.0.shutdown(wait, cancel_futures)
    }
    fn max_workers(&self) -> usize {
        self.0.max_workers()
    }
}

#[derive(Clone, Copy)]
enum Via {
    Submit,
    SubmitWithTimeout,
    ForwardingExecutor,
}

/// On a one-worker thread pool, task T spawns consumer S (which waits up
/// to 2 s for a value), then waits on a process-pool task and feeds S its
/// result. Returns what S received.
fn consumer_fed_by_a_producer_waiting_on_a_process_task(via: Via) -> Option<u8> {
    let processes = Arc::new(Forward(
        ProcessPoolExecutor::builder()
            .max_workers(1)
            .test_harness()
            .build()
            .expect("a test-harness pool builds"),
    ));
    // The worker is serving before T waits.
    assert_eq!(processes.0.submit(slow9, 1).result(Some(GUARD)), Ok(&1));
    let threads = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let spawner = threads.clone();
    let (s_tx, s_rx) = mpsc::channel();
    let t = threads.spawn(move || {
        let (feed, fed) = mpsc::channel::<u8>();
        let s = spawner.spawn(move || fed.recv_timeout(Duration::from_secs(2)).ok());
        s_tx.send(s).unwrap();
        let f = match via {
            Via::Submit => processes.0.submit(slow9, 9),
            Via::SubmitWithTimeout => {
                processes
                    .0
                    .submit_with_timeout(slow9, 9, Duration::from_secs(10))
            }
            Via::ForwardingExecutor => processes.submit(slow9, 9),
        };
        let v = *f.result(None).unwrap();
        let _ = feed.send(v);
    });
    let s: Future<Option<u8>> = s_rx.recv_timeout(GUARD).unwrap();
    t.result(Some(GUARD)).expect("the producer succeeds");
    *s.result(Some(GUARD)).unwrap()
}

#[test]
fn t10_a_consumer_is_not_run_on_top_of_its_producer_waiting_on_a_process_submit() {
    assert_eq!(
        consumer_fed_by_a_producer_waiting_on_a_process_task(Via::Submit),
        Some(9),
        "the consumer starved"
    );
}

#[test]
fn t10_a_consumer_is_not_run_on_top_of_its_producer_waiting_on_submit_with_timeout() {
    assert_eq!(
        consumer_fed_by_a_producer_waiting_on_a_process_task(Via::SubmitWithTimeout),
        Some(9),
        "the consumer starved"
    );
}

#[test]
fn t10_a_consumer_is_not_run_on_top_of_its_producer_waiting_on_a_process_task_sent_through_a_users_executor()
 {
    assert_eq!(
        consumer_fed_by_a_producer_waiting_on_a_process_task(Via::ForwardingExecutor),
        Some(9),
        "the consumer starved"
    );
}
