//! The server's `Barrier` (a `threading.Barrier`): `wait`, `abort`,
//! `reset` and the attributes a `BarrierProxy` reads. A `wait` that is not
//! the last party's is parked by the event loop; the generation it waits
//! in ends released (each waiter answers its index) or broken (each
//! raises `BrokenBarrierError`), and the event loop answers its waiters
//! then ([`Barrier::ended`]).

use super::protocol::Exception;
use super::queue::Args;
use super::sync::{Outcome, Wait};
use super::PyValue;

/// The methods a `BarrierProxy` calls.
pub(super) const EXPOSED: &[&str] = &["__getattribute__", "wait", "abort", "reset"];

/// `threading.BrokenBarrierError`.
pub(super) fn broken() -> Exception {
    ("BrokenBarrierError", String::new())
}

/// A `threading.Barrier`.
pub(super) struct Barrier {
    parties: u64,
    /// `parties` as it was given (the attribute Python answers, of any
    /// size).
    given: PyValue,
    /// The default timeout of a `wait` (the `timeout` it was made with).
    timeout: Option<PyValue>,
    /// The parties waiting in this generation.
    count: u64,
    /// The generation under way.
    generation: u64,
    broken: bool,
    /// A generation that ended since the event loop last looked, and
    /// whether it was released (else broken).
    ended: Vec<(u64, bool)>,
}

impl Barrier {
    /// `Barrier(parties, action=None, timeout=None)`, from `create`'s
    /// arguments.
    pub(super) fn new(
        args: Vec<PyValue>,
        kwds: Vec<(PyValue, PyValue)>,
    ) -> Result<Barrier, Exception> {
        let mut bound = Args::of("Barrier", "__init__", args, kwds)
            .bind(&["parties", "action", "timeout"], 1)?
            .into_iter();
        let parties = bound.next().flatten().unwrap_or(PyValue::None);
        let action = bound.next().flatten();
        let timeout = bound
            .next()
            .flatten()
            .filter(|t| !matches!(t, PyValue::None));
        let given = parties.clone();
        let parties = match parties {
            PyValue::Int(n) if n >= 1 => n as u64,
            PyValue::Bool(true) => 1,
            PyValue::Int(_) | PyValue::Bool(false) => {
                return Err(("ValueError", "parties must be > 0".into()))
            }
            PyValue::BigInt(b) if b.last().is_some_and(|&top| top & 0x80 != 0) => {
                return Err(("ValueError", "parties must be > 0".into()))
            }
            PyValue::BigInt(_) => u64::MAX,
            PyValue::Float(_) => {
                return Err((
                    "TypeError",
                    "the manager counts a barrier's parties in ints, not floats".into(),
                ))
            }
            other => {
                return Err((
                    "TypeError",
                    format!(
                        "'<' not supported between instances of '{}' and 'int'",
                        other.type_name()
                    ),
                ))
            }
        };
        if action.is_some_and(|a| !matches!(a, PyValue::None)) {
            return Err((
                "TypeError",
                "the manager server runs no function: a barrier's action must be None".into(),
            ));
        }
        Ok(Barrier {
            parties,
            given,
            timeout,
            count: 0,
            generation: 0,
            broken: false,
            ended: Vec::new(),
        })
    }

    /// Breaks the generation under way: its waiters raise
    /// `BrokenBarrierError`, and so does every `wait` until a `reset`.
    fn break_now(&mut self) {
        if self.count > 0 {
            self.ended.push((self.generation, false));
        }
        self.broken = true;
        self.count = 0;
    }

    /// `wait(timeout=None)`: the index of a waiter that need not wait (the
    /// last party's), or what it waits for (its generation, its index)
    /// and how long.
    pub(super) fn wait(
        &mut self,
        args: Vec<PyValue>,
        kwds: Vec<(PyValue, PyValue)>,
    ) -> Result<Outcome, Exception> {
        let timeout = Args::of("Barrier", "wait", args, kwds)
            .bind(&["timeout"], 0)?
            .pop()
            .flatten()
            .filter(|t| !matches!(t, PyValue::None))
            .or_else(|| self.timeout.clone());
        if self.broken {
            return Err(broken());
        }
        let index = self.count;
        if index + 1 >= self.parties {
            self.ended.push((self.generation, true));
            self.generation += 1;
            self.count = 0;
            return Ok(Outcome::Done(PyValue::Int(index as i64)));
        }
        // Python's `Condition.wait_for`: the timeout added to the clock,
        // then waited (a timeout that is not positive is a last look).
        let wait = match &timeout {
            None => None,
            Some(t) => {
                let secs = super::sync::added_to_clock(t)?;
                if secs.is_nan() {
                    // CPython's server spins for ever.
                    return Err(("ValueError", "Invalid value NaN (not a number)".into()));
                }
                if secs <= 0.0 {
                    self.break_now();
                    return Err(broken());
                }
                super::sync::condition_wait(Some(t))?
            }
        };
        self.count += 1;
        let generation = self.generation;
        Ok(Outcome::Wait(Wait::Barrier { generation, index }, wait))
    }

    /// A waiter of `generation` timed out: the barrier breaks, if that
    /// generation is still under way.
    pub(super) fn timed_out(&mut self, generation: u64) {
        if generation == self.generation && !self.broken {
            self.break_now();
        }
    }

    /// Calls `abort`, `reset` or `__getattribute__`.
    pub(super) fn call(
        &mut self,
        method: &str,
        args: Vec<PyValue>,
        kwds: Vec<(PyValue, PyValue)>,
    ) -> Result<PyValue, Exception> {
        if method == "__getattribute__" {
            // A slot wrapper's checks of its arguments.
            if !kwds.is_empty() {
                return Err((
                    "TypeError",
                    "wrapper __getattribute__() takes no keyword arguments".into(),
                ));
            }
            if args.len() != 1 {
                return Err((
                    "TypeError",
                    format!("expected 1 argument, got {}", args.len()),
                ));
            }
        }
        let a = Args::of("Barrier", method, args, kwds);
        match method {
            "abort" => {
                a.bind(&[], 0)?;
                self.break_now();
                Ok(PyValue::None)
            }
            "reset" => {
                a.bind(&[], 0)?;
                if self.count > 0 {
                    self.ended.push((self.generation, false));
                }
                self.generation += 1;
                self.count = 0;
                self.broken = false;
                Ok(PyValue::None)
            }
            _ => {
                let name = a.bind(&["name"], 1)?.pop().flatten();
                match name {
                    Some(PyValue::Str(n)) if n == "parties" => Ok(self.given.clone()),
                    Some(PyValue::Str(n)) if n == "n_waiting" => {
                        Ok(PyValue::Int(self.count as i64))
                    }
                    Some(PyValue::Str(n)) if n == "broken" => Ok(PyValue::Bool(self.broken)),
                    Some(PyValue::Str(n)) => Err((
                        "AttributeError",
                        format!("'Barrier' object has no attribute '{n}'"),
                    )),
                    Some(other) => Err((
                        "TypeError",
                        format!("attribute name must be string, not '{}'", other.type_name()),
                    )),
                    None => Err(("TypeError", "no attribute name".into())),
                }
            }
        }
    }

    /// The generations that ended since the last look, and whether each
    /// was released.
    pub(super) fn ended(&mut self) -> Vec<(u64, bool)> {
        std::mem::take(&mut self.ended)
    }

    /// Python's `repr`.
    pub(super) fn repr(&self) -> String {
        if self.broken {
            return "<threading.Barrier at 0x0: broken>".into();
        }
        format!(
            "<threading.Barrier at 0x0: waiters={}/{}>",
            self.count, self.given
        )
    }
}
