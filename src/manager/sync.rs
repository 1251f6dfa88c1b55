//! The server's `Value`, `Array`, `Event`, `Lock`, `RLock`, `Semaphore`,
//! `BoundedSemaphore`, `Barrier` and `Condition` (CPython's `SyncManager`
//! typeids that are neither containers nor queues): what each method
//! does, as CPython's server does it (a `Condition`'s waits: `condition`). A call that must wait (an `Event`'s `wait`, a blocking
//! `acquire`) is parked by the event loop (`objects`), never blocking the
//! server.

use std::time::Duration;

use super::array::{self, Array};
use super::barrier::{self, Barrier};
use super::condition::Condition;
use super::dispatch::Reply;
use super::limits::Budget;
use super::protocol::Exception;
use super::queue::Args;
use super::value::PyObject;
use super::PyValue;

/// The methods a `ValueProxy` calls (its `_exposed_`).
const VALUE_EXPOSED: &[&str] = &["get", "set"];

/// The methods an `EventProxy` calls.
const EVENT_EXPOSED: &[&str] = &["is_set", "set", "clear", "wait"];

/// The methods an `AcquirerProxy` calls (`__enter__` and `__exit__` are
/// its own, calling these).
const ACQUIRER_EXPOSED: &[&str] = &["acquire", "release"];

/// The longest a `threading` lock waits (`threading.TIMEOUT_MAX`).
const TIMEOUT_MAX: f64 = 9_223_372_036.0;

/// What a parked call waits for.
pub(super) enum Wait {
    /// An `Event` to be set: how many times it had been set when the wait
    /// began (a `set` and a `clear` before the waiting calls are looked
    /// at wake it, as Python's `notify_all` does).
    Event(u64),
    /// A lock or a semaphore to be free.
    Acquire,
    /// A barrier's generation to end: the waiter's index in it.
    Barrier { generation: u64, index: u64 },
    /// A condition's wait of `ticket` to be notified; it released the
    /// lock `count` times.
    Notified { ticket: u64, count: u64 },
    /// A lock to be free, to take it `count` times (a condition's wait
    /// taking its lock again; `notified`: the condition whose notification
    /// it took, else it timed out).
    Restore {
        count: u64,
        notified: Option<super::protocol::Id>,
    },
}

/// What a call did: its answer, or what it waits for (and for how long at
/// most: `None`, as long as it takes).
pub(super) enum Outcome {
    Done(PyValue),
    Wait(Wait, Option<Duration>),
}

/// One object.
pub(super) enum Sync {
    /// CPython's `multiprocessing.managers.Value`: a value and the typecode
    /// it was made with, which nothing checks.
    Value { typecode: PyValue, value: PyValue },
    /// An `array.array` (CPython's manager's `Array`).
    Array(Array),
    /// A `threading.Event`: its flag, and how many times it was set.
    Event { flag: bool, sets: u64 },
    /// A `threading.Lock`: the connection whose `acquire` holds it.
    Lock(Option<u64>),
    /// A `threading.RLock`: the connection that owns it, and how often.
    RLock(Option<(u64, u64)>),
    /// A `threading.Semaphore` (`bound`: a `BoundedSemaphore`'s initial
    /// value).
    Semaphore { value: i128, bound: Option<i128> },
    /// A `threading.Barrier`.
    Barrier(Barrier),
    /// A `threading.Condition`.
    Condition(Condition),
}

/// A timeout as `threading`'s locks read it (`_thread.lock.acquire`):
/// seconds, `-1` as none; what cannot be converted raises Python's
/// exceptions.
fn lock_seconds(v: &PyValue) -> Result<f64, Exception> {
    let too_large = || {
        (
            "OverflowError",
            "timestamp too large to convert to C PyTime_t".to_string(),
        )
    };
    let secs = match v {
        PyValue::Float(f) if f.is_nan() => {
            return Err(("ValueError", "Invalid value NaN (not a number)".into()))
        }
        PyValue::Float(f) if f.abs() > TIMEOUT_MAX => {
            return Err((
                "OverflowError",
                "timestamp out of range for platform time_t".into(),
            ))
        }
        PyValue::Float(f) => *f,
        PyValue::Int(i) if (*i as f64).abs() > TIMEOUT_MAX => return Err(too_large()),
        PyValue::Int(i) => *i as f64,
        PyValue::Bool(b) => f64::from(u8::from(*b)),
        PyValue::BigInt(_) => return Err(too_large()),
        other => {
            return Err((
                "TypeError",
                format!(
                    "'{}' object cannot be interpreted as an integer",
                    other.type_name()
                ),
            ))
        }
    };
    Ok(secs)
}

/// A semaphore's count past what the server keeps (Python's has no end).
fn semaphore_overflow() -> Exception {
    (
        "OverflowError",
        "the manager counts a semaphore in at most 127 bits".into(),
    )
}

/// `_thread.lock.release`'s (and `RLock`'s) refusal of arguments.
fn no_arguments(
    class: &str,
    args: &[PyValue],
    kwds: &[(PyValue, PyValue)],
) -> Result<(), Exception> {
    if !kwds.is_empty() {
        return Err((
            "TypeError",
            format!("{class}.release() takes no keyword arguments"),
        ));
    }
    if !args.is_empty() {
        return Err((
            "TypeError",
            format!(
                "{class}.release() takes no arguments ({} given)",
                args.len()
            ),
        ));
    }
    Ok(())
}

/// A wait of `secs` seconds, at least a last look.
fn patience(secs: f64) -> Option<Duration> {
    Some(Duration::from_secs_f64(secs.clamp(0.0, TIMEOUT_MAX)).max(Duration::from_nanos(1)))
}

/// A number Python compares with an int (`timeout > 0`), as an `f64`;
/// `TypeError` of the comparison `op` for anything else.
pub(super) fn compared(v: &PyValue, op: &str) -> Result<f64, Exception> {
    match v {
        PyValue::Float(f) => Ok(*f),
        PyValue::Int(i) => Ok(*i as f64),
        PyValue::Bool(b) => Ok(f64::from(u8::from(*b))),
        PyValue::BigInt(b) if b.last().is_some_and(|&top| top & 0x80 != 0) => Ok(-f64::MAX),
        PyValue::BigInt(_) => Ok(f64::MAX),
        other => Err((
            "TypeError",
            format!(
                "'{op}' not supported between instances of '{}' and 'int'",
                other.type_name()
            ),
        )),
    }
}

/// A timeout that `threading` adds to the clock (`_time() + timeout`)
/// before it compares it (`timeout > 0`), as an `f64`: the exceptions of
/// the addition, then of the comparison.
pub(super) fn added_to_clock(t: &PyValue) -> Result<f64, Exception> {
    match t {
        PyValue::BigInt(_) => array::float_item(t),
        PyValue::Int(_) | PyValue::Float(_) | PyValue::Bool(_) => compared(t, ">"),
        // A complex adds to a float, then fails the comparison.
        PyValue::Object(o) if o.is_builtin("complex") => compared(t, ">"),
        other => Err((
            "TypeError",
            format!(
                "unsupported operand type(s) for +: 'float' and '{}'",
                other.type_name()
            ),
        )),
    }
}

/// How long a `Condition.wait(timeout)` waits (an `Event`'s or a
/// `Semaphore`'s): `None` as long as it takes; a timeout that is not
/// positive (or NaN) is a last look; a huge one is refused as the lock it
/// waits on refuses it.
pub(super) fn condition_wait(timeout: Option<&PyValue>) -> Result<Option<Duration>, Exception> {
    let Some(t) = timeout.filter(|t| !matches!(t, PyValue::None)) else {
        return Ok(None);
    };
    let secs = compared(t, ">")?;
    // `not timeout > 0`, a NaN included: the lock is only tried.
    if secs.is_nan() || secs <= 0.0 {
        return Ok(Some(Duration::ZERO));
    }
    let secs = lock_seconds(t)?;
    Ok(patience(secs))
}

impl Sync {
    /// The object of `typeid` made of `create`'s arguments, if `typeid`
    /// is one of these.
    pub(super) fn create(
        typeid: &str,
        args: Vec<PyValue>,
        kwds: Vec<(PyValue, PyValue)>,
        budget: &mut Budget,
    ) -> Option<Result<Sync, Exception>> {
        Some(match typeid {
            "Value" => Args::of("Value", "__init__", args, kwds)
                .bind(&["typecode", "value", "lock"], 2)
                .map(|bound| {
                    let mut bound = bound.into_iter().flatten();
                    Sync::Value {
                        typecode: bound.next().unwrap_or(PyValue::None),
                        value: bound.next().unwrap_or(PyValue::None),
                    }
                }),
            "Array" => Array::new(args, kwds, budget).map(Sync::Array),
            "Barrier" => Barrier::new(args, kwds).map(Sync::Barrier),
            "Event" => Args::of("Event", "__init__", args, kwds)
                .bind(&[], 0)
                .map(|_| Sync::Event {
                    flag: false,
                    sets: 0,
                }),
            "Lock" if !kwds.is_empty() => {
                Err(("TypeError", "lock() takes no keyword arguments".to_string()))
            }
            "Lock" if !args.is_empty() => Err((
                "TypeError",
                format!("lock expected 0 arguments, got {}", args.len()),
            )),
            "Lock" => Ok(Sync::Lock(None)),
            // `threading.RLock(*args, **kwargs)` passes them on to a
            // `_thread.RLock` that ignores them.
            "RLock" => Ok(Sync::RLock(None)),
            "Semaphore" | "BoundedSemaphore" => {
                let class = if typeid == "Semaphore" {
                    "Semaphore"
                } else {
                    "BoundedSemaphore"
                };
                Args::of(class, "__init__", args, kwds)
                    .bind(&["value"], 0)
                    .and_then(|bound| {
                        let value = bound
                            .into_iter()
                            .flatten()
                            .next()
                            .unwrap_or(PyValue::Int(1));
                        let n = match &value {
                            PyValue::Int(i) => i128::from(*i),
                            PyValue::Bool(b) => i128::from(*b),
                            // Past 127 bits: refused if positive, else
                            // negative as Python finds it.
                            PyValue::BigInt(b) => super::apply::big_i128(b)
                                .or(b.last().filter(|&&top| top & 0x80 != 0).map(|_| -1))
                                .ok_or_else(semaphore_overflow)?,
                            PyValue::Float(_) => {
                                return Err((
                                    "TypeError",
                                    "the manager counts a semaphore in ints, not floats"
                                        .to_string(),
                                ))
                            }
                            other => {
                                compared(other, "<")?;
                                0
                            }
                        };
                        if n < 0 {
                            return Err((
                                "ValueError",
                                "semaphore initial value must be >= 0".into(),
                            ));
                        }
                        Ok(Sync::Semaphore {
                            value: n,
                            bound: (typeid == "BoundedSemaphore").then_some(n),
                        })
                    })
            }
            _ => return None,
        })
    }

    /// The methods its proxy calls.
    pub(super) fn exposed(&self) -> &'static [&'static str] {
        match self {
            Sync::Value { .. } => VALUE_EXPOSED,
            Sync::Array(_) => array::EXPOSED,
            Sync::Event { .. } => EVENT_EXPOSED,
            Sync::Barrier(_) => barrier::EXPOSED,
            Sync::Condition(_) => super::condition::EXPOSED,
            _ => ACQUIRER_EXPOSED,
        }
    }

    /// Its class, as Python names it (`<class '…'>`).
    pub(super) fn class(&self) -> &'static str {
        match self {
            Sync::Value { .. } => "multiprocessing.managers.Value",
            Sync::Array(_) => "array.array",
            Sync::Event { .. } => "threading.Event",
            Sync::Barrier(_) => "threading.Barrier",
            Sync::Condition(_) => "threading.Condition",
            Sync::Lock(_) => "_thread.lock",
            Sync::RLock(_) => "_thread.RLock",
            Sync::Semaphore { bound: None, .. } => "threading.Semaphore",
            Sync::Semaphore { .. } => "threading.BoundedSemaphore",
        }
    }

    /// Calls `method`, one of [`Sync::exposed`], for connection `peer`:
    /// its answer (an array's slice copied within `budget`), what it waits
    /// for, or its exception.
    pub(super) fn call(
        &mut self,
        method: &str,
        args: Vec<PyValue>,
        kwds: Vec<(PyValue, PyValue)>,
        peer: u64,
        budget: &mut Budget,
    ) -> Result<Outcome, Exception> {
        let done = |v: PyValue| Ok(Outcome::Done(v));
        let class = self.class().rsplit('.').next().unwrap_or("");
        match self {
            Sync::Barrier(b) if method == "wait" => b.wait(args, kwds),
            Sync::Barrier(b) => b.call(method, args, kwds).map(Outcome::Done),
            // `objects` calls its lock, wherever it is.
            Sync::Condition(_) => Err((
                "RuntimeError",
                "a Condition's calls are its lock's and the object table's".into(),
            )),
            Sync::Value { .. } | Sync::Array(_) => self
                .call_value(method, args, kwds, budget)
                .map(Outcome::Done),
            Sync::Event { flag, sets } => {
                let a = Args::of("Event", method, args, kwds);
                match method {
                    "is_set" => a.bind(&[], 0).and_then(|_| done(PyValue::Bool(*flag))),
                    "set" | "clear" => {
                        a.bind(&[], 0)?;
                        *flag = method == "set";
                        if *flag {
                            *sets += 1;
                        }
                        done(PyValue::None)
                    }
                    _ => {
                        let timeout = a.bind(&["timeout"], 0)?.pop().flatten();
                        if *flag {
                            return done(PyValue::Bool(true));
                        }
                        match condition_wait(timeout.as_ref())? {
                            Some(Duration::ZERO) => done(PyValue::Bool(false)),
                            t => Ok(Outcome::Wait(Wait::Event(*sets), t)),
                        }
                    }
                }
            }
            Sync::Lock(_) | Sync::RLock(_) if method == "acquire" => {
                if args.len() > 2 {
                    return Err((
                        "TypeError",
                        format!("acquire() takes at most 2 arguments ({} given)", args.len()),
                    ));
                }
                let mut bound = Args::of("", "acquire", args, kwds)
                    .bind(&["blocking", "timeout"], 0)?
                    .into_iter();
                let (blocking, timeout) = (bound.next().flatten(), bound.next().flatten());
                let blocking = blocking.as_ref().is_none_or(super::methods::truth);
                let secs = timeout.as_ref().map_or(Ok(-1.0), lock_seconds)?;
                if !blocking && secs != -1.0 {
                    return Err((
                        "ValueError",
                        "can't specify a timeout for a non-blocking call".into(),
                    ));
                }
                if secs < 0.0 && secs != -1.0 {
                    return Err((
                        "ValueError",
                        "timeout value must be a non-negative number".into(),
                    ));
                }
                if self.attempt(&Wait::Acquire, peer) {
                    return done(PyValue::Bool(true));
                }
                match (blocking, secs) {
                    (false, _) | (_, 0.0) => done(PyValue::Bool(false)),
                    (true, -1.0) => Ok(Outcome::Wait(Wait::Acquire, None)),
                    (true, secs) => Ok(Outcome::Wait(Wait::Acquire, patience(secs))),
                }
            }
            Sync::Semaphore { .. } if method == "acquire" => {
                let mut bound = Args::of(class, "acquire", args, kwds)
                    .bind(&["blocking", "timeout"], 0)?
                    .into_iter();
                let (blocking, timeout) = (bound.next().flatten(), bound.next().flatten());
                let blocking = blocking.as_ref().is_none_or(super::methods::truth);
                let timeout = timeout.filter(|t| !matches!(t, PyValue::None));
                if !blocking && timeout.is_some() {
                    return Err((
                        "ValueError",
                        "can't specify timeout for non-blocking acquire".into(),
                    ));
                }
                if self.attempt(&Wait::Acquire, peer) {
                    return done(PyValue::Bool(true));
                }
                if !blocking {
                    return done(PyValue::Bool(false));
                }
                let wait = match &timeout {
                    None => None,
                    Some(t) => {
                        let secs = added_to_clock(t)?;
                        if secs.is_nan() {
                            // CPython's server spins for ever.
                            return Err(("ValueError", "Invalid value NaN (not a number)".into()));
                        }
                        if secs <= 0.0 {
                            return done(PyValue::Bool(false));
                        }
                        condition_wait(Some(t))?
                    }
                };
                Ok(Outcome::Wait(Wait::Acquire, wait))
            }
            Sync::Lock(holder) => {
                no_arguments("lock", &args, &kwds)?;
                if holder.take().is_none() {
                    return Err(("RuntimeError", "release unlocked lock".into()));
                }
                done(PyValue::None)
            }
            Sync::RLock(owner) => {
                no_arguments("RLock", &args, &kwds)?;
                match owner {
                    Some((who, n)) if *who == peer => {
                        *n -= 1;
                        if *n == 0 {
                            *owner = None;
                        }
                        done(PyValue::None)
                    }
                    _ => Err(("RuntimeError", "cannot release un-acquired lock".into())),
                }
            }
            Sync::Semaphore { value, bound: top } => {
                let n = Args::of(class, "release", args, kwds)
                    .bind(&["n"], 0)?
                    .pop()
                    .flatten()
                    .unwrap_or(PyValue::Int(1));
                // `None`: a positive int past 127 bits.
                let n = match n {
                    PyValue::Int(i) => Some(i128::from(i)),
                    PyValue::Bool(b) => Some(i128::from(b)),
                    PyValue::BigInt(b) if b.last().is_some_and(|&top| top & 0x80 != 0) => {
                        Some(super::apply::big_i128(&b).unwrap_or(i128::MIN))
                    }
                    PyValue::BigInt(b) => super::apply::big_i128(&b),
                    other => {
                        compared(&other, "<")?;
                        return Err((
                            "TypeError",
                            "the manager releases a semaphore an int number of times".into(),
                        ));
                    }
                };
                if n.is_some_and(|n| n < 1) {
                    return Err(("ValueError", "n must be one or more".into()));
                }
                // A count past what the server keeps is past any bound.
                let total = n.and_then(|n| value.checked_add(n));
                if let Some(top) = top {
                    if total.is_none_or(|total| total > *top) {
                        return Err(("ValueError", "Semaphore released too many times".into()));
                    }
                }
                *value = total.ok_or_else(semaphore_overflow)?;
                done(PyValue::None)
            }
        }
    }

    /// Takes what a waiting `wait` of connection `peer` waits for, if it
    /// is there: whether it did (an event's `wait` takes nothing).
    pub(super) fn attempt(&mut self, wait: &Wait, peer: u64) -> bool {
        match (self, wait) {
            (Sync::Event { flag, sets }, Wait::Event(since)) => *flag || sets != since,
            (Sync::Lock(holder), Wait::Acquire) if holder.is_none() => {
                *holder = Some(peer);
                true
            }
            (Sync::RLock(owner), Wait::Acquire) => match owner {
                None => {
                    *owner = Some((peer, 1));
                    true
                }
                Some((who, n)) if *who == peer => {
                    *n += 1;
                    true
                }
                Some(_) => false,
            },
            (Sync::Semaphore { value, .. }, Wait::Acquire) if *value > 0 => {
                *value -= 1;
                true
            }
            (lock @ (Sync::Lock(_) | Sync::RLock(_)), Wait::Restore { count, .. }) => {
                lock.restore(*count, peer)
            }
            (Sync::Condition(c), Wait::Acquire | Wait::Restore { .. }) => {
                c.own_lock().is_some_and(|lock| lock.attempt(wait, peer))
            }
            _ => false,
        }
    }

    /// Releases a lock whatever its count (a condition's `wait`): the
    /// count, for [`Sync::restore`].
    pub(super) fn release_all(&mut self) -> u64 {
        match self {
            Sync::Lock(holder) => u64::from(holder.take().is_some()),
            Sync::RLock(owner) => owner.take().map_or(0, |(_, n)| n),
            Sync::Condition(c) => c.own_lock().map_or(0, Sync::release_all),
            _ => 0,
        }
    }

    /// Takes a lock `count` times for connection `peer` (a condition's
    /// wait taking again what [`Sync::release_all`] released), if it is
    /// free (or an `RLock` `peer` owns); whether it did.
    pub(super) fn restore(&mut self, count: u64, peer: u64) -> bool {
        match self {
            Sync::Lock(holder) if holder.is_none() => {
                *holder = Some(peer);
                true
            }
            Sync::RLock(owner) => match owner {
                None => {
                    *owner = Some((peer, count.max(1)));
                    true
                }
                Some((who, n)) if *who == peer => {
                    *n = n.saturating_add(count);
                    true
                }
                Some(_) => false,
            },
            _ => false,
        }
    }

    /// The answer of a waiting `wait` that timed out: `False`, or a
    /// barrier's `BrokenBarrierError` (the barrier breaks).
    pub(super) fn timed_out(&mut self, wait: &Wait) -> Result<PyValue, Exception> {
        match (self, wait) {
            (Sync::Barrier(b), Wait::Barrier { generation, .. }) => {
                b.timed_out(*generation);
                Err(barrier::broken())
            }
            _ => Ok(PyValue::Bool(false)),
        }
    }

    /// A barrier's generations that ended since the last look, and
    /// whether each was released (else broken).
    pub(super) fn ended(&mut self) -> Vec<(u64, bool)> {
        match self {
            Sync::Barrier(b) => b.ended(),
            _ => Vec::new(),
        }
    }

    /// How many times connection `peer` holds it (a lock it acquired, an
    /// `RLock` it owns): 0 for the others.
    pub(super) fn held_by(&self, peer: u64) -> u64 {
        match self {
            Sync::Lock(Some(holder)) if *holder == peer => 1,
            Sync::RLock(Some((owner, n))) if *owner == peer => *n,
            Sync::Condition(Condition {
                lock: super::condition::Lock::Own(lock),
                ..
            }) => lock.held_by(peer),
            _ => 0,
        }
    }

    /// Frees what connection `peer`, which has ended, held: a `Lock` it
    /// acquired and nobody released, an `RLock` it owns. (A semaphore's
    /// count is not given back: another process routinely releases what
    /// one acquired.) Whether anything was freed.
    pub(super) fn forget(&mut self, peer: u64) -> bool {
        match self {
            Sync::Lock(holder) if *holder == Some(peer) => {
                *holder = None;
                true
            }
            Sync::RLock(owner) if owner.is_some_and(|(who, _)| who == peer) => {
                *owner = None;
                true
            }
            Sync::Condition(c) => c.own_lock().is_some_and(|lock| lock.forget(peer)),
            _ => false,
        }
    }

    /// A `Value`'s or an `Array`'s call.
    fn call_value(
        &mut self,
        method: &str,
        args: Vec<PyValue>,
        kwds: Vec<(PyValue, PyValue)>,
        budget: &mut Budget,
    ) -> Result<PyValue, Exception> {
        match self {
            Sync::Value { value, .. } => {
                let a = Args::of("Value", method, args, kwds);
                if method == "get" {
                    a.bind(&[], 0)?;
                    Ok(value.clone())
                } else {
                    let mut bound = a.bind(&["value"], 1)?.into_iter().flatten();
                    *value = bound.next().unwrap_or(PyValue::None);
                    Ok(PyValue::None)
                }
            }
            Sync::Array(a) => a.call(method, args, kwds, budget),
            _ => Err(("AttributeError", format!("no method {method}"))),
        }
    }

    /// Python's `repr` (and `str`) of it, whole: a client's `str(proxy)`
    /// (an answer past a frame is refused, so an array's is not written
    /// much further).
    pub(super) fn whole_repr(&self) -> String {
        match self {
            Sync::Value { typecode, value } => format!("Value({typecode}, {value})"),
            Sync::Array(a) => a.repr(super::objects::MAX_FRAME),
            _ => self.repr(),
        }
    }

    /// Python's `repr` of it, cut short after about 200 characters, for a
    /// listing (`debug_info`).
    pub(super) fn repr(&self) -> String {
        match self {
            Sync::Value { typecode, value } => {
                format!("Value({}, {})", typecode.repr(), value.repr())
            }
            Sync::Array(a) => a.repr(200),
            Sync::Barrier(b) => b.repr(),
            Sync::Condition(c) => match &c.lock {
                super::condition::Lock::Own(lock) => c.repr(&lock.repr()),
                // (`objects` shows the shared lock's.)
                super::condition::Lock::Shared { .. } => c.repr(c.lock_class()),
            },
            Sync::Event { flag, .. } => {
                let state = if *flag { "set" } else { "unset" };
                format!("<threading.Event at 0x0: {state}>")
            }
            Sync::Lock(holder) => {
                let state = if holder.is_some() {
                    "locked"
                } else {
                    "unlocked"
                };
                format!("<{state} _thread.lock object at 0x0>")
            }
            Sync::RLock(owner) => {
                let (state, who, n) = match owner {
                    Some((who, n)) => ("locked", *who, *n),
                    None => ("unlocked", 0, 0),
                };
                format!("<{state} _thread.RLock object owner={who} count={n} at 0x0>")
            }
            Sync::Semaphore { value, bound } => {
                let name = if bound.is_some() {
                    "BoundedSemaphore"
                } else {
                    "Semaphore"
                };
                match bound {
                    Some(top) => format!("<threading.{name} at 0x0: value={value}/{top}>"),
                    None => format!("<threading.{name} at 0x0: value={value}>"),
                }
            }
        }
    }

    /// `#GETVALUE`: a copy as Python's client unpickles it (made within
    /// `budget`), or why it cannot be pickled (as CPython's server fails
    /// to).
    pub(super) fn copy(&self, budget: &mut Budget) -> Reply {
        let copied = match self {
            Sync::Value { typecode, value } => budget.charge([typecode, value]).map(|()| {
                PyValue::Object(Box::new(PyObject::instance(
                    "multiprocessing.managers",
                    "Value",
                    Vec::new(),
                    Some(PyValue::Dict(vec![
                        ("_typecode".into(), typecode.clone()),
                        ("_value".into(), value.clone()),
                    ])),
                )))
            }),
            Sync::Array(a) => a.copy(budget),
            // As CPython's server fails to pickle them.
            Sync::Event { .. } | Sync::Lock(_) | Sync::Semaphore { .. } | Sync::Barrier(_) => {
                return Reply::Unserializable((
                    "TypeError",
                    "cannot pickle '_thread.lock' object".into(),
                ))
            }
            Sync::RLock(_) => {
                return Reply::Unserializable((
                    "TypeError",
                    "cannot pickle '_thread.RLock' object".into(),
                ))
            }
            Sync::Condition(c) => {
                return Reply::Unserializable((
                    "TypeError",
                    format!("cannot pickle '{}' object", c.lock_class()),
                ))
            }
        };
        copied.map_or_else(Reply::error, Reply::Return)
    }

    /// The values it holds (which may hold proxies).
    pub(super) fn values(&self) -> impl Iterator<Item = &PyValue> {
        match self {
            Sync::Value { typecode, value } => vec![typecode, value].into_iter(),
            _ => Vec::new().into_iter(),
        }
    }
}
