use concurrent_futures::*;
use std::time::Duration;

fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

fn pfib(n: u64) -> u64 {
    if n < 15 {
        return fib(n);
    }
    let pool = POOL.get().unwrap();
    let a = pool.submit(pfib, n - 1);
    let b = pfib(n - 2);
    a.into_result().unwrap() + b
}

static POOL: std::sync::OnceLock<ThreadPoolExecutor> = std::sync::OnceLock::new();

#[test]
fn smoke() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let f = pool.submit(fib, 20);
    assert_eq!(f.result(Some(Duration::from_secs(5))), Ok(&6765));
    let v: Vec<u64> = pool.map(fib, 0..10).map(Result::unwrap).collect();
    assert_eq!(v, [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]);
    let futs: Vec<_> = (0..100).map(|i| pool.submit(fib, i % 20)).collect();
    let n = as_completed(&futs, None).count();
    assert_eq!(n, 100);
    let s: u64 = (0..100000u64)
        .map(|i| pool.spawn(move || i))
        .map(|f| f.into_result().unwrap())
        .sum();
    assert_eq!(s, 100000 * 99999 / 2);
    pool.shutdown(true, false);
}

#[test]
fn forkjoin() {
    POOL.get_or_init(|| ThreadPoolExecutor::new(2).unwrap());
    let f = POOL.get().unwrap().submit(pfib, 25);
    assert_eq!(f.into_result(), Ok(fib(25)));
}
