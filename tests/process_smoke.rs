use concurrent_futures::*;
use std::time::Duration;

process_pool_test_worker!();

fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}
fn boom(n: u32) -> u32 {
    panic!("boom {n}")
}
fn die(code: i32) -> u32 {
    std::process::exit(code)
}
fn hello(x: u32) -> u32 {
    println!("hello from worker pid {}", std::process::id());
    x
}

#[test]
fn process_smoke() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .test_harness()
        .build()
        .unwrap();
    let t = std::time::Instant::now();
    let f = pool.submit(fib, 20);
    assert_eq!(f.result(Some(Duration::from_secs(20))), Ok(&6765));
    eprintln!("first result after {:?}", t.elapsed());
    let v: Vec<u64> = pool.map(fib, 0..20).map(Result::unwrap).collect();
    assert_eq!(v[19], 4181);
    let e = pool.submit(boom, 3).into_result().unwrap_err();
    eprintln!("{e}");
    let e = pool.submit(die, 3).into_result().unwrap_err();
    eprintln!("{e}");
    assert_eq!(pool.submit(hello, 5).into_result(), Ok(5));
    let t = std::time::Instant::now();
    let futs: Vec<_> = (0..20000u64).map(|i| pool.submit(fib, i % 5)).collect();
    for f in futs {
        f.into_result().unwrap();
    }
    eprintln!("20k tiny: {:?}", t.elapsed());
    pool.shutdown(true, false);
}

fn maybe_boom(n: u32) -> u32 {
    if n == 7 {
        panic!("seven");
    }
    n * 2
}

#[test]
fn chunked_map_keeps_a_result_per_item_on_processes_and_threads() {
    let procs = ProcessPoolExecutor::builder()
        .max_workers(2)
        .test_harness()
        .build()
        .unwrap();
    let threads = ThreadPoolExecutor::new(2).unwrap();
    let exs: [&dyn Executor; 2] = [&procs, &threads];
    for ex in exs {
        let out: Vec<Result<u32, Error>> = ex
            .map_with(maybe_boom, 0..20u32, MapOptions::new().chunksize(3))
            .collect();
        assert_eq!(out.len(), 20);
        for (i, r) in out.iter().enumerate() {
            if i == 7 {
                assert!(matches!(r, Err(Error::Panicked { message, .. }) if message == "seven"));
            } else {
                assert_eq!(r, &Ok(i as u32 * 2));
            }
        }
    }
}
