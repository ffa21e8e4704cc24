//! Port of the `multiprocessing.Process` seed: start/join, name, pid,
//! is_alive, and a daemon child.
//!
//! ```python
//! from multiprocessing import Process
//! import os, time
//!
//! def info(title):
//!     print(title)
//!     print('parent process:', os.getppid())
//!     print('process id:', os.getpid())
//!
//! def f(name):
//!     info('function f')
//!     print('hello', name)
//!
//! if __name__ == '__main__':
//!     info('main line')
//!     p = Process(target=f, args=('bob',), name='greeter')
//!     p.start()
//!     print(p.name, p.pid, p.is_alive())
//!     p.join()
//!     print(p.name, p.is_alive(), p.exitcode)
//!
//!     d = Process(target=time.sleep, args=(60,), daemon=True)
//!     d.start()
//!     print('daemon alive:', d.is_alive())
//!     # leaving the program kills the daemon
//! ```
//!
//! Run with `cargo run --example mp_process`.

use std::time::Duration;

use concurrent_futures::{Error, Process};

fn info(title: &str) {
    println!("{title}");
    // SAFETY: getppid has no preconditions and cannot fail.
    println!("parent process: {}", unsafe { libc::getppid() });
    println!("process id: {}", std::process::id());
}

fn f(name: String) -> String {
    info("function f");
    println!("hello {name}");
    format!("bye {name}")
}

fn sleep_s(seconds: u64) {
    std::thread::sleep(Duration::from_secs(seconds));
}

fn main() -> Result<(), Error> {
    // First line of main: in a child, this runs its function and exits.
    concurrent_futures::init();

    info("main line");
    let mut p = Process::new(f, "bob".to_string()).named("greeter");
    p.start()?;
    println!("{} {:?} {}", p.name(), p.pid(), p.is_alive());
    p.join(None);
    println!(
        "{} alive={} exitcode={:?} returned={:?}",
        p.name(),
        p.is_alive(),
        p.exitcode(),
        p.result()
    );

    let mut d = Process::new(sleep_s, 60).daemon(true);
    d.start()?;
    println!("daemon {} alive: {}", d.name(), d.is_alive());
    // Dropping a daemon's handle (here, at the end of main) kills it; a
    // non-daemon's would wait for it, as Python joins non-daemon children
    // at exit.
    drop(d);
    println!("daemon killed on drop");
    Ok(())
}
