//! The decoder: pickle's stack machine over an arena of nodes, then one
//! walk from the result that builds the value and charges every node it
//! builds. (Plain values are first tried in one pass, `flat`, which
//! decodes and charges them exactly as this would.)
//!
//! The stack and the memo hold indexes into the arena, and the opcodes
//! that fill a container (`APPEND`, `SETITEM`, `ADDITEMS`, `BUILD`) change
//! its node in place, so that a memoized container seen again later is the
//! same container, as in Python. Nothing is copied until `STOP`; then the
//! walk copies a node each time it is reached, so a value referenced many
//! times (`[x, x]` nested 40 deep) costs what it would cost written out,
//! and the budget refuses it long before the work explodes. A node reached
//! again inside itself (a list that contains itself) is refused.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use super::super::compare::{minimal, HashMemo};
use super::super::limits::{Budget, ANSWER_NESTING, MAX_DEPTH};
use super::super::protocol::{Exception, Id, Kind};
use super::super::refs::{self, ProxyRef};
use super::super::value::{PyObject, PyValue};
use super::flat::{one_item_a_key_below, one_item_a_key_inside};
use super::op;

/// The longest int a pickle may hold, in bytes (about 158,000 decimal
/// digits); a longer one is refused with `OverflowError`.
pub(crate) const MAX_INT_BYTES: usize = 64 << 10;

/// Decodes a pickle (protocols 2 to 5) a client sent: a value nested at
/// most [`MAX_DEPTH`] levels inside the request's tuple and its arguments
/// tuple, every node charged to `budget`.
///
/// # Errors
/// `UnpicklingError` for a malformed pickle and for a global it would
/// have to call that is not on the allowed list; `OverflowError` for an
/// int longer than [`MAX_INT_BYTES`]; `RecursionError` for a value nested
/// too deep; the budget's `MemoryError` or `RuntimeError` when it runs out.
pub(crate) fn loads(bytes: &[u8], budget: &mut Budget) -> Result<PyValue, Exception> {
    decode(bytes, budget, MAX_DEPTH + 2)
}

thread_local! {
    /// Whether a proxy of a kind of object this decoder does not know (a
    /// `Lock`'s, an `RLock`'s) decodes, as a [`SHARED_LOCK`] object (see
    /// [`loads_lock_request`]).
    static LOCK_PROXIES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The module and class of what a proxy of a `Lock`, an `RLock` (or
/// another kind this decoder does not know) decodes to in
/// [`loads_lock_request`]: an inert object of its typeid and ident, which
/// holds no reference (the server's `Condition` made of it takes one of
/// its own, or it is dropped).
pub(crate) const SHARED_LOCK: (&str, &str) = ("multiproc", "SharedLock");

/// Decodes a request as [`loads_request`] does, but a proxy of a `Lock` or
/// an `RLock` (or of another kind it does not know) is a [`SHARED_LOCK`]
/// object: for `create('Condition', lock)`, which shares the lock itself,
/// as CPython's server shares the object it unpickles such a proxy as. No
/// other request may hold one.
///
/// # Errors
/// As [`loads`].
pub(crate) fn loads_lock_request(bytes: &[u8], budget: &mut Budget) -> Result<PyValue, Exception> {
    /// Unsets [`LOCK_PROXIES`] however decoding ends (a panic included).
    struct Unset;
    impl Drop for Unset {
        fn drop(&mut self) {
            LOCK_PROXIES.set(false);
        }
    }
    LOCK_PROXIES.set(true);
    let _unset = Unset;
    loads_request(bytes, budget)
}

/// Decodes a request as [`loads`] does, except that the one dict a
/// `update` call with no keywords passes (`d.update({...})`, a batch of
/// items) keeps each item as the pickle set it, a key set twice twice:
/// the server's `update` inserts them in order, which keeps each key
/// where it was first set with the value set last, as keeping one item a
/// key would have, and a pass over the batch is saved. (A dict's own
/// pickle sets each key once; a pickle written otherwise may set one
/// twice. The general decoder, for what the one pass does not take on,
/// keeps one item a key anyway.)
///
/// # Errors
/// As [`loads`].
pub(crate) fn loads_request(bytes: &[u8], budget: &mut Budget) -> Result<PyValue, Exception> {
    let max_depth = MAX_DEPTH + 2;
    let before = budget.clone();
    let Ok((mut request, several_keys)) = super::flat::decode_as_set(bytes, budget, max_depth)
    else {
        *budget = before;
        return general(bytes, budget, max_depth);
    };
    if several_keys {
        match update_items(&mut request) {
            Some(items) => one_item_a_key_below(items),
            None => one_item_a_key_inside(&mut request),
        }
    }
    Ok(request)
}

/// The items of the dict `request` passes alone to `update`, if it is
/// such a call: `(ident, 'update', ({...},), {})`.
fn update_items(request: &mut PyValue) -> Option<&mut Vec<(PyValue, PyValue)>> {
    let PyValue::Tuple(parts) = request else {
        return None;
    };
    let [PyValue::Str(_), PyValue::Str(method), PyValue::Tuple(args), PyValue::Dict(kwds)] =
        &mut parts[..]
    else {
        return None;
    };
    match &mut args[..] {
        [PyValue::Dict(items)] if method == "update" && kwds.is_empty() => Some(items),
        _ => None,
    }
}

/// Decodes a pickle a server answered: as [`loads`], but allowing the few
/// levels an answer adds around stored values (`('#RETURN', [...])`, a
/// batch's list of answers).
///
/// # Errors
/// As [`loads`].
pub(crate) fn loads_answer(bytes: &[u8], budget: &mut Budget) -> Result<PyValue, Exception> {
    decode(bytes, budget, MAX_DEPTH + 2 + 2 * ANSWER_NESTING)
}

/// The value `v` of a reply `('#RETURN', v)` that is `None`, a bool, an
/// int of `i64` or a float, read straight from `bytes` if they are exactly
/// the pickle multiproc's server writes for it (from which
/// [`loads_answer`] decodes that pair); `None` for any other bytes, which
/// are the decoders'.
pub(crate) fn returned_scalar(bytes: &[u8]) -> Option<PyValue> {
    const RETURN: &[u8] = &[
        op::PROTO,
        4,
        op::SHORT_BINUNICODE,
        7,
        b'#',
        b'R',
        b'E',
        b'T',
        b'U',
        b'R',
        b'N',
    ];
    let scalar = bytes
        .strip_prefix(RETURN)?
        .strip_suffix(&[op::TUPLE2, op::STOP])?;
    let mut r = Reader::new(scalar);
    let code = r.byte()?;
    let v = r.scalar(code)?;
    r.rest.is_empty().then_some(v)
}

/// The parts of a request `(ident, method, args, {})`, read straight from
/// its bytes by [`request_parts`].
#[derive(Debug, PartialEq)]
pub(crate) struct RequestParts<'a> {
    /// The object's ident (`None` for a call of the server's).
    pub(crate) ident: Option<&'a str>,
    pub(crate) method: &'a str,
    /// The positional arguments: scalars and lists of scalars, or an
    /// `update`'s one dict of scalars (a key set twice there twice).
    pub(crate) args: Vec<PyValue>,
    /// What decoding the request charges a budget: memory, then work (as
    /// [`loads`] would have charged it).
    pub(crate) charges: (usize, usize),
}

/// The most arguments [`request_parts`] reads.
const PARTS_MAX_ARGS: usize = 8;
/// The most items of a list or an `update`'s dict [`request_parts`] reads
/// (a larger one is the decoders', which charge the budget before they
/// allocate).
const PARTS_MAX_ITEMS: usize = 4096;

/// A request read straight from `bytes` when they are exactly the pickle
/// of `(ident, method, args, {})` whose ident is a str or `None`, method
/// a str and args a tuple of at most [`PARTS_MAX_ARGS`] scalars (`None`,
/// bools, ints of `i64`, floats, short strs and bytes) or lists of
/// scalars, or an `update`'s one dict of scalars (its items as set, a key
/// set twice twice, as [`loads_request`] reads them), as CPython's
/// clients write it (protocol 4, one frame, each str and tuple memoized)
/// and multiproc's (no frame, no memo): what [`loads`] decodes from them
/// and `Request::parse` takes apart, without the tuple around them. `None`
/// for any other bytes, which are the decoders'.
pub(crate) fn request_parts(bytes: &[u8]) -> Option<RequestParts<'_>> {
    let mut r = Reader::new(bytes);
    if r.byte()? != op::PROTO || !(2..=5).contains(&r.byte()?) {
        return None;
    }
    if r.rest.first() == Some(&op::FRAME) {
        r.take(1)?;
        let framed = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
        // One frame of all the rest: anything else is the decoders'.
        if usize::try_from(framed).ok()? != r.rest.len() {
            return None;
        }
    }
    if r.byte()? != op::MARK {
        return None;
    }
    r.mark();
    let ident = match r.byte()? {
        op::NONE => {
            r.node(0);
            None
        }
        op::SHORT_BINUNICODE => Some(r.short_str()?),
        _ => return None,
    };
    if r.byte()? != op::SHORT_BINUNICODE {
        return None;
    }
    let method = r.short_str()?;
    let mut args = Vec::new();
    let marked = r.rest.first() == Some(&op::MARK);
    if marked {
        r.take(1)?;
        r.mark();
    }
    loop {
        let code = r.byte()?;
        let arg = match code {
            op::EMPTY_TUPLE if !marked && args.is_empty() => break,
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 if !marked => {
                if args.len() != usize::from(code - op::TUPLE1 + 1) {
                    return None;
                }
                break;
            }
            op::TUPLE if marked => break,
            // The batches `d.update({...})`, `l.extend([...])` and
            // `get_many` send.
            op::EMPTY_DICT if method == "update" && args.is_empty() => {
                PyValue::Dict(r.dict_items()?)
            }
            op::EMPTY_LIST => PyValue::List(r.list_items()?),
            code => r.item(code)?,
        };
        if args.len() == PARTS_MAX_ARGS {
            return None;
        }
        args.push(arg);
    }
    r.container(args.len());
    r.memoized();
    if r.byte()? != op::EMPTY_DICT {
        return None;
    }
    r.container(0);
    r.memoized();
    if r.byte()? != op::TUPLE {
        return None;
    }
    r.container(4);
    r.memoized();
    (r.rest == [op::STOP]).then_some(RequestParts {
        ident,
        method,
        args,
        charges: (r.memory, r.work),
    })
}

/// The bytes [`request_parts`] (or [`returned_scalar`]) has yet to read,
/// and what decoding those it read charges (as the one-pass decoder,
/// `flat`, charges it).
struct Reader<'a> {
    rest: &'a [u8],
    memory: usize,
    work: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader {
            rest: bytes,
            memory: 0,
            work: 0,
        }
    }

    /// The value of a scalar opcode `code` (its argument read): `None`, a
    /// bool, an int of `i64` or a float; `None` for any other opcode.
    #[inline(always)]
    fn scalar(&mut self, code: u8) -> Option<PyValue> {
        Some(match code {
            op::NONE => PyValue::None,
            op::NEWTRUE => PyValue::Bool(true),
            op::NEWFALSE => PyValue::Bool(false),
            op::BININT1 => PyValue::Int(self.byte()?.into()),
            op::BININT2 => PyValue::Int(u16::from_le_bytes(self.take(2)?.try_into().ok()?).into()),
            op::BININT => PyValue::Int(i32::from_le_bytes(self.take(4)?.try_into().ok()?).into()),
            op::LONG1 => {
                let n = usize::from(self.byte()?);
                match int_from_bytes(self.take(n)?) {
                    PyValue::Int(i) if n <= 8 => PyValue::Int(i),
                    _ => return None,
                }
            }
            op::BINFLOAT => PyValue::Float(f64::from_be_bytes(self.take(8)?.try_into().ok()?)),
            _ => return None,
        })
    }

    /// The scalar of opcode `code` (its argument read) that a request's
    /// argument or an update's key or value may be: a [`scalar`](Self::scalar),
    /// a short str or short bytes (and its `MEMOIZE`).
    #[inline(always)]
    fn item(&mut self, code: u8) -> Option<PyValue> {
        Some(match code {
            op::SHORT_BINUNICODE => PyValue::Str(self.short_str()?.into()),
            op::SHORT_BINBYTES => {
                let n = usize::from(self.byte()?);
                let b = self.take(n)?.to_vec();
                self.node(n);
                self.memoized();
                PyValue::Bytes(b)
            }
            code => {
                let v = self.scalar(code)?;
                self.node(0);
                v
            }
        })
    }

    /// The items of a dict whose `EMPTY_DICT` was read, as the pickle sets
    /// them (a key set twice is there twice); scalars all.
    fn dict_items(&mut self) -> Option<Vec<(PyValue, PyValue)>> {
        // Room for the items of the rest, if each takes four bytes (an
        // int key and value take four or more).
        let mut items = Vec::with_capacity((self.rest.len() / 4).min(PARTS_MAX_ITEMS));
        self.batches(op::SETITEMS, op::SETITEM, 2, |r, code| {
            r.pair(code, &mut items)
        })?;
        Some(items)
    }

    /// A dict's item whose key's opcode `code` was read, onto `items`:
    /// how many there are now.
    #[inline(always)]
    fn pair(&mut self, code: u8, items: &mut Vec<(PyValue, PyValue)>) -> Option<usize> {
        let k = self.item(code)?;
        let code = self.byte()?;
        items.push((k, self.item(code)?));
        Some(items.len())
    }

    /// The items of a list whose `EMPTY_LIST` was read; scalars all.
    fn list_items(&mut self) -> Option<Vec<PyValue>> {
        let mut items = Vec::with_capacity((self.rest.len() / 2).min(PARTS_MAX_ITEMS));
        self.batches(op::APPENDS, op::APPEND, 1, |r, code| {
            items.push(r.item(code)?);
            Some(items.len())
        })?;
        Some(items)
    }

    /// The batches that fill the list or dict just read (and its
    /// `MEMOIZE`), up to the end of the arguments: each `MARK`, items,
    /// then `many`; or one item, then `one` (as CPython writes a list or
    /// dict of one item). `item` reads an item (`per` values) whose first
    /// opcode is given, and says how many there are now; at most
    /// [`PARTS_MAX_ITEMS`].
    #[inline(always)]
    fn batches(
        &mut self,
        many: u8,
        one: u8,
        per: usize,
        mut item: impl FnMut(&mut Self, u8) -> Option<usize>,
    ) -> Option<()> {
        self.container(0);
        self.memoized();
        loop {
            let batch = match *self.rest.first()? {
                op::MARK => {
                    self.take(1)?;
                    self.mark();
                    true
                }
                // The next argument or the end of the arguments.
                op::TUPLE | op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => return Some(()),
                _ => false,
            };
            let mut n = 0;
            loop {
                let code = self.byte()?;
                if batch && code == many {
                    break;
                }
                if item(self, code)? > PARTS_MAX_ITEMS {
                    return None;
                }
                n += 1;
                if !batch {
                    if self.byte()? != one {
                        return None;
                    }
                    break;
                }
            }
            // The decoders' indexes of the values added, and their copies.
            self.memory += n * per * (size_of::<usize>() + size_of::<PyValue>());
        }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(taken)
    }

    /// A `MARK`.
    fn mark(&mut self) {
        self.memory += size_of::<usize>();
    }

    /// A scalar with `held` bytes on the heap: its node and its copy.
    fn node(&mut self, held: usize) {
        self.memory += NODE + size_of::<PyValue>() + 2 * held;
        self.work += 2;
    }

    /// A container of `n` items.
    fn container(&mut self, n: usize) {
        self.memory += NODE + (1 + n) * size_of::<PyValue>();
        self.work += 2;
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A `SHORT_BINUNICODE`'s str (its opcode read), and the `MEMOIZE`
    /// after it, if there is one.
    fn short_str(&mut self) -> Option<&'a str> {
        let n = usize::from(self.byte()?);
        let b = self.take(n)?;
        self.node(n);
        // Idents and method names are ASCII, checked a word at a time
        // (`from_utf8` spends a dozen instructions a byte on them).
        let s = if b.is_ascii() {
            // SAFETY: ASCII is UTF-8.
            unsafe { std::str::from_utf8_unchecked(b) }
        } else {
            std::str::from_utf8(b).ok()?
        };
        self.memoized();
        Some(s)
    }

    /// Passes a `MEMOIZE`, if there is one (its memo entry: keys are
    /// dense here).
    fn memoized(&mut self) {
        if self.rest.first() == Some(&op::MEMOIZE) {
            self.rest = &self.rest[1..];
            self.memory += 2 * size_of::<usize>();
        }
    }
}

fn decode(bytes: &[u8], budget: &mut Budget, max_depth: usize) -> Result<PyValue, Exception> {
    // Plain values in one pass; anything else (or anything wrong) from
    // the start again, with the budget as it was.
    let before = budget.clone();
    if let Ok(v) = super::flat::decode(bytes, budget, max_depth) {
        return Ok(v);
    }
    *budget = before;
    general(bytes, budget, max_depth)
}

/// The general decoder: every opcode, every error.
pub(super) fn general(
    bytes: &[u8],
    budget: &mut Budget,
    max_depth: usize,
) -> Result<PyValue, Exception> {
    // Room for a small request's nodes from the start (an opcode takes a
    // byte at least, a value two or more), so that it is not regrown node
    // by node; a larger one grows, each node charged as it is added.
    let small = (bytes.len() / 2).clamp(8, 1024);
    let mut machine = Machine {
        input: bytes,
        at: 0,
        nodes: Vec::with_capacity(small),
        stack: Vec::with_capacity(small.min(64)),
        marks: Vec::with_capacity(8),
        memo: Memo::default(),
        budget,
    };
    let root = machine.run()?;
    let _memo = HashMemo::start();
    let mut builder = Builder {
        nodes: &machine.nodes,
        open: vec![false; machine.nodes.len()],
        duplicates: Vec::new(),
        budget: machine.budget,
        max_depth,
        stack_from: stack_address(),
    };
    builder.build(root, 0)
}

/// The most stack the walk that builds a value may take: three quarters
/// of a spawned thread's default 2 MiB (the server's, when the thread
/// that starts a manager is one), the rest left to what runs around it.
/// (A list or a set nested as deep as allowed takes less even in a debug
/// build; an object more, in a debug build only.)
pub(super) const MAX_BUILD_STACK: usize = 3 << 19;

/// An address in the caller's stack frame, to measure how much stack a
/// walk has taken since.
#[inline(never)]
fn stack_address() -> usize {
    let here = 0u8;
    std::hint::black_box(&here) as *const u8 as usize
}

fn error(message: impl Into<String>) -> Exception {
    ("UnpicklingError", message.into())
}

/// An object under construction: the record without its contents, and
/// the nodes of its contents.
struct ObjectNode {
    head: PyObject,
    args: Vec<usize>,
    kwargs: Option<Vec<(usize, usize)>>,
    state: Option<usize>,
    list_items: Vec<usize>,
    dict_items: Vec<(usize, usize)>,
}

/// The memory a node takes (charged for each node made).
pub(super) const NODE: usize = size_of::<Node>();

enum Node {
    /// A value without parts: `None`, a bool, number, str or bytes.
    Scalar(PyValue),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Set(Vec<usize>),
    FrozenSet(Vec<usize>),
    /// A class or function named by `GLOBAL` or `STACK_GLOBAL`.
    Global(String, String),
    Object(Box<ObjectNode>),
    Proxy(Kind, Id),
}

/// The memo: node indexes by key. Keys are dense from 0 in what CPython
/// writes (`MEMOIZE` takes the next); others go to a map.
#[derive(Default)]
pub(super) struct Memo {
    dense: Vec<usize>,
    sparse: HashMap<u32, usize>,
    /// How many keys are set (`MEMOIZE`'s next key).
    pub(super) count: usize,
}

impl Memo {
    const UNSET: usize = usize::MAX;

    pub(super) fn insert(&mut self, key: u32, node: usize) {
        let k = key as usize;
        if k == self.dense.len() {
            if self.sparse.remove(&key).is_some() {
                self.count -= 1;
            }
            self.dense.push(node);
            self.count += 1;
        } else if let Some(slot) = self.dense.get_mut(k) {
            if *slot == Memo::UNSET {
                self.count += 1;
            }
            *slot = node;
        } else if self.sparse.insert(key, node).is_none() {
            self.count += 1;
        }
    }

    /// The memory charged for setting `key`: a key past the dense ones
    /// goes to the map, whose entry (16 bytes), control byte, spare
    /// capacity and copy while it grows cost about three times a slot.
    pub(super) fn cost(&self, key: u32) -> usize {
        let slots = if key as usize > self.dense.len() {
            6
        } else {
            2
        };
        slots * size_of::<usize>()
    }

    pub(super) fn get(&self, key: u32) -> Option<usize> {
        match self.dense.get(key as usize) {
            Some(&node) if node != Memo::UNSET => Some(node),
            _ => self.sparse.get(&key).copied(),
        }
    }
}

struct Machine<'a> {
    input: &'a [u8],
    at: usize,
    nodes: Vec<Node>,
    stack: Vec<usize>,
    /// The stack's length at each `MARK` not yet consumed.
    marks: Vec<usize>,
    memo: Memo,
    budget: &'a mut Budget,
}

/// The globals `REDUCE` may call, by what the call makes.
enum Callable {
    /// `slice`, `complex`, `range`, `bytearray`, an exception, …: an inert
    /// record of the call.
    Record,
    Set,
    FrozenSet,
    /// `list(iterable)`, as CPython's server sends dict views.
    List,
    /// `_codecs.encode(str, 'latin1')` and `bytes()`: how protocol 2
    /// pickles bytes.
    Bytes,
    RebuildProxy,
}

/// Python 3's name of a global that a protocol 2 pickle names as
/// Python 2 did (CPython's `_compat_pickle`, for the globals allowed here).
fn global_name(module: &str, name: &str) -> (String, String) {
    let module = match module {
        "__builtin__" | "exceptions" => "builtins",
        "copy_reg" => "copyreg",
        "Queue" => "queue",
        m => m,
    };
    let name = match (module, name) {
        ("builtins", "xrange") => "range",
        ("builtins", "unicode") => "str",
        ("builtins", "long") => "int",
        (_, n) => n,
    };
    (module.into(), name.into())
}

/// Whether `module.name` is one of `pathlib`'s path classes (whose module
/// is `pathlib._local` from Python 3.13).
pub(crate) fn is_pathlib(module: &str, name: &str) -> bool {
    matches!(module, "pathlib" | "pathlib._local")
        && matches!(
            name,
            "PurePath" | "PurePosixPath" | "PureWindowsPath" | "Path" | "PosixPath" | "WindowsPath"
        )
}

/// What `REDUCE` may call: nothing that runs code or reaches the system.
/// Besides the builtins of the manager protocol (`slice`, `complex`, …),
/// the exceptions of replies and a manager's `RebuildProxy`, a few value
/// types of the standard library (`datetime`, `Decimal`, `Fraction`,
/// `OrderedDict`, `deque`, `Counter`, `defaultdict`, `pathlib`'s paths)
/// that Python programs store, which become inert records.
fn callable(module: &str, name: &str) -> Option<Callable> {
    const EXCEPTIONS: &[&str] = &[
        "ArithmeticError",
        "AssertionError",
        "AttributeError",
        "BaseException",
        "BrokenPipeError",
        "BufferError",
        "ConnectionError",
        "ConnectionRefusedError",
        "ConnectionResetError",
        "EOFError",
        "Exception",
        "FileNotFoundError",
        "IndexError",
        "KeyError",
        "LookupError",
        "MemoryError",
        "NameError",
        "NotImplementedError",
        "OSError",
        "OverflowError",
        "PermissionError",
        "RecursionError",
        "ReferenceError",
        "RuntimeError",
        "StopIteration",
        "TimeoutError",
        "TypeError",
        "UnicodeError",
        "ValueError",
        "ZeroDivisionError",
    ];
    Some(match (module, name) {
        ("builtins", "slice" | "complex" | "range" | "bytearray" | "iter" | "reversed") => {
            Callable::Record
        }
        ("builtins", "set") => Callable::Set,
        ("builtins", "frozenset") => Callable::FrozenSet,
        ("builtins", "list") => Callable::List,
        ("builtins", "bytes") | ("_codecs", "encode") => Callable::Bytes,
        ("builtins", e) if EXCEPTIONS.contains(&e) => Callable::Record,
        ("_queue" | "queue", "Empty") | ("queue", "Full" | "ShutDown") => Callable::Record,
        // The standard library's value types, whose constructors only
        // build a value (the client calls them, never this server).
        ("datetime", "datetime" | "date" | "time" | "timedelta" | "timezone")
        | ("decimal", "Decimal")
        | ("fractions", "Fraction")
        | ("collections", "OrderedDict" | "deque" | "Counter" | "defaultdict") => Callable::Record,
        (module, path) if is_pathlib(module, path) => Callable::Record,
        ("multiprocessing.managers", "RebuildProxy") => Callable::RebuildProxy,
        // A Redis object's proxy (its URL, kind and name), as multiproc's
        // Rust clients store it: a record, never called.
        ("multiproc", "RedisProxy") => Callable::Record,
        _ => return None,
    })
}

impl<'a> Machine<'a> {
    /// Runs the pickle to its `STOP`: the node of its value.
    fn run(&mut self) -> Result<usize, Exception> {
        loop {
            let code = self.byte()?;
            match code {
                op::PROTO => {
                    let v = self.byte()?;
                    if !(2..=5).contains(&v) {
                        return Err(error(format!("unsupported pickle protocol: {v}")));
                    }
                }
                op::FRAME => {
                    // Framing only groups opcodes; the length must be there.
                    let n = self.uint(8)?;
                    if n > self.input.len() - self.at {
                        return Err(error("pickle data was truncated"));
                    }
                }
                op::STOP => {
                    return self
                        .stack
                        .pop()
                        .ok_or_else(|| error("unpickling stack underflow"));
                }
                op::MARK => {
                    self.budget.memory(size_of::<usize>())?;
                    self.marks.push(self.stack.len());
                }
                op::POP => {
                    if self.marks.last() == Some(&self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                op::POP_MARK => {
                    self.pop_mark()?;
                }
                op::DUP => {
                    let top = self.top()?;
                    self.budget.memory(size_of::<usize>())?;
                    self.stack.push(top);
                }
                op::NONE => self.push(Node::Scalar(PyValue::None))?,
                op::NEWTRUE => self.push(Node::Scalar(PyValue::Bool(true)))?,
                op::NEWFALSE => self.push(Node::Scalar(PyValue::Bool(false)))?,
                op::BININT => {
                    let b = self.take(4)?;
                    let i = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    self.push(Node::Scalar(PyValue::Int(i.into())))?;
                }
                op::BININT1 => {
                    let i = self.byte()?;
                    self.push(Node::Scalar(PyValue::Int(i.into())))?;
                }
                op::BININT2 => {
                    let i = self.uint(2)?;
                    self.push(Node::Scalar(PyValue::Int(i as i64)))?;
                }
                op::LONG1 | op::LONG4 => {
                    let n = if code == op::LONG1 {
                        usize::from(self.byte()?)
                    } else {
                        let n = self.take(4)?;
                        let n = i32::from_le_bytes([n[0], n[1], n[2], n[3]]);
                        usize::try_from(n)
                            .map_err(|_| error("LONG pickle has negative byte count"))?
                    };
                    if n > MAX_INT_BYTES {
                        return Err((
                            "OverflowError",
                            format!("an int of {n} bytes is longer than the {MAX_INT_BYTES} this server stores"),
                        ));
                    }
                    let b = self.take(n)?;
                    self.push(Node::Scalar(int_from_bytes(b)))?;
                }
                op::BINFLOAT => {
                    let b = self.take(8)?;
                    let mut word = [0u8; 8];
                    word.copy_from_slice(b);
                    self.push(Node::Scalar(PyValue::Float(f64::from_be_bytes(word))))?;
                }
                op::SHORT_BINUNICODE | op::BINUNICODE | op::BINUNICODE8 => {
                    let n = self.length(code, op::SHORT_BINUNICODE, op::BINUNICODE)?;
                    let b = self.take(n)?;
                    let s = std::str::from_utf8(b).map_err(|_| {
                        error("a str that is not UTF-8 (a lone surrogate?) is not supported")
                    })?;
                    self.push(Node::Scalar(PyValue::Str(s.into())))?;
                }
                op::SHORT_BINBYTES | op::BINBYTES | op::BINBYTES8 | op::BYTEARRAY8 => {
                    let n = self.length(code, op::SHORT_BINBYTES, op::BINBYTES)?;
                    let b = self.take(n)?.to_vec();
                    if code == op::BYTEARRAY8 {
                        let o = PyObject::call("builtins", "bytearray", Vec::new());
                        let arg = self.node(Node::Scalar(PyValue::Bytes(b)))?;
                        self.push(object(o, vec![arg]))?;
                    } else {
                        self.push(Node::Scalar(PyValue::Bytes(b)))?;
                    }
                }
                op::EMPTY_TUPLE => self.push(Node::Tuple(Vec::new()))?,
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(code - op::TUPLE1 + 1);
                    if self.stack.len() < n + self.marks.last().copied().unwrap_or(0) {
                        return Err(error("unpickling stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Node::Tuple(items))?;
                }
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items))?;
                }
                op::EMPTY_LIST => self.push(Node::List(Vec::new()))?,
                op::LIST => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items))?;
                }
                op::EMPTY_DICT => self.push(Node::Dict(Vec::new()))?,
                op::DICT => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(&items)?;
                    self.push(Node::Dict(pairs))?;
                }
                op::EMPTY_SET => self.push(Node::Set(Vec::new()))?,
                op::FROZENSET => {
                    let items = self.pop_mark()?;
                    self.push(Node::FrozenSet(items))?;
                }
                op::APPEND => {
                    let item = self.pop()?;
                    self.extend(vec![item])?;
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    self.extend(items)?;
                }
                op::SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![(k, v)])?;
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(&items)?;
                    self.set_items(pairs)?;
                }
                op::ADDITEMS => {
                    let items = self.pop_mark()?;
                    let top = self.top()?;
                    self.budget.memory(items.len() * size_of::<usize>())?;
                    match &mut self.nodes[top] {
                        _ if items.is_empty() => {}
                        Node::Set(v) => v.extend(items),
                        _ => return Err(error("ADDITEMS to something that is not a set")),
                    }
                }
                op::MEMOIZE => {
                    let key =
                        u32::try_from(self.memo.count).map_err(|_| error("the memo is full"))?;
                    self.put(key)?;
                }
                op::BINPUT => {
                    let key = self.byte()?;
                    self.put(key.into())?;
                }
                op::LONG_BINPUT => {
                    let key = self.uint(4)? as u32;
                    self.put(key)?;
                }
                op::BINGET => {
                    let key = self.byte()?;
                    self.get(key.into())?;
                }
                op::LONG_BINGET => {
                    let key = self.uint(4)? as u32;
                    self.get(key)?;
                }
                op::GLOBAL => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let (module, name) = global_name(&module, &name);
                    self.push(Node::Global(module, name))?;
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&self.nodes[module], &self.nodes[name]) {
                        (Node::Scalar(PyValue::Str(m)), Node::Scalar(PyValue::Str(n))) => {
                            let (module, name) = global_name(m, n);
                            self.push(Node::Global(module, name))?;
                        }
                        _ => return Err(error("STACK_GLOBAL requires str")),
                    }
                }
                op::REDUCE => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let node = self.reduce(callable, args)?;
                    self.push(node)?;
                }
                op::NEWOBJ | op::NEWOBJ_EX => {
                    let kwargs = if code == op::NEWOBJ_EX {
                        let kwargs = self.pop()?;
                        match &self.nodes[kwargs] {
                            Node::Dict(d) => {
                                self.budget.memory(d.len() * 2 * size_of::<usize>())?;
                                Some(d.clone())
                            }
                            _ => return Err(error("NEWOBJ_EX kwargs argument must be a dict")),
                        }
                    } else {
                        None
                    };
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let Node::Global(module, name) = &self.nodes[cls] else {
                        return Err(error("NEWOBJ class argument must be a class"));
                    };
                    let Node::Tuple(args) = &self.nodes[args] else {
                        return Err(error("NEWOBJ args argument must be a tuple"));
                    };
                    self.budget.memory(args.len() * size_of::<usize>())?;
                    let mut head = PyObject::call(module, name, Vec::new());
                    head.new = true;
                    let mut node = ObjectNode {
                        head,
                        args: args.clone(),
                        kwargs: None,
                        state: None,
                        list_items: Vec::new(),
                        dict_items: Vec::new(),
                    };
                    node.kwargs = kwargs;
                    self.push(Node::Object(Box::new(node)))?;
                }
                op::BUILD => {
                    let state = self.pop()?;
                    let top = self.top()?;
                    let none = matches!(self.nodes[state], Node::Scalar(PyValue::None));
                    match &mut self.nodes[top] {
                        Node::Object(o) if o.state.is_none() => o.state = Some(state),
                        Node::Object(_) => return Err(error("BUILD twice on one object")),
                        // Python's default `__setstate__` of `None`: nothing.
                        _ if none => {}
                        _ => return Err(error("BUILD on something that is not an object")),
                    }
                }
                op::PERSID | op::BINPERSID => {
                    return Err(error(
                        "A load persistent id instruction was encountered, \
                         but no persistent_load function was specified.",
                    ))
                }
                op::NEXT_BUFFER | op::READONLY_BUFFER => {
                    return Err(error("out-of-band buffers are not supported"))
                }
                other => {
                    return Err(error(format!(
                        "invalid or unsupported load key, {:?}",
                        char::from(other)
                    )))
                }
            }
        }
    }

    fn byte(&mut self) -> Result<u8, Exception> {
        Ok(self.take(1)?[0])
    }

    /// The next `n` bytes of the input, if it has them.
    fn take(&mut self, n: usize) -> Result<&'a [u8], Exception> {
        if n > self.input.len() - self.at {
            return Err(error("pickle data was truncated"));
        }
        let input: &'a [u8] = self.input;
        let b = &input[self.at..self.at + n];
        self.at += n;
        Ok(b)
    }

    /// A little-endian unsigned int of `n` bytes (at most 8).
    fn uint(&mut self, n: usize) -> Result<usize, Exception> {
        let b = self.take(n)?;
        let mut word = [0u8; 8];
        word[..n].copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(word)).map_err(|_| error("pickle data was truncated"))
    }

    /// The length of a str or bytes opcode: one byte for the short form,
    /// four for the middle one, eight for the long one.
    fn length(&mut self, code: u8, short: u8, middle: u8) -> Result<usize, Exception> {
        match code {
            c if c == short => Ok(usize::from(self.byte()?)),
            c if c == middle => self.uint(4),
            _ => self.uint(8),
        }
    }

    /// A `\n`-terminated line of at most 256 bytes (`GLOBAL`'s names).
    fn line(&mut self) -> Result<String, Exception> {
        let rest = &self.input[self.at..];
        let end = rest
            .iter()
            .take(257)
            .position(|&b| b == b'\n')
            .ok_or_else(|| error("GLOBAL names must end with a newline within 256 bytes"))?;
        let s =
            std::str::from_utf8(&rest[..end]).map_err(|_| error("a GLOBAL name is not UTF-8"))?;
        self.at += end + 1;
        Ok(s.into())
    }

    /// Adds `node` to the arena, charging it (and what it holds, which
    /// the callers have charged if they copied it from other nodes).
    fn node(&mut self, node: Node) -> Result<usize, Exception> {
        let held = match &node {
            Node::Scalar(PyValue::Str(s)) => s.len(),
            Node::Scalar(PyValue::Bytes(b) | PyValue::BigInt(b)) => b.len(),
            Node::Global(module, name) => module.len() + name.len(),
            Node::Object(o) => size_of::<ObjectNode>() + o.head.module.len() + o.head.name.len(),
            _ => 0,
        };
        self.budget.memory(size_of::<Node>() + held)?;
        self.budget.work(1)?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    fn push(&mut self, node: Node) -> Result<(), Exception> {
        let i = self.node(node)?;
        self.stack.push(i);
        Ok(())
    }

    fn pop(&mut self) -> Result<usize, Exception> {
        if self.marks.last() == Some(&self.stack.len()) {
            return Err(error("unexpected MARK found"));
        }
        self.stack
            .pop()
            .ok_or_else(|| error("unpickling stack underflow"))
    }

    fn top(&self) -> Result<usize, Exception> {
        if self.marks.last() == Some(&self.stack.len()) {
            return Err(error("unexpected MARK found"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| error("unpickling stack underflow"))
    }

    /// The items pushed since the last `MARK`, which is consumed.
    fn pop_mark(&mut self) -> Result<Vec<usize>, Exception> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| error("could not find MARK"))?;
        Ok(self.stack.split_off(mark))
    }

    fn put(&mut self, key: u32) -> Result<(), Exception> {
        let top = self.top()?;
        self.budget.memory(self.memo.cost(key))?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn get(&mut self, key: u32) -> Result<(), Exception> {
        let i = self
            .memo
            .get(key)
            .ok_or_else(|| error(format!("Memo value not found at index {key}")))?;
        self.budget.work(1)?;
        self.budget.memory(size_of::<usize>())?;
        self.stack.push(i);
        Ok(())
    }

    /// `APPEND`/`APPENDS` to the list (or list-like object) on the stack.
    fn extend(&mut self, items: Vec<usize>) -> Result<(), Exception> {
        let top = self.top()?;
        // No items: nothing, onto anything (CPython looks no further).
        if items.is_empty() {
            return Ok(());
        }
        self.budget.memory(items.len() * size_of::<usize>())?;
        match &mut self.nodes[top] {
            Node::List(v) => v.extend(items),
            Node::Object(o) => o.list_items.extend(items),
            _ => return Err(error("APPEND to something that is not a list")),
        }
        Ok(())
    }

    /// `SETITEM`/`SETITEMS` on the dict (or dict-like object) on the stack.
    fn set_items(&mut self, items: Vec<(usize, usize)>) -> Result<(), Exception> {
        let top = self.top()?;
        if items.is_empty() {
            return Ok(());
        }
        self.budget.memory(items.len() * 2 * size_of::<usize>())?;
        match &mut self.nodes[top] {
            Node::Dict(d) => d.extend(items),
            Node::Object(o) => o.dict_items.extend(items),
            _ => return Err(error("SETITEM on something that is not a dict")),
        }
        Ok(())
    }

    /// `callable(*args)`, for the allowed callables only.
    fn reduce(&mut self, callable_node: usize, args_node: usize) -> Result<Node, Exception> {
        let Node::Global(module, name) = &self.nodes[callable_node] else {
            return Err(error("REDUCE of something that is not a global"));
        };
        let Node::Tuple(args) = &self.nodes[args_node] else {
            return Err(error("REDUCE arguments must be a tuple"));
        };
        let Some(kind) = callable(module, name) else {
            return Err(error(format!(
                "global '{module}.{name}' is forbidden: this server calls nothing it receives"
            )));
        };
        self.budget.memory(args.len() * size_of::<usize>())?;
        let args = args.clone();
        let (module, name) = (module.clone(), name.clone());
        let wrong = || error(format!("{module}.{name}: unexpected arguments"));
        match kind {
            Callable::Set | Callable::FrozenSet | Callable::List => {
                let items = match args[..] {
                    [] => Vec::new(),
                    [one] => match &self.nodes[one] {
                        Node::List(v) | Node::Tuple(v) | Node::Set(v) | Node::FrozenSet(v) => {
                            self.budget.memory(v.len() * size_of::<usize>())?;
                            v.clone()
                        }
                        _ => return Err(wrong()),
                    },
                    _ => return Err(wrong()),
                };
                Ok(match kind {
                    Callable::Set => Node::Set(items),
                    Callable::FrozenSet => Node::FrozenSet(items),
                    _ => Node::List(items),
                })
            }
            Callable::Bytes => match args[..] {
                [] => Ok(Node::Scalar(PyValue::Bytes(Vec::new()))),
                [s, e] if name == "encode" => {
                    match (scalar(&self.nodes, s), scalar(&self.nodes, e)) {
                        (Some(PyValue::Str(s)), Some(PyValue::Str(e)))
                            if matches!(e.as_str(), "latin1" | "latin-1") =>
                        {
                            Ok(Node::Scalar(PyValue::Bytes(latin1(s).ok_or_else(wrong)?)))
                        }
                        _ => Err(wrong()),
                    }
                }
                _ => Err(wrong()),
            },
            Callable::RebuildProxy => {
                let [_, token, _, _] = args[..] else {
                    return Err(wrong());
                };
                let Node::Object(token) = &self.nodes[token] else {
                    return Err(wrong());
                };
                let state = token.state.and_then(|s| match &self.nodes[s] {
                    Node::Tuple(t) => Some(t.clone()),
                    _ => None,
                });
                let (typeid, ident) = match state.as_deref() {
                    Some(&[typeid, _, ident])
                        if token.head.is("multiprocessing.managers", "Token") =>
                    {
                        (scalar(&self.nodes, typeid), scalar(&self.nodes, ident))
                    }
                    _ => return Err(error("RebuildProxy needs a Token")),
                };
                let (Some(PyValue::Str(typeid)), Some(PyValue::Str(ident))) = (typeid, ident)
                else {
                    return Err(error("a Token's typeid and id must be str"));
                };
                let Some(kind) = Kind::from_typeid(typeid) else {
                    if LOCK_PROXIES.get() {
                        let lock = PyObject::call(
                            SHARED_LOCK.0,
                            SHARED_LOCK.1,
                            vec![typeid.as_str().into(), ident.as_str().into()],
                        );
                        return Ok(Node::Scalar(PyValue::Object(Box::new(lock))));
                    }
                    return Err(error(format!("no proxy of typeid {typeid:?} here")));
                };
                let id = Id::from_str_radix(ident, 16)
                    .map_err(|_| error(format!("not an object id of this manager: {ident:?}")))?;
                Ok(Node::Proxy(kind, id))
            }
            Callable::Record => {
                let mut args = args;
                match name.as_str() {
                    "bytearray" if module == "builtins" => {
                        // Protocol 2: `bytearray(str, 'latin-1')`.
                        if let [s, e] = args[..] {
                            let bytes = match (scalar(&self.nodes, s), scalar(&self.nodes, e)) {
                                (Some(PyValue::Str(s)), Some(PyValue::Str(_))) => {
                                    latin1(s).ok_or_else(wrong)?
                                }
                                _ => return Err(wrong()),
                            };
                            args = vec![self.node(Node::Scalar(PyValue::Bytes(bytes)))?];
                        }
                        match args[..] {
                            [] => args = vec![self.node(Node::Scalar(PyValue::Bytes(Vec::new())))?],
                            [b] if matches!(scalar(&self.nodes, b), Some(PyValue::Bytes(_))) => {}
                            _ => return Err(wrong()),
                        }
                    }
                    "range" if module == "builtins" => {
                        let ints: Option<Vec<i64>> = args
                            .iter()
                            .map(|&i| match scalar(&self.nodes, i) {
                                Some(PyValue::Int(i)) => Some(*i),
                                _ => None,
                            })
                            .collect();
                        let r = match ints.as_deref() {
                            Some(&[stop]) => [0, stop, 1],
                            Some(&[start, stop]) => [start, stop, 1],
                            Some(&[start, stop, step]) => [start, stop, step],
                            _ => return Err(wrong()),
                        };
                        if r[2] == 0 {
                            return Err(("ValueError", "range() arg 3 must not be zero".into()));
                        }
                        args = Vec::with_capacity(3);
                        for i in r {
                            args.push(self.node(Node::Scalar(PyValue::Int(i)))?);
                        }
                    }
                    "complex" if module == "builtins" => {
                        let numbers = args.len() <= 2
                            && args.iter().all(|&i| {
                                matches!(
                                    scalar(&self.nodes, i),
                                    Some(PyValue::Float(_) | PyValue::Int(_) | PyValue::Bool(_))
                                )
                            });
                        if !numbers {
                            return Err(wrong());
                        }
                    }
                    "slice" if module == "builtins" && (args.is_empty() || args.len() > 3) => {
                        return Err(wrong());
                    }
                    _ => {}
                }
                Ok(object(PyObject::call(&module, &name, Vec::new()), args))
            }
        }
    }
}

/// The value of a scalar node.
fn scalar(nodes: &[Node], i: usize) -> Option<&PyValue> {
    match nodes.get(i) {
        Some(Node::Scalar(v)) => Some(v),
        _ => None,
    }
}

fn object(head: PyObject, args: Vec<usize>) -> Node {
    Node::Object(Box::new(ObjectNode {
        head,
        args,
        kwargs: None,
        state: None,
        list_items: Vec::new(),
        dict_items: Vec::new(),
    }))
}

/// The items after a mark, as `(key, value)` pairs.
fn pairs(items: &[usize]) -> Result<Vec<(usize, usize)>, Exception> {
    if items.len() % 2 != 0 {
        return Err(error("odd number of items for SETITEMS"));
    }
    Ok(items.chunks(2).map(|kv| (kv[0], kv[1])).collect())
}

/// `s.encode('latin-1')`, if every character is below 256.
fn latin1(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// An int from pickle's little-endian two's complement bytes: an `Int` if
/// it fits `i64`, else a minimal `BigInt`.
pub(crate) fn int_from_bytes(b: &[u8]) -> PyValue {
    // Eight bytes or fewer, sign-extended, are an `i64` as they are.
    let word = |b: &[u8]| {
        let fill = if b.last().is_some_and(|&t| t & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut word = [fill; 8];
        word[..b.len()].copy_from_slice(b);
        PyValue::Int(i64::from_le_bytes(word))
    };
    if b.len() <= 8 {
        return word(b);
    }
    let mut v = b.to_vec();
    minimal(&mut v);
    if v.len() <= 8 {
        word(&v)
    } else {
        PyValue::BigInt(v)
    }
}

/// The walk at `STOP` that turns nodes into a value.
struct Builder<'a> {
    nodes: &'a [Node],
    /// The containers being built: reaching one again is a cycle.
    open: Vec<bool>,
    /// A set's items dropped as duplicates, kept until the end (sets
    /// hashed are remembered by their items' address meanwhile: see
    /// [`HashMemo`]).
    duplicates: Vec<PyValue>,
    budget: &'a mut Budget,
    max_depth: usize,
    /// Where the walk's stack began ([`stack_address`]).
    stack_from: usize,
}

impl Builder<'_> {
    /// The value of node `i`, `depth` containers down. Each level of
    /// nesting costs two small frames (this and `items`), so that the
    /// deepest value allowed builds within a thread's default stack.
    fn build(&mut self, i: usize, depth: usize) -> Result<PyValue, Exception> {
        self.budget.work(1)?;
        self.budget.memory(size_of::<PyValue>())?;
        let nodes = self.nodes;
        let node = &nodes[i];
        // The scalars without heap parts, the most common items, inline.
        match node {
            Node::Scalar(PyValue::Int(v)) => return Ok(PyValue::Int(*v)),
            Node::Scalar(PyValue::None) => return Ok(PyValue::None),
            Node::Scalar(PyValue::Bool(b)) => return Ok(PyValue::Bool(*b)),
            Node::Scalar(PyValue::Float(f)) => return Ok(PyValue::Float(*f)),
            _ => {}
        }
        if let Some(leaf) = self.leaf(node) {
            return leaf;
        }
        // Each level of an object takes more stack than a list's (its
        // parts are built in frames of their own): an object nested as
        // deep as allowed overflowed a 2 MiB stack in a debug build,
        // killing the server. The stack taken is bounded as the levels
        // are (in a release build, the levels bound it first).
        if depth >= self.max_depth {
            return Err(too_deep());
        }
        if stack_address().abs_diff(self.stack_from) > MAX_BUILD_STACK {
            return Err((
                "RecursionError",
                "a value is nested too deep for the server's stack".into(),
            ));
        }
        if self.open[i] {
            return Err(error(
                "a value that contains itself (a recursive pickle) is not supported",
            ));
        }
        self.open[i] = true;
        let depth = depth + 1;
        let value = match node {
            Node::List(v) => self.items(v, depth).map(PyValue::List),
            Node::Tuple(v) => self.items(v, depth).map(PyValue::Tuple),
            Node::Dict(d) => self.dict(d, depth),
            Node::Set(v) => self.distinct(v, depth).map(PyValue::Set),
            Node::FrozenSet(v) => self.distinct(v, depth).map(PyValue::FrozenSet),
            Node::Object(o) => self.object(o, depth),
            Node::Scalar(_) | Node::Proxy(..) | Node::Global(..) => Err(error("not a container")),
        };
        self.open[i] = false;
        value
    }

    /// The value of a node without parts.
    #[inline(never)]
    fn leaf(&mut self, node: &Node) -> Option<Result<PyValue, Exception>> {
        let charge = |budget: &mut Budget, n: usize, v: PyValue| budget.memory(n).map(|()| v);
        Some(match node {
            Node::Scalar(v) => match v {
                PyValue::Str(s) => charge(self.budget, s.len(), v.clone()),
                PyValue::Bytes(b) | PyValue::BigInt(b) => charge(self.budget, b.len(), v.clone()),
                v => Ok(v.clone()),
            },
            Node::Proxy(kind, id) => {
                refs::decoded(*kind, *id);
                Ok(PyValue::Proxy(ProxyRef::new(*kind, *id)))
            }
            Node::Global(module, name) => charge(
                self.budget,
                module.len() + name.len(),
                PyValue::Object(Box::new(PyObject::global(module, name))),
            ),
            _ => return None,
        })
    }

    fn items(&mut self, items: &[usize], depth: usize) -> Result<Vec<PyValue>, Exception> {
        self.budget.memory(items.len() * size_of::<PyValue>())?;
        let mut out = Vec::with_capacity(items.len());
        for &i in items {
            out.push(self.build(i, depth)?);
        }
        Ok(out)
    }

    #[inline(never)]
    fn pairs(
        &mut self,
        items: &[(usize, usize)],
        depth: usize,
    ) -> Result<Vec<(PyValue, PyValue)>, Exception> {
        self.budget.memory(items.len() * 2 * size_of::<PyValue>())?;
        let mut out = Vec::with_capacity(items.len());
        for &(k, v) in items {
            let k = self.build(k, depth)?;
            out.push((k, self.build(v, depth)?));
        }
        Ok(out)
    }

    /// An object's value. Its record is boxed before its parts are built
    /// and each part is built in a call of its own, so that what stays on
    /// the stack while the parts nest further is small (see
    /// [`MAX_BUILD_STACK`]).
    #[inline(never)]
    fn object(&mut self, o: &ObjectNode, depth: usize) -> Result<PyValue, Exception> {
        let mut object = self.head(o)?;
        self.args_of(o, &mut object, depth)?;
        self.state_of(o, &mut object, depth)?;
        self.items_of(o, &mut object, depth)?;
        Ok(PyValue::Object(object))
    }

    /// An object's record, without its parts.
    #[inline(never)]
    fn head(&mut self, o: &ObjectNode) -> Result<Box<PyObject>, Exception> {
        self.budget
            .memory(size_of::<PyObject>() + o.head.module.len() + o.head.name.len())?;
        Ok(Box::new(o.head.clone()))
    }

    /// An object's arguments, positional and keyword.
    #[inline(never)]
    fn args_of(
        &mut self,
        o: &ObjectNode,
        object: &mut PyObject,
        depth: usize,
    ) -> Result<(), Exception> {
        object.args = self.items(&o.args, depth)?;
        object.kwargs = match &o.kwargs {
            Some(kw) => Some(self.pairs(kw, depth)?),
            None => None,
        };
        Ok(())
    }

    /// An object's state.
    #[inline(never)]
    fn state_of(
        &mut self,
        o: &ObjectNode,
        object: &mut PyObject,
        depth: usize,
    ) -> Result<(), Exception> {
        object.state = match o.state {
            Some(s) => Some(self.build(s, depth)?),
            None => None,
        };
        Ok(())
    }

    /// An object's items, appended and set.
    #[inline(never)]
    fn items_of(
        &mut self,
        o: &ObjectNode,
        object: &mut PyObject,
        depth: usize,
    ) -> Result<(), Exception> {
        object.list_items = self.items(&o.list_items, depth)?;
        object.dict_items = self.pairs(&o.dict_items, depth)?;
        Ok(())
    }

    /// A dict's value, each key once.
    #[inline(never)]
    fn dict(&mut self, items: &[(usize, usize)], depth: usize) -> Result<PyValue, Exception> {
        let pairs = self.pairs(items, depth)?;
        Ok(PyValue::Dict(self.one_item_a_key(pairs)))
    }

    /// `pairs`, each key once (see [`one_item_a_key`]).
    #[inline(never)]
    fn one_item_a_key(&mut self, mut pairs: Vec<(PyValue, PyValue)>) -> Vec<(PyValue, PyValue)> {
        // What a key set again replaced stays until the end, as a set's
        // duplicates (see `duplicates`).
        let gone = one_item_a_key(&mut pairs);
        self.duplicates.extend(gone);
        pairs
    }

    /// A set's items, each once (Python's `==`: `1`, `1.0` and `True` are
    /// one item). (Its items are built before a frame that holds the
    /// index that finds the repeats is made: see [`MAX_BUILD_STACK`].)
    #[inline(never)]
    fn distinct(&mut self, items: &[usize], depth: usize) -> Result<Vec<PyValue>, Exception> {
        let all = self.items(items, depth)?;
        self.distinct_of(all)
    }

    /// `all`, each once.
    #[inline(never)]
    fn distinct_of(&mut self, all: Vec<PyValue>) -> Result<Vec<PyValue>, Exception> {
        self.budget.work(all.len())?;
        let mut seen: std::collections::HashSet<&PyValue> =
            std::collections::HashSet::with_capacity(all.len());
        let keep: Vec<bool> = all.iter().map(|v| seen.insert(v)).collect();
        drop(seen);
        let (kept, duplicates) = all
            .into_iter()
            .zip(keep)
            .partition::<Vec<_>, _>(|(_, k)| *k);
        self.duplicates
            .extend(duplicates.into_iter().map(|(v, _)| v));
        Ok(kept.into_iter().map(|(v, _)| v).collect())
    }
}

/// Keeps one item for each key of a dict's `pairs`, where the key was
/// first set, with the value it was set to last, as Python's unpickler
/// makes a dict (`SETITEM` of a key it holds replaces its value): kept
/// as many times as set, two dicts of 50,000 items set at one key took
/// the product of their lengths to compare (every item in the one bucket
/// of the index). The keys and values dropped, as the caller may have to
/// keep them for a while.
pub(super) fn one_item_a_key(pairs: &mut Vec<(PyValue, PyValue)>) -> Vec<PyValue> {
    // Each key set again, and where it was first set, in order.
    let again: Vec<(usize, usize)> = match pairs.len() {
        0 | 1 => return Vec::new(),
        // A few keys: each compared with those before it.
        n if n <= FEW_KEYS => (1..n)
            .filter_map(|i| {
                let at = (0..i).find(|&j| pairs[j].0 == pairs[i].0)?;
                Some((i, at))
            })
            .collect(),
        // More: through an index, with the hasher of the server's dicts
        // (a key chosen to collide with others cannot be chosen here).
        n => {
            let mut first = HashMap::with_capacity_and_hasher(n, super::super::apply::keyed());
            let mut again = Vec::new();
            for (i, (k, _)) in pairs.iter().enumerate() {
                match first.entry(k) {
                    Entry::Occupied(at) => again.push((i, *at.get())),
                    Entry::Vacant(slot) => {
                        slot.insert(i);
                    }
                }
            }
            again
        }
    };
    if again.is_empty() {
        return Vec::new();
    }
    let mut gone = Vec::with_capacity(2 * again.len());
    for &(i, at) in &again {
        let last = std::mem::replace(&mut pairs[i].1, PyValue::None);
        gone.push(std::mem::replace(&mut pairs[at].1, last));
    }
    let mut i = 0;
    let mut again = again.into_iter().map(|(i, _)| i).peekable();
    pairs.retain_mut(|(k, _)| {
        let keep = again.peek() != Some(&i);
        if !keep {
            again.next();
            gone.push(std::mem::replace(k, PyValue::None));
        }
        i += 1;
        keep
    });
    gone
}

/// The most keys of a dict whose repeats are found by comparing each key
/// with those before it (at most 28 comparisons) rather than through an
/// index.
const FEW_KEYS: usize = 8;

fn too_deep() -> Exception {
    (
        "RecursionError",
        format!("a value is nested deeper than {MAX_DEPTH} levels"),
    )
}
