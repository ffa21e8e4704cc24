//! `multiprocessing.Pool`, ported one for one: `apply`, `apply_async` with
//! `get`, `map`, `imap_unordered`, a callback that writes each result to a
//! file in the parent, and `close` / `join`.
//!
//! ```text
//! cargo run --example mp_pool
//! ```
//!
//! The Python original:
//!
//! ```python
//! import os, tempfile, time
//! from multiprocessing import Pool, TimeoutError
//!
//! def f(x):
//!     return x * x
//!
//! if __name__ == "__main__":
//!     path = os.path.join(tempfile.gettempdir(), "mp_pool_results.txt")
//!     out = open(path, "w")
//!
//!     def log_result(result):        # runs in the parent
//!         out.write(f"{result}\n")
//!
//!     pool = Pool(processes=4)
//!     print(pool.apply(f, (10,)))                      # 100
//!     print(pool.map(f, range(10)))                    # [0, 1, 4, ..., 81]
//!     print(sorted(pool.imap_unordered(f, range(10))))
//!     res = pool.apply_async(f, (20,))
//!     print(res.get(timeout=1))                        # 400
//!     res = pool.apply_async(os.getpid, ())
//!     print(res.get(timeout=1))                        # a worker's pid
//!     res = pool.apply_async(time.sleep, (3,))
//!     try:
//!         print(res.get(timeout=1))
//!     except TimeoutError:
//!         print("We lacked patience and got a multiprocessing.TimeoutError")
//!     for i in range(10):
//!         pool.apply_async(f, (i,), callback=log_result)
//!     pool.close()
//!     pool.join()
//!     out.close()
//!     print(path)
//!     print(open(path).read())
//! ```
//!
//! The workers are this program started again, so `main` calls
//! [`concurrent_futures::init()`] first.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concurrent_futures::{Callbacks, Error, Pool};

fn f(x: u64) -> u64 {
    x * x
}

fn getpid(_: ()) -> u32 {
    std::process::id()
}

fn sleep_secs(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

fn main() -> Result<(), Error> {
    concurrent_futures::init();

    let path = std::env::temp_dir().join(format!("mp_pool_results_{}.txt", std::process::id()));
    let out = Arc::new(Mutex::new(
        File::create(&path).map_err(|e| Error::Io(e.to_string()))?,
    ));

    let pool = Pool::new(4)?;
    println!("{}", pool.apply(f, 10)?);
    println!("{:?}", pool.map(f, 0..10)?);
    let mut unordered: Vec<u64> = pool.imap_unordered(f, 0..10)?.collect::<Result<_, _>>()?;
    unordered.sort_unstable();
    println!("{unordered:?}");

    let res = pool.apply_async(f, 20)?;
    println!("{}", res.get(Some(Duration::from_secs(1)))?);
    let res = pool.apply_async(getpid, ())?;
    println!(
        "worker pid {} (the parent is {})",
        res.get(Some(Duration::from_secs(1)))?,
        std::process::id()
    );
    let res = pool.apply_async(sleep_secs, 3)?;
    match res.get(Some(Duration::from_secs(1))) {
        Err(Error::Timeout { .. }) => {
            println!("We lacked patience and got a timeout (multiprocessing.TimeoutError)")
        }
        other => println!("{other:?}"),
    }

    // The callback runs in this (parent) process, on the pool's
    // result-handling thread: it can write to our file.
    for i in 0..10 {
        let out = out.clone();
        let log_result = Callbacks::new().callback(move |result: &u64| {
            let _ = writeln!(out.lock().unwrap(), "{result}");
        });
        pool.apply_async_with(f, i, log_result)?;
    }

    pool.close();
    // Waits for every task, the 3 s sleep included, and every callback.
    pool.join()?;
    drop(out);

    println!("{}", path.display());
    let contents = std::fs::read_to_string(&path).map_err(|e| Error::Io(e.to_string()))?;
    print!("{contents}");
    let _ = std::fs::remove_file(&path);
    Ok(())
}
