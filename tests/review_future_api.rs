//! Review of the Future API (placeholder).
use concurrent_futures::*;
concurrent_futures::process_pool_test_worker!();
mod common;

#[test]
fn smoke() {
    let (p, f) = Promise::<u32>::new();
    p.set_result(1).unwrap();
    assert_eq!(f.result(None), Ok(&1));
}
