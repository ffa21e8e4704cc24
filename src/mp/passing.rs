//! Passing channel ends to a [`Process`](crate::Process) child.
//!
//! A channel end is a descriptor, which a pipe cannot carry; serialized as
//! part of a `Process` argument it becomes an index, and the descriptor
//! travels beside the message (`Process::new` maps the duplicates collected
//! here onto the child's descriptors from `PASS_FD_BASE` up). Serialized
//! anywhere else (a pool task's argument or result, a value sent on a
//! channel) it is an encode error: nothing would carry the descriptor.

use std::cell::RefCell;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, OnceLock};

use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::{Queue, Receiver, Sender};
use crate::Error;
use crate::mp::lock;
use crate::process::{codec, os};

#[derive(Default)]
struct Passing {
    fds: Vec<OwnedFd>,
    error: Option<String>,
}

thread_local! {
    /// Set while `Process::new` serializes an argument: the channel ends
    /// met so far.
    static PASSING: RefCell<Option<Passing>> = const { RefCell::new(None) };
}

/// In the child: the passed descriptors, until an end claims its own.
static RECEIVED: Mutex<Vec<Option<OwnedFd>>> = Mutex::new(Vec::new());

/// Serializes a `Process` argument, collecting duplicates of the channel
/// ends in it; the index an end serializes as is its place in the list.
pub(crate) fn encode_passing<A: Serialize>(arg: &A) -> (Result<Vec<u8>, Error>, Vec<OwnedFd>) {
    /// Puts the outer state back when dropped, also when the argument's
    /// `Serialize` panics: the thread must not go on treating every
    /// channel end it serializes as passed (and keep their duplicates).
    struct Restore(Option<Passing>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            let _ = PASSING.try_with(|p| *p.borrow_mut() = outer);
        }
    }
    // In a thread-local destructor of the user's, once this one is gone,
    // `with` would panic, and abort the process there: the argument is
    // encoded without passing (a channel end in it fails to encode).
    let Ok(outer) = PASSING.try_with(|p| p.borrow_mut().replace(Passing::default())) else {
        return (codec::encode_caught(arg), Vec::new());
    };
    let restore = Restore(outer);
    let encoded = codec::encode_caught(arg);
    let passing = PASSING
        .try_with(|p| p.borrow_mut().take())
        .ok()
        .flatten()
        .unwrap_or_default();
    drop(restore);
    let encoded = match (encoded, passing.error) {
        // postcard drops a Serialize impl's own message; put ours back.
        (Err(Error::Encode { type_name, .. }), Some(message)) => {
            Err(Error::Encode { type_name, message })
        }
        (other, _) => other,
    };
    (encoded, passing.fds)
}

/// Child side: claims the `n` descriptors the parent passed.
pub(crate) fn receive_passed(n: u32) -> Result<(), String> {
    if n == 0 {
        return Ok(());
    }
    let fds = os::take_passed_fds(n as usize).map_err(|e| e.to_string())?;
    *lock(&RECEIVED) = fds.into_iter().map(Some).collect();
    Ok(())
}

/// Records a duplicate of `fd` for the child; its index.
fn pass<S: Serializer>(fd: std::os::fd::BorrowedFd<'_>, s: S) -> Result<S::Ok, S::Error> {
    const NOT_PASSING: &str = "a channel end can only be serialized as part of a Process \
        argument (Process::new), not in a result or a pool task";
    // No `Process::new` is under way on a thread whose thread-locals are
    // gone (a user's thread-local destructor serializing one).
    let index = PASSING.try_with(|p| {
        let mut p = p.borrow_mut();
        let Some(passing) = p.as_mut() else {
            return Err(NOT_PASSING.to_owned());
        };
        match fd.try_clone_to_owned() {
            Ok(dup) => {
                passing.fds.push(dup);
                Ok(passing.fds.len() as u32 - 1)
            }
            Err(e) => {
                let message = format!("could not duplicate a channel end: {e}");
                passing.error = Some(message.clone());
                Err(message)
            }
        }
    });
    match index.unwrap_or_else(|_| Err(NOT_PASSING.to_owned())) {
        Ok(i) => s.serialize_u32(i),
        Err(message) => Err(serde::ser::Error::custom(message)),
    }
}

/// Claims passed descriptor `index` (each at most once).
fn claim<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedFd, D::Error> {
    let index = u32::deserialize(d)? as usize;
    lock(&RECEIVED)
        .get_mut(index)
        .and_then(Option::take)
        .ok_or_else(|| {
            serde::de::Error::custom(
                "a channel end that was not passed to this process (or was already claimed)",
            )
        })
}

impl<T> Serialize for Sender<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        pass(self.inner.pipe.as_fd(), s)
    }
}

impl<'de, T> Deserialize<'de> for Sender<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        claim(d).map(Sender::from_fd)
    }
}

impl<T> Serialize for Receiver<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        pass(self.pipe.as_fd(), s)
    }
}

impl<'de, T> Deserialize<'de> for Receiver<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        claim(d).map(Receiver::from_fd)
    }
}

impl<T> Serialize for Queue<T> {
    /// A queue travels as its sender: the child is a producer.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.tx.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Queue {
            tx: Sender::deserialize(d)?,
            rx: None,
            feeder: OnceLock::new(),
        })
    }
}
