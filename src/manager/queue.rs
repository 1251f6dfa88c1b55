//! The server's queues (Python's `queue.Queue`, which CPython's manager
//! serves for both its `Queue` and `JoinableQueue` typeids): what each
//! method does, and what a call that must wait (a blocking `get` or `put`,
//! a `join`) waits for. The waiting itself is the event loop's: a call
//! that must wait is parked there, never blocking the server.

use std::collections::VecDeque;
use std::time::Duration;

use super::limits::Budget;
use super::protocol::Exception;
use super::PyValue;

/// The methods a proxy of a queue may call (CPython's `public_methods` of a
/// `queue.Queue`, as 3.13 exposes them: 3.8–3.12 have no `shutdown`).
pub(crate) const EXPOSED: &[&str] = &[
    "empty",
    "full",
    "get",
    "get_nowait",
    "join",
    "put",
    "put_nowait",
    "qsize",
    "shutdown",
    "task_done",
];

/// The longest a timed call may wait (Python's `threading.TIMEOUT_MAX` is
/// about as long; beyond it a timeout is as good as none).
const TIMEOUT_MAX: f64 = 1e9;

/// The longest timeout `threading`'s locks take (`threading.TIMEOUT_MAX`):
/// a queue that must wait longer raises their `OverflowError`.
const LOCK_TIMEOUT_MAX: f64 = 9_223_372_036.0;

/// A FIFO queue, bounded if `maxsize` > 0.
pub(super) struct Queue {
    items: VecDeque<PyValue>,
    maxsize: usize,
    /// The type of a `maxsize` Python cannot compare with an int (`None`,
    /// a str): such a queue is made, and its `put` and `full` raise the
    /// `TypeError` of the comparison, as Python's.
    unordered: Option<String>,
    /// Items put and not yet marked done (`task_done`).
    unfinished: u64,
    /// Shut down (Python 3.13's `shutdown`): every `put` raises
    /// `ShutDown`, and so does a `get` once the queue is empty.
    shut_down: bool,
}

/// What a waiting call waits for.
pub(super) enum Wait {
    /// An item to take.
    Get,
    /// Room for this item.
    Put(PyValue),
    /// Every item put to be marked done.
    Join,
}

/// What a call did: its answer, or what it waits for (and for how long at
/// most: `None`, as long as it takes).
pub(super) enum Step {
    Done(PyValue),
    Wait(Wait, Option<Duration>),
}

fn empty() -> Exception {
    ("Empty", String::new())
}

fn full() -> Exception {
    ("Full", String::new())
}

fn shut_down() -> Exception {
    ("ShutDown", String::new())
}

/// The arguments of a call, by position or by name, as Python binds them.
pub(super) struct Args<'a> {
    /// The function's class, as Python's messages name it (`Queue.put`).
    class: &'static str,
    /// How many parameters it has before those bound here, which the
    /// messages count: `self`, and for the server's own calls `c` (the
    /// connection).
    implicit: usize,
    method: &'a str,
    args: Vec<PyValue>,
    kwds: Vec<(PyValue, PyValue)>,
}

impl<'a> Args<'a> {
    /// A call of a `queue.Queue`'s method.
    pub(super) fn new(method: &'a str, args: Vec<PyValue>, kwds: Vec<(PyValue, PyValue)>) -> Self {
        Args::of("Queue", method, args, kwds)
    }

    /// A call of the method of a `class` instance (`self` counts), or of
    /// the function `method` if `class` is empty (nothing implicit).
    pub(super) fn of(
        class: &'static str,
        method: &'a str,
        args: Vec<PyValue>,
        kwds: Vec<(PyValue, PyValue)>,
    ) -> Self {
        Args {
            class,
            implicit: usize::from(!class.is_empty()),
            method,
            args,
            kwds,
        }
    }

    /// A call of one of the server's own methods (`Server.decref(self, c,
    /// ident)`).
    pub(super) fn server(
        method: &'a str,
        args: Vec<PyValue>,
        kwds: Vec<(PyValue, PyValue)>,
    ) -> Self {
        Args {
            class: "Server",
            implicit: 2,
            method,
            args,
            kwds,
        }
    }

    /// Binds the parameters `names` (in order, after the implicit ones);
    /// `TypeError` for an argument given twice or unknown, then for one
    /// beyond them, then for a missing one of the first `required`, in the
    /// words of Python 3.10+
    /// (`Queue.put() takes from 2 to 4 positional arguments but 5 were
    /// given`: `self` counts).
    pub(super) fn bind(
        self,
        names: &[&str],
        required: usize,
    ) -> Result<Vec<Option<PyValue>>, Exception> {
        let m = if self.class.is_empty() {
            self.method.to_owned()
        } else {
            format!("{}.{}", self.class, self.method)
        };
        let implicit = self.implicit;
        let given = self.args.len();
        let mut bound: Vec<Option<PyValue>> = names.iter().map(|_| None).collect();
        for (slot, v) in bound.iter_mut().zip(self.args) {
            *slot = Some(v);
        }
        for (k, v) in self.kwds {
            let PyValue::Str(k) = k else {
                return Err(("TypeError", "keywords must be strings".into()));
            };
            let Some(i) = names.iter().position(|n| *n == k) else {
                return Err((
                    "TypeError",
                    format!("{m}() got an unexpected keyword argument '{k}'"),
                ));
            };
            if bound[i].is_some() {
                return Err((
                    "TypeError",
                    format!("{m}() got multiple values for argument '{k}'"),
                ));
            }
            bound[i] = Some(v);
        }
        // As Python binds them: keywords are checked before the count of
        // positional arguments.
        if given > names.len() {
            let takes = if required == names.len() {
                let n = names.len() + implicit;
                let s = if n == 1 { "" } else { "s" };
                format!("{n} positional argument{s}")
            } else {
                format!(
                    "from {} to {} positional arguments",
                    required + implicit,
                    names.len() + implicit
                )
            };
            return Err((
                "TypeError",
                format!("{m}() takes {takes} but {} were given", given + implicit),
            ));
        }
        if let Some(i) = bound[..required].iter().position(Option::is_none) {
            return Err((
                "TypeError",
                format!(
                    "{m}() missing 1 required positional argument: '{}'",
                    names[i]
                ),
            ));
        }
        Ok(bound)
    }
}

/// Whether a `PyValue::BigInt`'s two's complement bytes are negative.
fn is_negative(bytes: &[u8]) -> bool {
    bytes.last().is_some_and(|&top| top & 0x80 != 0)
}

/// Whether a positive `PyValue::BigInt` rounds to a float past `f64::MAX`
/// (at least 2^1024 - 2^970), as Python's `float(int)` refuses it.
pub(super) fn rounds_past_float(bytes: &[u8]) -> bool {
    let bit = |i: usize| bytes.get(i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1);
    let len = bytes.len() * 8;
    (1024..len).any(bit) || (970..1024).all(bit)
}

/// How long a call may wait, as its `block` and `timeout` say.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Patience {
    /// At most this long (`Some(ZERO)`: not at all; `None`: as long as it
    /// takes).
    For(Option<Duration>),
    /// A NaN timeout. Python's call does what it can do at once; one that
    /// must wait never times out, and its waits of a NaN are no waits:
    /// CPython's server spins for ever. Refused here if the call must wait.
    NaN,
    /// A timeout past `threading.TIMEOUT_MAX`. Python's call does what it
    /// can do at once; one that must wait raises the `OverflowError` of
    /// the lock it would wait on.
    TooLong,
}

/// `block` and `timeout` as `queue.Queue` reads them.
fn patience(block: Option<PyValue>, timeout: Option<PyValue>) -> Result<Patience, Exception> {
    if !block.as_ref().is_none_or(super::methods::truth) {
        return Ok(Patience::For(Some(Duration::ZERO)));
    }
    let secs = match timeout {
        None | Some(PyValue::None) => return Ok(Patience::For(None)),
        Some(PyValue::Int(i)) => i as f64,
        Some(PyValue::Bool(b)) => f64::from(u8::from(b)),
        Some(PyValue::Float(f)) => f,
        Some(PyValue::BigInt(b)) if is_negative(&b) => -1.0,
        // Added to the clock as a float in Python.
        Some(PyValue::BigInt(b)) if rounds_past_float(&b) => {
            return Err(("OverflowError", "int too large to convert to float".into()))
        }
        Some(PyValue::BigInt(_)) => return Ok(Patience::TooLong),
        Some(other) => {
            return Err((
                "TypeError",
                format!(
                    "'<' not supported between instances of '{}' and 'int'",
                    other.type_name()
                ),
            ))
        }
    };
    if secs < 0.0 {
        return Err((
            "ValueError",
            "'timeout' must be a non-negative number".into(),
        ));
    }
    if secs.is_nan() {
        return Ok(Patience::NaN);
    }
    if secs > LOCK_TIMEOUT_MAX {
        return Ok(Patience::TooLong);
    }
    // A zero timeout still waits in Python; here it is a last look.
    Ok(Patience::For(Some(
        Duration::from_secs_f64(secs.min(TIMEOUT_MAX)).max(Duration::from_nanos(1)),
    )))
}

impl Queue {
    /// `queue.Queue(maxsize=0)`, from `create`'s arguments.
    pub(super) fn new(
        args: Vec<PyValue>,
        kwds: Vec<(PyValue, PyValue)>,
    ) -> Result<Queue, Exception> {
        let [maxsize] =
            <[_; 1]>::try_from(Args::new("__init__", args, kwds).bind(&["maxsize"], 0)?)
                .unwrap_or([None]);
        let mut unordered = None;
        let maxsize = match maxsize {
            None => 0,
            Some(PyValue::Int(n)) => usize::try_from(n).unwrap_or(0),
            Some(PyValue::Bool(b)) => usize::from(b),
            // Python compares the size with it: an int past any size bounds
            // nothing, a negative one neither; full at a float's ceiling.
            Some(PyValue::BigInt(b)) if is_negative(&b) => 0,
            Some(PyValue::BigInt(_)) => usize::MAX,
            Some(PyValue::Float(f)) if f > 0.0 => {
                let ceil = f.ceil();
                if ceil < usize::MAX as f64 {
                    ceil as usize
                } else {
                    usize::MAX
                }
            }
            Some(PyValue::Float(_)) => 0,
            // An instance of a class of another module (`Decimal`,
            // `Fraction`, the caller's own) may define how it compares
            // with an int, which the server cannot run: refused.
            Some(PyValue::Object(o)) if !o.global && o.module != "builtins" => {
                return Err((
                    "TypeError",
                    format!(
                        "the server cannot compare a maxsize of type '{}' with an int",
                        o.name
                    ),
                ))
            }
            // What Python cannot compare with an int (`None`, a str): made,
            // and refused by the calls that compare.
            Some(other) => {
                unordered = Some(other.type_name().to_owned());
                0
            }
        };
        Ok(Queue {
            items: VecDeque::new(),
            maxsize,
            unordered,
            unfinished: 0,
            shut_down: false,
        })
    }

    /// The `TypeError` of comparing an unordered `maxsize` with an int, as
    /// `full` (`0 < maxsize`, `reversed`) or `put` (`maxsize > 0`) does.
    fn check_order(&self, reversed: bool) -> Result<(), Exception> {
        let Some(t) = &self.unordered else {
            return Ok(());
        };
        let message = if reversed {
            format!("'<' not supported between instances of 'int' and '{t}'")
        } else {
            format!("'>' not supported between instances of '{t}' and 'int'")
        };
        Err(("TypeError", message))
    }

    /// What `put` checks before its timeout: a shutdown, then its
    /// `maxsize`'s order.
    fn check_put(&self) -> Result<(), Exception> {
        if self.shut_down {
            return Err(shut_down());
        }
        self.check_order(false)
    }

    fn is_full(&self) -> bool {
        self.maxsize > 0 && self.items.len() >= self.maxsize
    }

    /// Calls `method`: its answer, what it must wait for, or its exception.
    pub(super) fn call(
        &mut self,
        method: &'static str,
        args: Vec<PyValue>,
        kwds: Vec<(PyValue, PyValue)>,
        budget: &mut Budget,
    ) -> Result<Step, Exception> {
        let a = Args::new(method, args, kwds);
        let done = |v: PyValue| Ok(Step::Done(v));
        match method {
            "qsize" => {
                a.bind(&[], 0)?;
                done(PyValue::Int(self.items.len() as i64))
            }
            "empty" => {
                a.bind(&[], 0)?;
                done(PyValue::Bool(self.items.is_empty()))
            }
            "full" => {
                a.bind(&[], 0)?;
                self.check_order(true)?;
                done(PyValue::Bool(self.is_full()))
            }
            "put" | "put_nowait" => {
                // Python looks at a shutdown first, then compares maxsize,
                // then reads the timeout.
                let (item, wait) = if method == "put" {
                    let mut b = a.bind(&["item", "block", "timeout"], 1)?.into_iter();
                    let item = b.next().flatten().unwrap_or(PyValue::None);
                    self.check_put()?;
                    // Python reads them only if the queue has a bound
                    // (`maxsize > 0`): one without is never full.
                    let wait = if self.maxsize == 0 {
                        Patience::For(Some(Duration::ZERO))
                    } else {
                        patience(b.next().flatten(), b.next().flatten())?
                    };
                    (item, wait)
                } else {
                    let item = a
                        .bind(&["item"], 1)?
                        .pop()
                        .flatten()
                        .unwrap_or(PyValue::None);
                    self.check_put()?;
                    (item, Patience::For(Some(Duration::ZERO)))
                };
                // (An item no `get` could answer with is refused with
                // its request: see `objects::written_whole`.)
                self.start(Wait::Put(item), wait, full, budget)
            }
            "get" | "get_nowait" => {
                let (block, timeout) = if method == "get" {
                    let mut b = a.bind(&["block", "timeout"], 0)?.into_iter();
                    (b.next().flatten(), b.next().flatten())
                } else {
                    a.bind(&[], 0)?;
                    (Some(PyValue::Bool(false)), None)
                };
                // Before the timeout is read, as Python's.
                if self.shut_down && self.items.is_empty() {
                    return Err(shut_down());
                }
                self.start(Wait::Get, patience(block, timeout)?, empty, budget)
            }
            "task_done" => {
                a.bind(&[], 0)?;
                if self.unfinished == 0 {
                    return Err(("ValueError", "task_done() called too many times".into()));
                }
                self.unfinished -= 1;
                done(PyValue::None)
            }
            "join" => {
                a.bind(&[], 0)?;
                self.start(Wait::Join, Patience::For(None), empty, budget)
            }
            "shutdown" => {
                let [immediate] = <[_; 1]>::try_from(a.bind(&["immediate"], 0)?).unwrap_or([None]);
                self.shut_down = true;
                if immediate.as_ref().is_some_and(super::methods::truth) {
                    // Each item dropped is marked done, as Python's does.
                    let dropped = std::mem::take(&mut self.items).len();
                    self.unfinished = self.unfinished.saturating_sub(dropped as u64);
                }
                // The waiting calls are tried again (the server's event
                // loop does so after any call of a queue that is done):
                // each `put`, and each `get` of an empty queue, raises
                // `ShutDown`; a `join` is done if nothing is unfinished.
                done(PyValue::None)
            }
            _ => Err((
                "AttributeError",
                format!("'Queue' object has no attribute '{method}'"),
            )),
        }
    }

    /// Does `wait` now if it can; else, unless it may not wait
    /// (`Some(ZERO)`, a NaN), answers what to wait for.
    fn start(
        &mut self,
        wait: Wait,
        patience: Patience,
        timed_out: fn() -> Exception,
        budget: &mut Budget,
    ) -> Result<Step, Exception> {
        match (self.attempt(wait, budget)?, patience) {
            (Ok(v), _) => Ok(Step::Done(v)),
            (Err(_), Patience::For(Some(Duration::ZERO))) => Err(timed_out()),
            // What `threading.Lock.acquire` says of a NaN timeout.
            (Err(_), Patience::NaN) => {
                Err(("ValueError", "Invalid value NaN (not a number)".into()))
            }
            // What `threading.Lock.acquire` says of the time left, a float.
            (Err(_), Patience::TooLong) => Err((
                "OverflowError",
                "timestamp out of range for platform time_t".into(),
            )),
            (Err(wait), Patience::For(patience)) => Ok(Step::Wait(wait, patience)),
        }
    }

    /// Does `wait` if it can now (`Ok(answer)`), else gives it back.
    pub(super) fn attempt(
        &mut self,
        wait: Wait,
        budget: &mut Budget,
    ) -> Result<Result<PyValue, Wait>, Exception> {
        Ok(match wait {
            Wait::Get => match self.items.front() {
                Some(item) => {
                    budget.charge([item])?;
                    Ok(self.items.pop_front().unwrap_or(PyValue::None))
                }
                None if self.shut_down => return Err(shut_down()),
                None => Err(Wait::Get),
            },
            Wait::Put(_) if self.shut_down => return Err(shut_down()),
            Wait::Put(item) if !self.is_full() => {
                self.items.push_back(item);
                self.unfinished += 1;
                Ok(PyValue::None)
            }
            Wait::Put(item) => Err(Wait::Put(item)),
            Wait::Join if self.unfinished == 0 => Ok(PyValue::None),
            Wait::Join => Err(Wait::Join),
        })
    }

    /// What a wait that timed out raises.
    pub(super) fn timed_out(wait: &Wait) -> Exception {
        match wait {
            Wait::Put(_) => full(),
            _ => empty(),
        }
    }

    /// The items it holds.
    pub(super) fn items(&self) -> impl Iterator<Item = &PyValue> {
        self.items.iter()
    }

    /// How many items it holds.
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget::new(usize::MAX / 2, usize::MAX / 2)
    }

    fn call(q: &mut Queue, m: &'static str, args: Vec<PyValue>) -> Result<Step, &'static str> {
        q.call(m, args, Vec::new(), &mut budget()).map_err(|e| e.0)
    }

    fn done(s: Result<Step, &'static str>) -> PyValue {
        match s {
            Ok(Step::Done(v)) => v,
            _ => panic!("not done"),
        }
    }

    /// A `BigInt` of `2^exp - 2^low` (or `-2^exp` if `negative`), as the
    /// pickle decoder makes it.
    fn big(exp: usize, low: Option<usize>, negative: bool) -> PyValue {
        let mut bytes = vec![0u8; exp / 8 + 1];
        match (negative, low) {
            (true, _) => {
                bytes[exp / 8] = 0xff << (exp % 8);
            }
            (false, Some(low)) => (low..exp).for_each(|i| bytes[i / 8] |= 1 << (i % 8)),
            (false, None) => bytes[exp / 8] = 1 << (exp % 8),
        }
        PyValue::BigInt(bytes)
    }

    /// Sizes and timeouts that are not small ints, as CPython's
    /// `queue.Queue` takes them (checked against CPython 3.12).
    #[test]
    fn big_and_float_sizes_and_timeouts_are_pythons() {
        for (maxsize, fits) in [
            (big(100, None, false), 3),
            (big(100, None, true), 3),
            (2.5.into(), 3),
            (f64::NAN.into(), 3),
            (f64::INFINITY.into(), 3),
            ((-1.5).into(), 3),
            (1.0.into(), 1),
        ] {
            let mut q = Queue::new(vec![maxsize.clone()], vec![]).unwrap();
            let put = (0..3)
                .take_while(|&i| call(&mut q, "put_nowait", vec![i.into()]).is_ok())
                .count();
            assert_eq!(put, fits, "maxsize {maxsize:?}");
        }
        let mut q = Queue::new(vec![], vec![]).unwrap();
        let get = |q: &mut Queue, t: PyValue| call(q, "get", vec![true.into(), t]);
        assert!(matches!(
            get(&mut q, big(1100, None, false)),
            Err("OverflowError")
        ));
        assert!(matches!(
            get(&mut q, big(1024, Some(970), false)),
            Err("OverflowError")
        ));
        // Past `threading.TIMEOUT_MAX`: the `OverflowError` of the lock
        // an empty queue's `get` would wait on.
        assert!(matches!(
            get(&mut q, big(1024, Some(971), false)),
            Err("OverflowError")
        ));
        assert!(matches!(
            get(&mut q, big(100, None, false)),
            Err("OverflowError")
        ));
        assert!(matches!(get(&mut q, 1e10.into()), Err("OverflowError")));
        assert!(matches!(
            get(&mut q, 9e9.into()),
            Ok(Step::Wait(Wait::Get, Some(_)))
        ));
        assert!(matches!(
            get(&mut q, big(100, None, true)),
            Err("ValueError")
        ));
    }

    #[test]
    fn a_queue_is_pythons_queue() {
        let mut q = Queue::new(vec![2.into()], vec![]).unwrap();
        assert_eq!(done(call(&mut q, "put", vec![1.into()])), PyValue::None);
        assert_eq!(
            done(call(&mut q, "put_nowait", vec![2.into()])),
            PyValue::None
        );
        assert_eq!(done(call(&mut q, "full", vec![])), PyValue::Bool(true));
        assert!(matches!(
            call(&mut q, "put_nowait", vec![3.into()]),
            Err("Full")
        ));
        assert!(matches!(
            call(&mut q, "put", vec![3.into(), false.into()]),
            Err("Full")
        ));
        assert!(matches!(
            call(&mut q, "put", vec![3.into(), true.into(), (-1).into()]),
            Err("ValueError")
        ));
        assert!(matches!(
            call(&mut q, "put", vec![3.into(), true.into(), 0.5.into()]),
            Ok(Step::Wait(Wait::Put(_), Some(_)))
        ));
        assert_eq!(done(call(&mut q, "qsize", vec![])), PyValue::Int(2));
        assert_eq!(done(call(&mut q, "get", vec![])), PyValue::Int(1));
        assert_eq!(done(call(&mut q, "get_nowait", vec![])), PyValue::Int(2));
        assert!(matches!(call(&mut q, "get_nowait", vec![]), Err("Empty")));
        assert!(matches!(
            call(&mut q, "get", vec![]),
            Ok(Step::Wait(Wait::Get, None))
        ));
        assert!(matches!(
            call(&mut q, "join", vec![]),
            Ok(Step::Wait(Wait::Join, None))
        ));
        done(call(&mut q, "task_done", vec![]));
        done(call(&mut q, "task_done", vec![]));
        assert!(matches!(
            call(&mut q, "task_done", vec![]),
            Err("ValueError")
        ));
        assert_eq!(done(call(&mut q, "join", vec![])), PyValue::None);
        assert!(matches!(
            call(&mut q, "get", vec![1.into(), 2.into(), 3.into()]),
            Err("TypeError")
        ));
        let kw = vec![(PyValue::from("block"), PyValue::Bool(false))];
        assert!(matches!(
            q.call("get", vec![], kw, &mut budget()).map_err(|e| e.0),
            Err("Empty")
        ));
    }
}
