//! Where a worker thread's stack ends, for the nesting budget of a waiting
//! worker (see `worker::help_while_waiting`).
//!
//! The size a thread asked for is not what its stack holds: glibc carves a
//! thread's static TLS (large `const` thread-locals of the program) out of
//! the same allocation, above the stack. Counting from the size alone let
//! nested tasks run into the guard page, which aborts the process (found by
//! review: 512 KiB of thread-locals). The low end the thread library
//! reports is where the stack really ends.

/// The lowest address of the calling thread's stack, where the thread
/// library reports one (Linux); `None` elsewhere or if it cannot tell.
pub(crate) fn low_end() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        // SAFETY: `attr` is valid for writes; pthread_getattr_np
        // initializes it on success, and only then is it read and
        // destroyed.
        unsafe {
            if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
                return None;
            }
            let mut addr = std::ptr::null_mut();
            let mut size = 0;
            let got = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size);
            libc::pthread_attr_destroy(attr.as_mut_ptr());
            (got == 0 && !addr.is_null()).then_some(addr as usize)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stack_ends_below_where_this_thread_is() {
        let here = 0u8;
        let here = std::hint::black_box(&here) as *const u8 as usize;
        if let Some(low) = super::low_end() {
            assert!(low < here, "{low:#x} vs {here:#x}");
            // A test thread's stack is 2 MiB, or RUST_MIN_STACK: the low
            // end is within reach, not some unrelated address.
            assert!(here - low < 1 << 30, "{low:#x} vs {here:#x}");
        }
    }
}
