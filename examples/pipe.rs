//! Port of the `multiprocessing.Pipe` seed: five processes send
//! `{name: pid}` through one pipe; the parent prints what arrives.
//!
//! ```python
//! from multiprocessing import Process, Pipe
//! import os
//!
//! def f(conn, name):
//!     conn.send({name: os.getpid()})
//!     conn.close()
//!
//! if __name__ == '__main__':
//!     parent_conn, child_conn = Pipe()
//!     names = ['alice', 'bob', 'carol', 'dave', 'erin']
//!     procs = [Process(target=f, args=(child_conn, n)) for n in names]
//!     for p in procs: p.start()
//!     child_conn.close()
//!     for _ in names: print(parent_conn.recv())
//!     for p in procs: p.join()
//! ```
//!
//! Our `pipe()` is one-way (Python's `Pipe(duplex=False)`) and returns
//! `(sender, receiver)`, in Rust's order. Once every sender is dropped (the
//! parent's, and each child's as it exits), `recv` reports end of stream,
//! Python's `EOFError`, which ends the loop below.
//!
//! Run with `cargo run --example pipe`.

use std::collections::HashMap;

use concurrent_futures::{Error, Process, Sender, pipe};

fn f((conn, name): (Sender<HashMap<String, u32>>, String)) {
    conn.send(HashMap::from([(name, std::process::id())]))
        .expect("the parent reads the pipe");
}

fn main() -> Result<(), Error> {
    concurrent_futures::init();

    let (child_conn, parent_conn) = pipe::<HashMap<String, u32>>()?;
    let names = ["alice", "bob", "carol", "dave", "erin"];
    let mut procs: Vec<_> = names
        .iter()
        .map(|name| Process::new(f, (child_conn.clone(), name.to_string())))
        .collect();
    for p in &mut procs {
        p.start()?;
    }
    drop(child_conn);
    loop {
        match parent_conn.recv(None) {
            Ok(msg) => println!("{msg:?}"),
            // End of stream: every child has sent and exited.
            Err(Error::EndOfStream) => break,
            Err(e) => return Err(e),
        }
    }
    for p in &procs {
        p.join(None);
        assert_eq!(p.exitcode(), Some(0));
    }
    Ok(())
}
