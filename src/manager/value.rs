//! [`PyValue`], the dynamic value a manager stores (Python's basic types),
//! its conversions from Rust's basic types, and its Python representation.
//!
//! How values compare and hash is in `compare`; how typed Rust values turn
//! into `PyValue`s and back is in `ser` and `de`.

use std::fmt::{self, Write as _};

use super::protocol::Kind;
pub use super::refs::ProxyRef;

/// A dynamic value, as a manager stores it: Python's `None`, `bool`, `int`,
/// `float`, `str`, `bytes`, `list`, `tuple`, `dict` (in insertion order),
/// `set` and `frozenset`, and an inert record of any other object a Python
/// client sends ([`PyObject`]).
///
/// Use it as a proxy's key or value type where a Python program would mix
/// types, as in `{1: '1', '2': 2, 0.25: None}`; `From` converts Rust's
/// basic types, and `Display` prints a value as Python's `repr` does.
/// (An `int` that fits 64 bits is an `Int`, a larger one a `BigInt`;
/// `u64`, `usize` and `i128` have no `From`, convert them with
/// `i64::try_from`.)
///
/// Equality and hashing are Python's: `1`, `1.0` and `true` are equal and
/// hash alike, ints and floats compare exactly, a NaN equals nothing (not
/// even itself, as two NaNs decoded from two requests are two objects in
/// Python). Sets compare regardless of order, a `set` equal to a
/// `frozenset` with the same items; a [`PyObject`] equals only itself,
/// except `complex`, `slice`, `range`, `bytearray` and some of the
/// standard library's types (an `OrderedDict`, `defaultdict` or `Counter`
/// equals a dict with its items, a `deque` another with its items), which
/// compare by value as in Python. Dicts compare whatever their order, as in Python;
/// unlike Python, lists, dicts and sets may be dict keys. Decoding refuses values nested deeper than
/// [`MAX_DEPTH`](super::MAX_DEPTH) containers, so that no walk over a value can exhaust the
/// stack.
///
/// # Example
/// ```
/// use multiproc::{Manager, PyValue};
/// let manager = Manager::start()?;
/// let d = manager.dict::<PyValue, PyValue>()?;
/// d.set(1.into(), "1".into())?;
/// d.set("2".into(), 2.into())?;
/// d.set(0.25.into(), PyValue::None)?;
/// assert_eq!(d.get(&1.0.into())?, Some(PyValue::from("1")));
/// assert_eq!(d.to_string(), "{1: '1', '2': 2, 0.25: None}");
/// # Ok::<(), multiproc::Error>(())
/// ```
// The wire encoding is the derived one; the name tells the serde bridge of
// `ser` and `de` that a `PyValue` passes through, so that it converts as
// itself rather than as an enum.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename = "$multiproc::PyValue")]
pub enum PyValue {
    /// `None` (and Rust's `()`, `None`).
    None,
    /// `bool`.
    Bool(bool),
    /// `int` (64-bit).
    Int(i64),
    /// `float`.
    Float(f64),
    /// `str`.
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `list` (Rust sequences).
    List(Vec<PyValue>),
    /// `tuple` (Rust tuples).
    Tuple(Vec<PyValue>),
    /// `dict` (Rust maps and structs), in insertion order.
    Dict(Vec<(PyValue, PyValue)>),
    /// Another object of the same manager: a proxy stored in a dict, list
    /// or namespace (Python's nested proxies). The container holds a
    /// reference, so the object lives while it is stored anywhere.
    Proxy(ProxyRef),
    /// An `int` outside `i64`: its little-endian two's complement bytes,
    /// as short as they can be (an int that fits `i64` is always `Int`).
    BigInt(Vec<u8>),
    /// `set`: distinct items, in no particular order.
    Set(Vec<PyValue>),
    /// `frozenset`: distinct items, in no particular order.
    FrozenSet(Vec<PyValue>),
    /// An object of another class (`complex`, `slice`, an exception, a
    /// user's dataclass), kept as the pickle describes it and never
    /// instantiated.
    Object(Box<PyObject>),
}

/// An object of a class the manager does not model, as a Python client
/// pickled it: the class, the arguments it is made from, and its state.
/// The manager never imports the class nor calls anything: the record is
/// inert, and pickles back to the same object for the client.
///
/// Two records compare equal only if they are the same object (a copy of
/// one stored value), except `complex`, `slice`, `range`, `bytearray` and
/// the standard library's value types (`datetime`, `Decimal`, `Fraction`,
/// `OrderedDict`, `Counter`, `defaultdict`, `deque`), which compare by
/// what they are made of, as in Python.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PyObject {
    /// The class's (or function's) module: `builtins`, `__main__`, ….
    pub(crate) module: String,
    /// The class's qualified name.
    pub(crate) name: String,
    /// The arguments of the call (`REDUCE`) or of `cls.__new__` (`NEWOBJ`).
    #[serde(deserialize_with = "super::limits::bounded_vec")]
    pub(crate) args: Vec<PyValue>,
    /// Made by `cls.__new__(cls, *args)` (pickle's `NEWOBJ`) rather than
    /// by calling `cls(*args)` (`REDUCE`).
    pub(crate) new: bool,
    /// The keyword arguments of `cls.__new__` (`NEWOBJ_EX`).
    pub(crate) kwargs: Option<Vec<(PyValue, PyValue)>>,
    /// What `__setstate__` gets (`BUILD`).
    pub(crate) state: Option<PyValue>,
    /// Items appended after construction (a `list` subclass's).
    #[serde(deserialize_with = "super::limits::bounded_vec")]
    pub(crate) list_items: Vec<PyValue>,
    /// Items set after construction (a `dict` subclass's).
    #[serde(deserialize_with = "super::limits::bounded_vec")]
    pub(crate) dict_items: Vec<(PyValue, PyValue)>,
    /// The class or function itself (a bare pickled global such as
    /// `builtins.len`), not an instance of it.
    pub(crate) global: bool,
    /// Which object this is: copies of one record share it.
    pub(crate) identity: u64,
}

/// The identity of the next [`PyObject`] made.
static IDENTITIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl PyObject {
    /// An empty record of `module.name`, a new object.
    fn blank(module: &str, name: &str) -> PyObject {
        PyObject {
            module: module.into(),
            name: name.into(),
            args: Vec::new(),
            new: false,
            kwargs: None,
            state: None,
            list_items: Vec::new(),
            dict_items: Vec::new(),
            global: false,
            identity: IDENTITIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The object `module.name(*args)` (pickled with `REDUCE`), e.g.
    /// `PyObject::call("builtins", "KeyError", vec!["k".into()])`.
    pub(crate) fn call(module: &str, name: &str, args: Vec<PyValue>) -> PyObject {
        PyObject {
            args,
            ..PyObject::blank(module, name)
        }
    }

    /// The object `module.name.__new__(cls, *args)` with `state` set
    /// (pickled with `NEWOBJ` and `BUILD`), e.g. a `Namespace` with its
    /// attributes as a dict, or a `Token` with its 3-tuple.
    pub(crate) fn instance(
        module: &str,
        name: &str,
        args: Vec<PyValue>,
        state: Option<PyValue>,
    ) -> PyObject {
        PyObject {
            args,
            new: true,
            state,
            ..PyObject::blank(module, name)
        }
    }

    /// The class or function `module.name` itself.
    pub(crate) fn global(module: &str, name: &str) -> PyObject {
        PyObject {
            global: true,
            ..PyObject::blank(module, name)
        }
    }

    /// `multiprocessing.managers.Token(typeid, address, ident)`, as a
    /// manager pickles it: `ident` is the object's id in hex.
    pub(crate) fn token(kind: Kind, id: super::protocol::Id, address: &PyValue) -> PyObject {
        PyObject::instance(
            "multiprocessing.managers",
            "Token",
            Vec::new(),
            Some(PyValue::Tuple(vec![
                PyValue::Str(kind.typeid().into()),
                address.clone(),
                PyValue::Str(format!("{id:x}")),
            ])),
        )
    }

    /// Whether this is an instance of `module.name`.
    pub(crate) fn is(&self, module: &str, name: &str) -> bool {
        !self.global && self.module == module && self.name == name
    }

    /// The name Python's messages give the standard library's types
    /// written in C, with their module (`'collections.deque'`,
    /// `'decimal.Decimal'`); `None` for the others, which go by their
    /// class's name (`'Counter'`, `'Fraction'`).
    fn c_type_name(&self) -> Option<&'static str> {
        Some(match (self.module.as_str(), self.name.as_str()) {
            ("collections", "deque") => "collections.deque",
            ("collections", "defaultdict") => "collections.defaultdict",
            ("collections", "OrderedDict") => "collections.OrderedDict",
            ("datetime", "datetime") => "datetime.datetime",
            ("datetime", "date") => "datetime.date",
            ("datetime", "time") => "datetime.time",
            ("datetime", "timedelta") => "datetime.timedelta",
            ("datetime", "timezone") => "datetime.timezone",
            ("decimal", "Decimal") => "decimal.Decimal",
            _ => return None,
        })
    }

    /// What a bare global of the `builtins` module is, if not a class:
    /// one of its two constants that pickle by name (`Ellipsis`,
    /// `NotImplemented`) or one of its functions (`len`), by CPython 3.13's
    /// `builtins` (`open` is `io.open`).
    fn builtin_global(&self) -> Option<BuiltinGlobal> {
        /// The functions of `builtins`, in order (for a binary search).
        const FUNCTIONS: [&str; 45] = [
            "__build_class__",
            "__import__",
            "abs",
            "aiter",
            "all",
            "anext",
            "any",
            "ascii",
            "bin",
            "breakpoint",
            "callable",
            "chr",
            "compile",
            "delattr",
            "dir",
            "divmod",
            "eval",
            "exec",
            "format",
            "getattr",
            "globals",
            "hasattr",
            "hash",
            "hex",
            "id",
            "input",
            "isinstance",
            "issubclass",
            "iter",
            "len",
            "locals",
            "max",
            "min",
            "next",
            "oct",
            "open",
            "ord",
            "pow",
            "print",
            "repr",
            "round",
            "setattr",
            "sorted",
            "sum",
            "vars",
        ];
        if !self.global || self.module != "builtins" {
            return None;
        }
        match self.name.as_str() {
            "Ellipsis" | "NotImplemented" => Some(BuiltinGlobal::Constant),
            name if FUNCTIONS.binary_search(&name).is_ok() => Some(BuiltinGlobal::Function),
            _ => None,
        }
    }

    /// The name of the type of a bare global (a class's is `type`), as
    /// Python's messages give it.
    fn global_type_name(&self) -> &'static str {
        match (self.builtin_global(), self.name.as_str()) {
            (Some(BuiltinGlobal::Constant), "Ellipsis") => "ellipsis",
            (Some(BuiltinGlobal::Constant), _) => "NotImplementedType",
            (Some(BuiltinGlobal::Function), _) => "builtin_function_or_method",
            (None, _) => "type",
        }
    }

    /// Whether this is an instance of the builtin `name`.
    pub(crate) fn is_builtin(&self, name: &str) -> bool {
        self.is("builtins", name)
    }

    /// The objects compared by value (what they are made of) rather than
    /// by identity: the builtins `complex`, `slice`, `range` and
    /// `bytearray`, and some of the standard library's value types that a
    /// pickle may make (`datetime`, `Decimal`, `Fraction`, `pathlib`'s
    /// paths; `OrderedDict`, `deque`, `Counter` and `defaultdict` compare
    /// by their items, see `PyValue::mapping`).
    pub(crate) fn by_value(&self) -> bool {
        !self.global
            && (super::pickle::is_pathlib(&self.module, &self.name)
                || matches!(
                    (self.module.as_str(), self.name.as_str()),
                    ("builtins", "complex" | "slice" | "range" | "bytearray")
                        | (
                            "datetime",
                            "datetime" | "date" | "time" | "timedelta" | "timezone"
                        )
                        | ("decimal", "Decimal")
                        | ("fractions", "Fraction")
                ))
    }

    /// What a `range(start, stop, step)` (as the decoder leaves it: three
    /// ints) is compared and hashed by, as Python's: its length, its start
    /// if it has items and its step if it has more than one (so
    /// `range(0) == range(5, 5)` and `range(0, 3, 2) == range(0, 4, 2)`).
    pub(crate) fn range_key(&self) -> Option<(u128, i64, i64)> {
        let [PyValue::Int(start), PyValue::Int(stop), PyValue::Int(step)] = self.args[..] else {
            return None;
        };
        if !self.is_builtin("range") || self.global || step == 0 {
            return None;
        }
        let span = i128::from(stop) - i128::from(start);
        let len = if (step > 0) == (span > 0) && span != 0 {
            span.unsigned_abs()
                .div_ceil(i128::from(step).unsigned_abs())
        } else {
            0
        };
        Some(match len {
            0 => (0, 0, 0),
            1 => (1, start, 0),
            _ => (len, start, step),
        })
    }

    /// What a `pathlib` path compares by, as Python's do: its flavour
    /// (Windows or not) and its normalised text (a path pickles as its
    /// parts up to Python 3.12 and as the strings it was made of from 3.13,
    /// so that `Path("a//b")`, `Path("a", "b")` and `PurePosixPath("./a/b")`
    /// arrive as different arguments). A POSIX path drops empty and `.`
    /// parts and restarts at an absolute one; a Windows path is compared
    /// without case, with `/` as `\` and runs of separators as one past
    /// its start.
    pub(crate) fn path_key(&self) -> Option<(bool, String)> {
        if self.global || !super::pickle::is_pathlib(&self.module, &self.name) {
            return None;
        }
        let parts = self
            .args
            .iter()
            .map(|a| match a {
                PyValue::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .collect::<Option<Vec<&str>>>()?;
        if self.name.contains("Windows") {
            // Joined as Python joins them: a drive (`C:`) or a part ending
            // in a separator takes the next part without one.
            let mut joined = String::new();
            for p in parts {
                let p = p.replace('/', "\\").to_lowercase();
                if !(joined.is_empty() || joined.ends_with(['\\', ':'])) {
                    joined.push('\\');
                }
                joined.push_str(&p);
            }
            let lead = joined.len() - joined.trim_start_matches('\\').len();
            let mut key = "\\".repeat(lead.min(2));
            let rest = joined[lead..].split('\\').filter(|p| !p.is_empty());
            key.push_str(&rest.collect::<Vec<_>>().join("\\"));
            return Some((true, key));
        }
        let mut root = "";
        let mut kept: Vec<&str> = Vec::new();
        for p in parts {
            if p.starts_with('/') {
                root = if p.starts_with("//") && !p.starts_with("///") {
                    "//"
                } else {
                    "/"
                };
                kept.clear();
            }
            kept.extend(p.split('/').filter(|s| !s.is_empty() && *s != "."));
        }
        if root.is_empty() && kept.is_empty() {
            return Some((false, ".".into()));
        }
        Some((false, format!("{root}{}", kept.join("/"))))
    }

    /// Whether two objects compared by value are made of equal parts.
    pub(crate) fn same_value(&self, other: &PyObject) -> bool {
        // The other's text normalised only if this is a path too.
        if let Some(a) = self.path_key() {
            if let Some(b) = other.path_key() {
                return a == b;
            }
        }
        self.module == other.module
            && self.name == other.name
            && self.args == other.args
            && self.kwargs == other.kwargs
            && self.state == other.state
            && self.list_items == other.list_items
            && self.dict_items == other.dict_items
    }
}

/// The name [`PyValue`]'s `Serialize` gives its enum (see there).
pub(crate) const VALUE_TOKEN: &str = "$multiproc::PyValue";

impl PyValue {
    /// Drops `self` as dropping it does, but the scalars directly inside it
    /// without a call each: a `PyValue`'s drop glue saves and restores six
    /// registers even for an int, most of the work of dropping a batch's
    /// thousand ints.
    #[inline]
    pub(crate) fn drop_batch(self) {
        match self {
            PyValue::List(vs) | PyValue::Tuple(vs) | PyValue::Set(vs) | PyValue::FrozenSet(vs) => {
                drop_values(vs);
            }
            PyValue::Dict(pairs) => drop_pairs(pairs),
            other => drop_value(other),
        }
    }

    /// The Python type name (`"int"`, `"str"`, `"DictProxy"`, …).
    pub fn type_name(&self) -> &str {
        match self {
            PyValue::None => "NoneType",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::Bytes(_) => "bytes",
            PyValue::List(_) => "list",
            PyValue::Tuple(_) => "tuple",
            PyValue::Dict(_) => "dict",
            PyValue::Proxy(r) => r.kind.proxy_name(),
            PyValue::BigInt(_) => "int",
            PyValue::Set(_) => "set",
            PyValue::FrozenSet(_) => "frozenset",
            PyValue::Object(o) if o.global => o.global_type_name(),
            PyValue::Object(o) => o
                .c_type_name()
                .unwrap_or_else(|| o.name.rsplit('.').next().unwrap_or(&o.name)),
        }
    }

    /// A dict of `items`, in their order (Python's `dict(items)`, but
    /// keeping a repeated key each time).
    pub fn dict<K: Into<PyValue>, V: Into<PyValue>>(
        items: impl IntoIterator<Item = (K, V)>,
    ) -> PyValue {
        PyValue::Dict(
            items
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// A short Python representation for error messages: at most about
    /// [`REPR_MAX`] characters, however large or deep the value.
    pub(crate) fn repr(&self) -> String {
        let mut out = String::new();
        self.write_repr(&mut out, REPR_MAX);
        if out.len() > REPR_MAX {
            out.truncate(floor_boundary(&out, REPR_MAX));
            out.push_str("...");
        }
        out
    }

    /// Python's `repr`, into `out`; once `out` is longer than `max`, the
    /// items left are skipped (and strings are cut to `max`).
    fn write_repr(&self, out: &mut String, max: usize) {
        if out.len() > max {
            return;
        }
        let items = |out: &mut String, open: &str, close: &str, vs: &[PyValue]| {
            out.push_str(open);
            for (i, v) in vs.iter().enumerate() {
                if out.len() > max {
                    break;
                }
                if i > 0 {
                    out.push_str(", ");
                }
                v.write_repr(out, max);
            }
            out.push_str(close);
        };
        match self {
            PyValue::None => out.push_str("None"),
            PyValue::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
            // Writing to a String cannot fail.
            PyValue::Int(i) => {
                let _ = write!(out, "{i}");
            }
            PyValue::Float(f) => write_float(out, *f),
            PyValue::Str(s) => write_str(out, &s[..floor_boundary(s, max)]),
            PyValue::Bytes(b) => write_bytes(out, &b[..b.len().min(max)]),
            PyValue::List(v) => items(out, "[", "]", v),
            // A tuple of one is `(1,)`.
            PyValue::Tuple(v) if v.len() == 1 => items(out, "(", ",)", v),
            PyValue::Tuple(v) => items(out, "(", ")", v),
            PyValue::Dict(d) => {
                out.push('{');
                for (i, (k, v)) in d.iter().enumerate() {
                    if out.len() > max {
                        break;
                    }
                    if i > 0 {
                        out.push_str(", ");
                    }
                    k.write_repr(out, max);
                    out.push_str(": ");
                    v.write_repr(out, max);
                }
                out.push('}');
            }
            PyValue::Proxy(r) => {
                let _ = write!(out, "{r}");
            }
            PyValue::BigInt(b) => write_bigint(out, b),
            PyValue::Set(v) if v.is_empty() => out.push_str("set()"),
            PyValue::Set(v) => items(out, "{", "}", v),
            PyValue::FrozenSet(v) if v.is_empty() => out.push_str("frozenset()"),
            PyValue::FrozenSet(v) => items(out, "frozenset({", "})", v),
            PyValue::Object(o) => o.write_repr(out, max),
        }
    }
}

impl PyObject {
    /// Python's `repr` of the builtins the manager knows, and
    /// `<module.Name object>` for the others.
    fn write_repr(&self, out: &mut String, max: usize) {
        let args = &self.args;
        let arg = |i: usize| args.get(i).unwrap_or(&PyValue::None);
        let call = |out: &mut String, name: &str, args: &[PyValue]| {
            out.push_str(name);
            out.push('(');
            for (i, v) in args.iter().enumerate() {
                if out.len() > max {
                    break;
                }
                if i > 0 {
                    out.push_str(", ");
                }
                v.write_repr(out, max);
            }
            out.push(')');
        };
        if self.global {
            match (self.module.as_str(), self.builtin_global()) {
                (_, Some(BuiltinGlobal::Constant)) => out.push_str(&self.name),
                (_, Some(BuiltinGlobal::Function)) => {
                    let _ = write!(out, "<built-in function {}>", self.name);
                }
                ("builtins", _) => {
                    let _ = write!(out, "<class '{}'>", self.name);
                }
                (module, None) => {
                    let _ = write!(out, "<class '{module}.{}'>", self.name);
                }
            }
            return;
        }
        if self.module != "builtins" {
            let _ = write!(out, "<{}.{} object>", self.module, self.name);
            return;
        }
        match self.name.as_str() {
            "complex" => write_complex(out, arg(0), arg(1)),
            "slice" => call(
                out,
                "slice",
                &[arg(0).clone(), arg(1).clone(), arg(2).clone()],
            ),
            "range" => match args.get(2) {
                Some(PyValue::Int(1)) | None => call(out, "range", &args[..args.len().min(2)]),
                Some(_) => call(out, "range", args),
            },
            "bytearray" if args.is_empty() => out.push_str("bytearray(b'')"),
            "bytearray" => call(out, "bytearray", args),
            // An exception: `KeyError('k')`.
            name => call(out, name, args),
        }
    }
}

/// What a bare global of the `builtins` module is, if not a class.
#[derive(Clone, Copy)]
enum BuiltinGlobal {
    /// `Ellipsis` or `NotImplemented`.
    Constant,
    /// A function, such as `len`.
    Function,
}

/// Python's `repr` of `complex(real, imag)`: `(1+2j)`, `2j`, `(-0-1j)`.
fn write_complex(out: &mut String, real: &PyValue, imag: &PyValue) {
    let part = |v: &PyValue| {
        let f = match *v {
            PyValue::Float(f) => f,
            PyValue::Int(i) => i as f64,
            PyValue::Bool(b) => f64::from(u8::from(b)),
            _ => 0.0,
        };
        let mut s = String::new();
        write_float(&mut s, f);
        if let Some(whole) = s.strip_suffix(".0") {
            s.truncate(whole.len());
        }
        (f, s)
    };
    let (re, re_s) = part(real);
    let (_, im_s) = part(imag);
    if re == 0.0 && re.is_sign_positive() {
        let _ = write!(out, "{im_s}j");
    } else {
        let sign = if im_s.starts_with('-') { "" } else { "+" };
        let _ = write!(out, "({re_s}{sign}{im_s}j)");
    }
}

/// The most 32-bit limbs an int [`write_bigint`] writes in decimal has
/// (about Python's 4300 digits); a longer one prints as its size.
const DECIMAL_LIMBS: usize = 1800 / 4;

/// The most digits Python prints of an int (`sys.get_int_max_str_digits()`
/// by default).
const MAX_STR_DIGITS: usize = 4300;

/// About the work of writing the int of `bytes` in decimal, in a
/// [`Budget`](super::limits::Budget)'s steps: its repeated division takes
/// a pass over the limbs left for each 9 digits, about `len² / 30` divisions
/// for `len` bytes (a list of 12,000 ints of 1750 bytes kept the server
/// seconds for its `repr`), each a fraction of a step.
pub(crate) fn decimal_work(bytes: &[u8]) -> usize {
    if bytes.len() > DECIMAL_LIMBS * 4 + 8 {
        return 1;
    }
    bytes.len() * bytes.len() / 64
}

/// Python's `repr` of an int given as little-endian two's complement
/// bytes. Python refuses to print ints of more than 4300 digits; those
/// print as `<int of N bits>` here.
fn write_bigint(out: &mut String, bytes: &[u8]) {
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    // The magnitude, as little-endian u32 limbs.
    let mut limbs: Vec<u32> = Vec::with_capacity(bytes.len() / 4 + 1);
    let mut carry = 1u64;
    for chunk in bytes.chunks(4) {
        let mut word = [if negative { 0xff } else { 0 }; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        let mut w = u32::from_le_bytes(word);
        if negative {
            let sum = u64::from(!w) + carry;
            w = sum as u32;
            carry = sum >> 32;
        }
        limbs.push(w);
    }
    while limbs.last() == Some(&0) {
        limbs.pop();
    }
    let bits = limbs.len() * 32;
    if limbs.len() > DECIMAL_LIMBS {
        let _ = write!(out, "<int of {bits} bits>");
        return;
    }
    // Repeated division by 10**9.
    let mut chunks = Vec::new();
    while !limbs.is_empty() {
        let mut rem = 0u64;
        for l in limbs.iter_mut().rev() {
            let cur = (rem << 32) | u64::from(*l);
            *l = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        chunks.push(rem as u32);
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
    }
    // Python's limit is on the digits, which the limbs only bound.
    let digits = chunks
        .last()
        .map_or(1, |top| top.checked_ilog10().unwrap_or(0) as usize + 1)
        + 9 * chunks.len().saturating_sub(1);
    if digits > MAX_STR_DIGITS {
        let _ = write!(out, "<int of {bits} bits>");
        return;
    }
    if negative {
        out.push('-');
    }
    match chunks.split_last() {
        None => out.push('0'),
        Some((top, rest)) => {
            let _ = write!(out, "{top}");
            for c in rest.iter().rev() {
                let _ = write!(out, "{c:09}");
            }
        }
    }
}

/// Python's `repr`: `{1: '1', '2': 2, 0.25: None}`, `[9, 8, 7]`, `(1,)`,
/// `b'\x00'`, `1e+16`, `True`.
impl fmt::Display for PyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write_repr(&mut out, usize::MAX);
        f.write_str(&out)
    }
}

/// As Python prints a proxy: `<DictProxy object 1234>` (its object's id).
impl fmt::Display for ProxyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} object {}>", self.kind.proxy_name(), self.id)
    }
}

impl Kind {
    /// The name of the proxy type of this kind.
    pub(crate) fn proxy_name(self) -> &'static str {
        match self {
            Kind::Dict => "DictProxy",
            Kind::List => "ListProxy",
            Kind::Namespace => "NamespaceProxy",
            Kind::Iterator => "IteratorProxy",
            Kind::Queue | Kind::JoinableQueue => "AutoProxy",
        }
    }

    /// The typeid of a manager's `Token` for this kind (what a Python
    /// client calls `create` with).
    pub(crate) fn typeid(self) -> &'static str {
        match self {
            Kind::Dict => "dict",
            Kind::List => "list",
            Kind::Namespace => "Namespace",
            Kind::Iterator => "Iterator",
            Kind::Queue => "Queue",
            Kind::JoinableQueue => "JoinableQueue",
        }
    }

    /// The kind of the typeid `typeid`, if it is one of this manager's.
    pub(crate) fn from_typeid(typeid: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.typeid() == typeid)
            .or_else(|| super::refs::registered_typeid(typeid))
    }
}

/// Python's `repr` of a float: the shortest digits that read back as the
/// same float, positional from 1e-4 up to 1e16 and with an exponent
/// (`1e+16`, `1.5e-05`) outside, always with a `.0` or an exponent.
fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        return out.push_str("nan");
    }
    if f.is_infinite() {
        return out.push_str(if f > 0.0 { "inf" } else { "-inf" });
    }
    let (digits, exp) = shortest_digits(f.abs());
    if f.is_sign_negative() {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        } else {
            // Within 0..16: the digits before the point.
            let whole = exp as usize + 1;
            if digits.len() <= whole {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', whole - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..whole]);
                out.push('.');
                out.push_str(&digits[whole..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        // Writing to a String cannot fail.
        let _ = write!(out, "e{sign}{:02}", exp.unsigned_abs());
    }
}

/// The shortest digits that read back as `f` (finite, not negative), as
/// Python's `repr` picks them, and the decimal exponent of the first:
/// `("125", -7)` for `1.25e-07`, `("0", 0)` for zero.
fn shortest_digits(f: f64) -> (String, i32) {
    // Rust's `{:e}` gives the shortest round-trip digits (`1.25e-7`), the
    // nearest to `f` of them; but of two equally near, it gives the upper
    // one, where Python gives the even one.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mantissa.chars().filter(|&c| c != '.').collect();
    let last = digits.as_bytes().last().map_or(0, |&d| d - b'0');
    if digits.len() > 1 && last % 2 == 1 {
        let lower = format!("{}{}", &digits[..digits.len() - 1], last - 1);
        // `f` halfway between the two: `lower` followed by a 5, exactly.
        let halfway = format!("{lower}5")
            .parse::<u64>()
            .is_ok_and(|half| equals_decimal(f, half, exp - lower.len() as i32));
        if halfway {
            digits = lower;
        }
    }
    (digits, exp)
}

/// Whether `f` (finite, not negative) is exactly `digits × 10^exp`.
fn equals_decimal(f: f64, digits: u64, exp: i32) -> bool {
    let bits = f.to_bits();
    let (biased, fraction) = ((bits >> 52) as i32, bits & ((1 << 52) - 1));
    // `f` is `m × 2^e2`.
    let (m, e2) = match biased {
        0 => (fraction, -1074),
        _ => (fraction | 1 << 52, biased - 1075),
    };
    // 5^27 is the largest power of 5 below 2^63; past it neither side's
    // factors of 5 can match (`m` < 2^53, `digits` < 10^19).
    if exp.unsigned_abs() > 27 || m == 0 || digits == 0 {
        return m == 0 && digits == 0;
    }
    let five = 5u128.pow(exp.unsigned_abs());
    // digits × 5^exp × 2^exp = m × 2^e2, with the 5s moved to the side
    // where their power is positive: both sides then whole numbers times
    // powers of 2, compared as odd part and power of 2.
    let (left, right) = if exp >= 0 {
        (u128::from(digits) * five, u128::from(m))
    } else {
        (u128::from(digits), u128::from(m) * five)
    };
    let split = |n: u128, power: i32| (n >> n.trailing_zeros(), power + n.trailing_zeros() as i32);
    split(left, exp) == split(right, e2)
}

/// Python's `repr` of a str: in single quotes unless it holds a single
/// quote and no double one; control characters escaped.
fn write_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            // Writing to a String cannot fail.
            c if !printable(c) => {
                let _ = match c as u32 {
                    n @ ..0x100 => write!(out, "\\x{n:02x}"),
                    n @ ..0x10000 => write!(out, "\\u{n:04x}"),
                    n => write!(out, "\\U{n:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `str.isprintable` for one character, which `repr` escapes
/// when false: not a control, format, private-use or separator character
/// (space excepted). Python also escapes the code points its Unicode
/// version leaves unassigned; those print as themselves here.
fn printable(c: char) -> bool {
    /// Unicode 15's format characters (category Cf), as Python 3.12 knows them.
    const FORMAT: [(u32, u32); 21] = [
        (0x00AD, 0x00AD),
        (0x0600, 0x0605),
        (0x061C, 0x061C),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x180E, 0x180E),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x2064),
        (0x2066, 0x206F),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
    ];
    let n = c as u32;
    let private_use = matches!(n, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD);
    // White_Space outside the controls is exactly the separators (Z*).
    let separator = c.is_whitespace() && c != ' ';
    !(c.is_control()
        || separator
        || private_use
        || FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&n)))
}

/// Python's `repr` of bytes: `b'...'`, with what is not printable ASCII
/// escaped.
fn write_bytes(out: &mut String, b: &[u8]) {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    out.push('b');
    out.push(quote as char);
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c as char);
            }
            0x20..=0x7e => out.push(c as char),
            // Writing to a String cannot fail.
            c => {
                let _ = write!(out, "\\x{c:02x}");
            }
        }
    }
    out.push(quote as char);
}

/// About how long an error message's representation of a value gets.
const REPR_MAX: usize = 200;

/// The largest index `<= at` that is a char boundary of `s`.
fn floor_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

macro_rules! from_int {
    ($($t:ty)*) => {$(
        /// A Python `int`.
        impl From<$t> for PyValue {
            fn from(v: $t) -> PyValue {
                PyValue::Int(v.into())
            }
        }
    )*};
}

from_int!(i8 i16 i32 i64 u8 u16 u32);

/// A Python `bool`.
impl From<bool> for PyValue {
    fn from(v: bool) -> PyValue {
        PyValue::Bool(v)
    }
}

/// A Python `float`.
impl From<f64> for PyValue {
    fn from(v: f64) -> PyValue {
        PyValue::Float(v)
    }
}

/// A Python `float`.
impl From<f32> for PyValue {
    fn from(v: f32) -> PyValue {
        PyValue::Float(v.into())
    }
}

/// A Python `str`.
impl From<&str> for PyValue {
    fn from(v: &str) -> PyValue {
        PyValue::Str(v.into())
    }
}

/// A Python `str`.
impl From<String> for PyValue {
    fn from(v: String) -> PyValue {
        PyValue::Str(v)
    }
}

/// A Python `str` of one character.
impl From<char> for PyValue {
    fn from(v: char) -> PyValue {
        PyValue::Str(v.into())
    }
}

/// `None`.
impl From<()> for PyValue {
    fn from((): ()) -> PyValue {
        PyValue::None
    }
}

/// `None`, or the value.
impl<T: Into<PyValue>> From<Option<T>> for PyValue {
    fn from(v: Option<T>) -> PyValue {
        v.map_or(PyValue::None, Into::into)
    }
}

/// A Python `list` (for `bytes`, use [`PyValue::Bytes`]).
impl<T: Into<PyValue>> From<Vec<T>> for PyValue {
    fn from(v: Vec<T>) -> PyValue {
        v.into_iter().collect()
    }
}

/// A Python `list`.
impl<T: Into<PyValue>> FromIterator<T> for PyValue {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> PyValue {
        PyValue::List(iter.into_iter().map(Into::into).collect())
    }
}

/// A Python `tuple` of two.
impl<A: Into<PyValue>, B: Into<PyValue>> From<(A, B)> for PyValue {
    fn from((a, b): (A, B)) -> PyValue {
        PyValue::Tuple(vec![a.into(), b.into()])
    }
}

/// Drops `values` as dropping the vector does, the scalars among them
/// without a call each (see [`PyValue::drop_batch`]).
pub(crate) fn drop_values(values: Vec<PyValue>) {
    values.into_iter().for_each(drop_value);
}

/// [`drop_values`] of a dict's items.
fn drop_pairs(pairs: Vec<(PyValue, PyValue)>) {
    pairs.into_iter().for_each(|(k, v)| {
        drop_value(k);
        drop_value(v);
    });
}

/// Drops `v`, without a call if it owns nothing (a `None`, bool, int or
/// float).
#[inline(always)]
fn drop_value(v: PyValue) {
    if matches!(
        v,
        PyValue::None | PyValue::Bool(_) | PyValue::Int(_) | PyValue::Float(_)
    ) {
        // Nothing to free: the glue's call is skipped.
        std::mem::forget(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_as_python_prints() {
        let d = PyValue::dict([
            (PyValue::from(1), PyValue::from("1")),
            ("2".into(), 2.into()),
            (0.25.into(), PyValue::None),
        ]);
        assert_eq!(d.to_string(), "{1: '1', '2': 2, 0.25: None}");
        assert_eq!(PyValue::from(vec![9, 8, 7]).to_string(), "[9, 8, 7]");
        let cases: [(PyValue, &str); 16] = [
            (true.into(), "True"),
            (().into(), "None"),
            (1.0.into(), "1.0"),
            ((-0.0).into(), "-0.0"),
            (1e16.into(), "1e+16"),
            (1.5e-5.into(), "1.5e-05"),
            (123456789.125.into(), "123456789.125"),
            (0.0001.into(), "0.0001"),
            (f64::NAN.into(), "nan"),
            (f64::NEG_INFINITY.into(), "-inf"),
            ("it's".into(), "\"it's\""),
            ("a'\"\n\\".into(), "'a\\'\"\\n\\\\'"),
            (PyValue::Bytes(b"a\x00'".to_vec()), "b\"a\\x00'\""),
            (PyValue::Tuple(vec![1.into()]), "(1,)"),
            ((1, "x").into(), "(1, 'x')"),
            (PyValue::List(vec![]), "[]"),
        ];
        for (v, python) in cases {
            assert_eq!(v.to_string(), python, "{v:?}");
        }
    }

    #[test]
    fn error_messages_show_a_bounded_repr() {
        let long = PyValue::List((0..10_000).map(PyValue::from).collect());
        let r = long.repr();
        assert!(r.len() < 260 && r.starts_with("[0, 1, 2") && r.ends_with("..."));
        assert_eq!(PyValue::from("k").repr(), "'k'");
    }
}
