//! The server's `Value` (and the other objects of CPython's `SyncManager`
//! that are neither containers nor queues): what each method does, as
//! CPython's server does it. A call that must wait is parked by the
//! event loop (`objects`), never blocking the server.

use super::array::{self, Array};
use super::limits::Budget;
use super::protocol::Exception;
use super::queue::Args;
use super::value::PyObject;
use super::PyValue;

/// The methods a `ValueProxy` calls (its `_exposed_`).
const VALUE_EXPOSED: &[&str] = &["get", "set"];

/// One object.
pub(super) enum Sync {
    /// CPython's `multiprocessing.managers.Value`: a value and the typecode
    /// it was made with, which nothing checks.
    Value { typecode: PyValue, value: PyValue },
    /// An `array.array` (CPython's manager's `Array`).
    Array(Array),
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
            _ => return None,
        })
    }

    /// The methods its proxy calls.
    pub(super) fn exposed(&self) -> &'static [&'static str] {
        match self {
            Sync::Value { .. } => VALUE_EXPOSED,
            Sync::Array(_) => array::EXPOSED,
        }
    }

    /// Its class, as Python names it (`<class '…'>`).
    pub(super) fn class(&self) -> &'static str {
        match self {
            Sync::Value { .. } => "multiprocessing.managers.Value",
            Sync::Array(_) => "array.array",
        }
    }

    /// Calls `method`, one of [`Sync::exposed`]: its answer or its
    /// exception.
    pub(super) fn call(
        &mut self,
        method: &str,
        args: Vec<PyValue>,
        kwds: Vec<(PyValue, PyValue)>,
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
            Sync::Array(a) => a.call(method, args, kwds),
        }
    }

    /// Python's `repr` (and `str`) of it.
    pub(super) fn repr(&self) -> String {
        match self {
            Sync::Value { typecode, value } => {
                format!("Value({}, {})", typecode.repr(), value.repr())
            }
            Sync::Array(a) => a.repr(),
        }
    }

    /// `#GETVALUE`: a copy as Python's client unpickles it, or why it
    /// cannot be pickled (as CPython's server fails to).
    pub(super) fn copy(&self) -> Result<PyValue, Exception> {
        match self {
            Sync::Value { typecode, value } => Ok(PyValue::Object(Box::new(PyObject::instance(
                "multiprocessing.managers",
                "Value",
                Vec::new(),
                Some(PyValue::Dict(vec![
                    ("_typecode".into(), typecode.clone()),
                    ("_value".into(), value.clone()),
                ])),
            )))),
            Sync::Array(a) => Ok(a.copy()),
        }
    }

    /// The values it holds (which may hold proxies).
    pub(super) fn values(&self) -> impl Iterator<Item = &PyValue> {
        match self {
            Sync::Value { typecode, value } => vec![typecode, value].into_iter(),
            Sync::Array(_) => Vec::new().into_iter(),
        }
    }
}
