//! [`StarFn`]: calling a function of several arguments with their tuple,
//! for `starmap`.

/// A function called with its arguments packed in a tuple: implemented for
/// every `Fn(X1, ..., Xn) -> R` with `n` from 0 to 6, where `Args` is
/// `(X1, ..., Xn)`. This is what lets
/// [`Pool::starmap`](crate::Pool::starmap) take `fn add(a: i32, b: i32)`
/// and inputs `(1, 2)`, as Python's `starmap` unpacks each item (MP10).
///
/// ```
/// use concurrent_futures::StarFn;
/// fn add(a: i32, b: i32) -> i32 { a + b }
/// assert_eq!(add.call((2, 3)), 5);
/// ```
pub trait StarFn<Args, R> {
    /// Calls the function with the tuple's elements as its arguments.
    fn call(&self, args: Args) -> R;
}

macro_rules! star_fn {
    ($($x:ident),*) => {
        impl<F, R, $($x),*> StarFn<($($x,)*), R> for F
        where
            F: Fn($($x),*) -> R,
        {
            #[allow(non_snake_case)]
            fn call(&self, ($($x,)*): ($($x,)*)) -> R {
                self($($x),*)
            }
        }
    };
}

star_fn!();
star_fn!(X1);
star_fn!(X1, X2);
star_fn!(X1, X2, X3);
star_fn!(X1, X2, X3, X4);
star_fn!(X1, X2, X3, X4, X5);
star_fn!(X1, X2, X3, X4, X5, X6);
