//! What a pool runs: the [`Task`] trait over functions of 0 to 6
//! arguments, and the one trampoline through which a worker calls one.
//!
//! A task crosses into a worker as the address of its trampoline,
//! `run::<M, T, K>`, monomorphised for the task's type `T`, plus its
//! encoded arguments. The function itself is not sent at all: `T` is a
//! zero-sized type (a function item or a closure that captures nothing),
//! so its one value is rebuilt in the worker from the type alone.

use std::fmt::Display;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The form in which a worker runs a task: the trampoline's address is
/// what the parent sends (see [`Trampoline::address`]).
pub(super) type Trampoline = fn(&[u8]) -> Result<Vec<u8>, String>;

mod sealed {
    /// Only the impls below: the pool rebuilds a task's value from its
    /// type, which is sound for exactly those (see `conjure`).
    pub trait Sealed<M> {}
}

/// A function that a [`Pool`](super::Pool) can run in its workers: a
/// function item (`square`, `Type::method`, `f::<u8>`) or a closure that
/// captures nothing, of 0 to 6 arguments, each `Serialize +
/// DeserializeOwned`.
///
/// `M` is a marker that the compiler infers (the function's signature);
/// it only tells the impls for different arities apart. [`Args`](Task::Args)
/// is what [`Pool::apply`](super::Pool::apply) takes: `()` for no
/// argument, the value itself for one, a tuple for several.
///
/// Function pointers (`fn(u64) -> u64` values) and closures that capture
/// anything are refused when the program is compiled: a worker cannot
/// rebuild them from their type. A captured value travels as an argument
/// instead.
///
/// One case the compiler cannot refuse: a closure that captures only
/// zero-sized `Copy` values is zero-sized too, and the worker rebuilds
/// those values from their types. A zero-sized value whose existence is a
/// promise about this process (a token some library hands out once it has
/// initialised something) promises nothing in a worker, whose memory is
/// this process's as it was when the pool was created: pass such tokens
/// to no pool task.
///
/// ```compile_fail
/// # fn main() -> multiproc::Result<()> {
/// let pool = multiproc::Pool::with_processes(1)?;
/// let k = 3u64;
/// // error: a pool task must be a function item or a closure that captures nothing
/// pool.apply(move |x: u64| x + k, 1)?;
/// # Ok(()) }
/// ```
///
/// ```compile_fail
/// # fn main() -> multiproc::Result<()> {
/// fn square(x: u64) -> u64 { x * x }
/// let pool = multiproc::Pool::with_processes(1)?;
/// let f: fn(u64) -> u64 = square; // an address, not a function item
/// pool.apply(f, 2)?;
/// # Ok(()) }
/// ```
///
/// The arguments must match the function's, and [`map`](super::Pool::map)
/// takes functions of one argument (use [`starmap`](super::Pool::starmap)
/// for more):
///
/// ```compile_fail
/// # fn main() -> multiproc::Result<()> {
/// fn add(a: u64, b: u64) -> u64 { a + b }
/// let pool = multiproc::Pool::with_processes(1)?;
/// pool.map(add, [(1, 2)])?; // error: expected to take 1 argument
/// # Ok(()) }
/// ```
///
/// ```compile_fail
/// # fn main() -> multiproc::Result<()> {
/// fn add(a: u64, b: u64) -> u64 { a + b }
/// let pool = multiproc::Pool::with_processes(1)?;
/// pool.apply(add, 1)?; // error: expected `(u64, u64)`
/// # Ok(()) }
/// ```
///
/// ```compile_fail
/// # fn main() -> multiproc::Result<()> {
/// let pool = multiproc::Pool::with_processes(1)?;
/// let s = String::from("x");
/// pool.apply(move || s.len(), ())?; // error: `String: Copy` is not satisfied
/// # Ok(()) }
/// ```
pub trait Task<M>: sealed::Sealed<M> + Copy + Send + Sync + 'static {
    /// The arguments of one call: `()`, `A`, or `(A, B, …)`.
    type Args: Serialize + DeserializeOwned;
    /// What the function returns.
    type Output;
    /// Calls the function.
    #[doc(hidden)]
    fn call_with(self, args: Self::Args) -> Self::Output;
}

impl<F, R> sealed::Sealed<fn() -> R> for F where F: Fn() -> R {}
impl<F, R> Task<fn() -> R> for F
where
    F: Fn() -> R + Copy + Send + Sync + 'static,
{
    type Args = ();
    type Output = R;
    fn call_with(self, (): ()) -> R {
        self()
    }
}

impl<F, A, R> sealed::Sealed<fn(A) -> R> for F where F: Fn(A) -> R {}
impl<F, A, R> Task<fn(A) -> R> for F
where
    F: Fn(A) -> R + Copy + Send + Sync + 'static,
    A: Serialize + DeserializeOwned,
{
    type Args = A;
    type Output = R;
    fn call_with(self, a: A) -> R {
        self(a)
    }
}

macro_rules! task_of_arity {
    ($($arg:ident),+) => {
        impl<F, R, $($arg),+> sealed::Sealed<fn($($arg),+) -> R> for F where F: Fn($($arg),+) -> R {}
        impl<F, R, $($arg),+> Task<fn($($arg),+) -> R> for F
        where
            F: Fn($($arg),+) -> R + Copy + Send + Sync + 'static,
            $($arg: Serialize + DeserializeOwned,)+
        {
            type Args = ($($arg,)+);
            type Output = R;
            #[allow(non_snake_case)]
            fn call_with(self, ($($arg,)+): Self::Args) -> R {
                self($($arg),+)
            }
        }
    };
}

task_of_arity!(A, B);
task_of_arity!(A, B, C);
task_of_arity!(A, B, C, D);
task_of_arity!(A, B, C, D, E);
task_of_arity!(A, B, C, D, E, G);

/// How a call's return value becomes the task's result.
pub(super) trait Finish<O> {
    /// What the parent receives.
    type Value: Serialize;
    /// The value, or the text of the task's failure.
    fn finish(out: O) -> Result<Self::Value, String>;
}

/// The return value is the result ([`Pool::apply`](super::Pool::apply)).
pub(super) struct Plain;

impl<O: Serialize> Finish<O> for Plain {
    type Value = O;
    fn finish(out: O) -> Result<O, String> {
        Ok(out)
    }
}

/// An `Err` fails the task with its text ([`Pool::try_apply`](super::Pool::try_apply)).
pub(super) struct Fallible;

impl<R: Serialize, E: Display> Finish<Result<R, E>> for Fallible {
    type Value = R;
    fn finish(out: Result<R, E>) -> Result<R, String> {
        out.map_err(|e| e.to_string())
    }
}

/// The trampoline that runs `task` in a worker, its results finished by
/// `K`. Taking the task by value is what makes [`run`] sound: its
/// instance for `T` exists only where a value of `T` did.
pub(super) fn trampoline<M, T, K>(task: T) -> Trampoline
where
    T: Task<M>,
    K: Finish<T::Output>,
{
    const {
        assert!(
            std::mem::size_of::<T>() == 0,
            "a pool task must be a function item or a closure that captures nothing \
             (pass captured values as arguments)"
        )
    };
    let _ = task;
    run::<M, T, K>
}

/// The one trampoline: decodes a chunk of argument lists, calls the task
/// on each (in the worker), and encodes the results; the first failure
/// (bad arguments, an `Err` under [`Fallible`]) fails the chunk.
fn run<M, T, K>(args: &[u8]) -> Result<Vec<u8>, String>
where
    T: Task<M>,
    K: Finish<T::Output>,
{
    // SAFETY: `T` is zero-sized (asserted at compile time in `trampoline`,
    // the only place that names this instance), so reading one from a
    // dangling, aligned, non-null pointer reads no memory. That the value
    // is a valid `T` follows from three facts. `T` has one value at most
    // (no bytes to differ in), and it is inhabited: `trampoline` was given
    // one. `T: Copy`, so duplicating that value (the one the caller gave
    // `Pool`) is allowed and needs no drop. And `Task` is sealed to
    // function items and closures (`Fn` is implemented by nothing else on
    // stable Rust), whose captures, if any, are zero-sized `Copy + Send +
    // Sync + 'static` values: they hold no address or handle that could
    // differ between this process and the worker.
    let task: T = unsafe { std::ptr::NonNull::<T>::dangling().as_ptr().read() };
    let items: Vec<T::Args> =
        postcard::from_bytes(args).map_err(|e| format!("cannot deserialize the arguments: {e}"))?;
    let out = items
        .into_iter()
        .map(|a| K::finish(task.call_with(a)))
        .collect::<Result<Vec<_>, String>>()?;
    postcard::to_allocvec(&out).map_err(|e| format!("cannot serialize the result: {e}"))
}
