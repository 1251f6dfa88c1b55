//! The decoder's fast path: a pickle of plain values (`None`, bools,
//! numbers, str, bytes, and tuples, lists and dicts of them, as clients
//! send requests and their arguments) decoded in one pass straight into
//! the value, without the arena of nodes and the walk that copies it.
//!
//! It takes on only what it can decode exactly as the general decoder
//! (`decode`) would: the same value, and the same charges to the budget
//! (the node each value would have been and its copy, summed). For
//! anything else — a global, a call, a set, a memoized container read
//! back, `POP`, `DUP`, a malformed pickle, a budget that runs out, a value
//! nested deeper than allowed — it gives up, and its caller puts the
//! budget back as it was and decodes with the general decoder, which
//! gives the answer or the error. Giving up costs at most one pass over
//! what was read so far; whatever it builds is charged first (so it
//! allocates within the budget as the general decoder does), and it never
//! nests a value deeper than the depth allowed, so dropping what it built
//! stays within the stack.

use std::cell::Cell;

use super::super::limits::Budget;
use super::super::value::PyValue;
use super::decode::{int_from_bytes, one_item_a_key, Memo, MAX_INT_BYTES, NODE};
use super::op;

/// Keeps one item a key in each dict inside `v`, as the general decoder
/// does (see [`one_item_a_key`]).
pub(super) fn one_item_a_key_inside(v: &mut PyValue) {
    match v {
        PyValue::List(vs) | PyValue::Tuple(vs) => vs
            .iter_mut()
            .filter(|v| nested(v))
            .for_each(one_item_a_key_inside),
        PyValue::Dict(d) => {
            one_item_a_key_below(d);
            one_item_a_key(d);
        }
        _ => {}
    }
}

/// [`one_item_a_key_inside`] each key and value of `pairs` (but not among
/// `pairs` themselves).
pub(super) fn one_item_a_key_below(pairs: &mut [(PyValue, PyValue)]) {
    for (k, v) in pairs {
        if nested(k) {
            one_item_a_key_inside(k);
        }
        if nested(v) {
            one_item_a_key_inside(v);
        }
    }
}

/// Whether `v` may hold a dict (scalars, most items, are passed over
/// without a call).
fn nested(v: &PyValue) -> bool {
    matches!(v, PyValue::List(_) | PyValue::Tuple(_) | PyValue::Dict(_))
}

/// Why the fast path stopped: the general decoder takes over.
pub(super) struct GiveUp;

type Fast<T> = Result<T, GiveUp>;

const WORD: usize = size_of::<usize>();
const VALUE: usize = size_of::<PyValue>();
/// A memo entry that is not a scalar this path can copy: a container
/// (whose later changes it does not follow).
const NOT_SCALAR: usize = usize::MAX - 1;
/// The most memory charges left owing (see [`Flat::owe`]).
const MAX_OWED: usize = 16 << 10;

/// Decodes `bytes` as `decode` would with `max_depth`, charging `budget`
/// what `decode` would; `GiveUp` for anything it does not take on, with
/// `budget` charged part of the way (the caller restores it).
pub(super) fn decode(bytes: &[u8], budget: &mut Budget, max_depth: usize) -> Fast<PyValue> {
    let (mut v, several_keys) = decode_as_set(bytes, budget, max_depth)?;
    if several_keys {
        one_item_a_key_inside(&mut v);
    }
    Ok(v)
}

/// As [`decode`], but each dict with its items as the pickle set them (a
/// key set twice is there twice), and whether any dict has more than one
/// item (whose keys may repeat: [`one_item_a_key_inside`] keeps one).
pub(super) fn decode_as_set(
    bytes: &[u8],
    budget: &mut Budget,
    max_depth: usize,
) -> Fast<(PyValue, bool)> {
    thread_local! {
        /// The stacks of the last decoding, kept for the next one (small
        /// requests would spend more on allocating them than on the rest).
        static SPARE: Cell<Stacks> = const { Cell::new((Vec::new(), Vec::new(), Vec::new())) };
    }
    let (mut stack, mut heights, marks) = SPARE.take();
    let room = (bytes.len() / 2).clamp(8, SPARE_ITEMS);
    stack.reserve(room);
    heights.reserve(room);
    let mut f = Flat {
        input: bytes,
        at: 0,
        stack,
        heights,
        marks,
        memo: Memo::default(),
        memoized: Vec::new(),
        last_put: None,
        changes: 0,
        budget,
        owed_memory: 0,
        owed_work: 0,
        several_keys: false,
        max_depth: u32::try_from(max_depth).unwrap_or(u32::MAX),
    };
    let value = f.run().map(|v| (v, f.several_keys));
    let (mut stack, mut heights, mut marks) = (f.stack, f.heights, f.marks);
    stack.clear();
    heights.clear();
    marks.clear();
    if stack.capacity() <= SPARE_ITEMS && marks.capacity() <= SPARE_ITEMS {
        SPARE.set((stack, heights, marks));
    }
    value
}

/// The value stack, the heights of its values and the marks.
type Stacks = (Vec<PyValue>, Vec<u32>, Vec<usize>);

/// The most stack entries kept from one decoding to the next (64 KiB
/// per thread; a 1000-item dict's fit).
const SPARE_ITEMS: usize = 1 << 11;

struct Flat<'a> {
    input: &'a [u8],
    at: usize,
    stack: Vec<PyValue>,
    /// How many containers deep each value of `stack` is (0: a scalar).
    heights: Vec<u32>,
    /// The stack's length at each `MARK` not yet consumed.
    marks: Vec<usize>,
    /// Memo keys to indexes into `memoized` (or [`NOT_SCALAR`]).
    memo: Memo,
    /// Copies of the memoized scalars.
    memoized: Vec<PyValue>,
    /// The value of `changes` and the memo entry of the last put: putting
    /// the same top again shares its copy.
    last_put: Option<(u64, usize)>,
    /// Changes of the stack's top so far (values pushed, containers
    /// filled).
    changes: u64,
    budget: &'a mut Budget,
    /// Charges not yet taken from `budget` (see [`Flat::owe`]).
    owed_memory: usize,
    owed_work: usize,
    /// A dict of more than one item was made: some key may be set again.
    several_keys: bool,
    max_depth: u32,
}

impl<'a> Flat<'a> {
    fn run(&mut self) -> Fast<PyValue> {
        loop {
            let code = self.byte()?;
            match code {
                op::PROTO => {
                    if !(2..=5).contains(&self.byte()?) {
                        return Err(GiveUp);
                    }
                }
                op::FRAME => {
                    let n = self.uint(8)?;
                    if n > self.input.len() - self.at {
                        return Err(GiveUp);
                    }
                }
                op::STOP => {
                    self.settle()?;
                    // The general decoder builds the top alone; what is
                    // under it was charged, but never copied.
                    return match (self.stack.pop(), self.stack.is_empty()) {
                        (Some(v), true) => Ok(v),
                        _ => Err(GiveUp),
                    };
                }
                op::MARK => {
                    self.owe(WORD, 0)?;
                    self.marks.push(self.stack.len());
                }
                op::NONE => self.scalar(PyValue::None)?,
                op::NEWTRUE => self.scalar(PyValue::Bool(true))?,
                op::NEWFALSE => self.scalar(PyValue::Bool(false))?,
                op::BININT => {
                    let b = self.take(4)?;
                    let i = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    self.scalar(PyValue::Int(i.into()))?;
                }
                op::BININT1 => {
                    let i = self.byte()?;
                    self.scalar(PyValue::Int(i.into()))?;
                }
                op::BININT2 => {
                    let b = self.take(2)?;
                    let i = u16::from_le_bytes([b[0], b[1]]);
                    self.scalar(PyValue::Int(i.into()))?;
                }
                op::LONG1 | op::LONG4 => {
                    let n = if code == op::LONG1 {
                        usize::from(self.byte()?)
                    } else {
                        let b = self.take(4)?;
                        usize::try_from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .map_err(|_| GiveUp)?
                    };
                    if n > MAX_INT_BYTES {
                        return Err(GiveUp);
                    }
                    let v = int_from_bytes(self.take(n)?);
                    let held = match &v {
                        PyValue::BigInt(b) => b.len(),
                        _ => 0,
                    };
                    self.charge_scalar(held)?;
                    self.push(v, 0);
                }
                op::BINFLOAT => {
                    let b = self.take(8)?;
                    let mut word = [0u8; 8];
                    word.copy_from_slice(b);
                    self.scalar(PyValue::Float(f64::from_be_bytes(word)))?;
                }
                op::SHORT_BINUNICODE | op::BINUNICODE | op::BINUNICODE8 => {
                    let n = self.length(code, op::SHORT_BINUNICODE, op::BINUNICODE)?;
                    // Charged before it is copied.
                    self.charge_scalar(n)?;
                    let s = std::str::from_utf8(self.take(n)?).map_err(|_| GiveUp)?;
                    self.push(PyValue::Str(s.into()), 0);
                }
                op::SHORT_BINBYTES | op::BINBYTES | op::BINBYTES8 => {
                    let n = self.length(code, op::SHORT_BINBYTES, op::BINBYTES)?;
                    self.charge_scalar(n)?;
                    let b = self.take(n)?.to_vec();
                    self.push(PyValue::Bytes(b), 0);
                }
                op::EMPTY_TUPLE => self.container(PyValue::Tuple(Vec::new()), 0, 1)?,
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(code - op::TUPLE1 + 1);
                    let len = self.stack.len();
                    if len < n + self.marks.last().copied().unwrap_or(0) {
                        return Err(GiveUp);
                    }
                    let height = self.height(len - n)?;
                    self.container_items(len - n, n, height, PyValue::Tuple)?;
                }
                op::TUPLE | op::LIST => {
                    let mark = self.marks.pop().ok_or(GiveUp)?;
                    let n = self.above(mark)?;
                    let height = self.height(mark)?;
                    let make = if code == op::TUPLE {
                        PyValue::Tuple
                    } else {
                        PyValue::List
                    };
                    self.container_items(mark, n, height, make)?;
                }
                op::EMPTY_LIST => self.container(PyValue::List(Vec::new()), 0, 1)?,
                op::EMPTY_DICT => self.container(PyValue::Dict(Vec::new()), 0, 1)?,
                op::DICT => {
                    let mark = self.marks.pop().ok_or(GiveUp)?;
                    let n = self.above(mark)?;
                    if n % 2 != 0 {
                        return Err(GiveUp);
                    }
                    let height = self.height(mark)?;
                    self.owe(NODE + VALUE + n * VALUE, 2)?;
                    self.settle()?;
                    let mut pairs = Vec::with_capacity(n / 2);
                    let mut items = self.stack.drain(mark..);
                    while let (Some(k), Some(v)) = (items.next(), items.next()) {
                        pairs.push((k, v));
                    }
                    drop(items);
                    self.heights.truncate(mark);
                    self.several_keys |= pairs.len() > 1;
                    self.push(PyValue::Dict(pairs), height);
                }
                op::APPEND | op::SETITEM => {
                    let n = if code == op::APPEND { 1 } else { 2 };
                    let len = self.stack.len();
                    // The items and the container under them, no MARK
                    // between (the general decoder's `pop` and `top`).
                    let floor = self.marks.last().copied().unwrap_or(0);
                    if len < floor + n + 1 {
                        return Err(GiveUp);
                    }
                    self.add(len - n, code == op::APPEND)?;
                }
                op::APPENDS | op::SETITEMS => {
                    let mark = self.marks.pop().ok_or(GiveUp)?;
                    if self.marks.last() == Some(&mark) || mark == 0 {
                        return Err(GiveUp);
                    }
                    self.add(mark, code == op::APPENDS)?;
                }
                op::MEMOIZE => {
                    let key = u32::try_from(self.memo.count).map_err(|_| GiveUp)?;
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
                _ => return Err(GiveUp),
            }
        }
    }

    fn byte(&mut self) -> Fast<u8> {
        let b = *self.input.get(self.at).ok_or(GiveUp)?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Fast<&'a [u8]> {
        if n > self.input.len() - self.at {
            return Err(GiveUp);
        }
        let input: &'a [u8] = self.input;
        let b = &input[self.at..self.at + n];
        self.at += n;
        Ok(b)
    }

    fn uint(&mut self, n: usize) -> Fast<usize> {
        let b = self.take(n)?;
        let mut word = [0u8; 8];
        word[..n].copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(word)).map_err(|_| GiveUp)
    }

    fn length(&mut self, code: u8, short: u8, middle: u8) -> Fast<usize> {
        match code {
            c if c == short => Ok(usize::from(self.byte()?)),
            c if c == middle => self.uint(4),
            _ => self.uint(8),
        }
    }

    /// How many values are above the stack position `mark`.
    fn above(&self, mark: usize) -> Fast<usize> {
        self.stack.len().checked_sub(mark).ok_or(GiveUp)
    }

    /// Owes the budget `memory` and `work`: paid by [`settle`], before
    /// anything is allocated on the heap, at the end, and whenever the
    /// debt reaches [`MAX_OWED`] (the most this allocates beyond the
    /// budget, for the stack).
    #[inline(always)]
    fn owe(&mut self, memory: usize, work: usize) -> Fast<()> {
        self.owed_memory = self.owed_memory.saturating_add(memory);
        self.owed_work += work;
        if self.owed_memory > MAX_OWED {
            self.settle()?;
        }
        Ok(())
    }

    /// Pays what is owed.
    #[inline]
    fn settle(&mut self) -> Fast<()> {
        let (memory, work) = (self.owed_memory, self.owed_work);
        self.owed_memory = 0;
        self.owed_work = 0;
        self.budget.memory(memory).map_err(|_| GiveUp)?;
        self.budget.work(work).map_err(|_| GiveUp)
    }

    /// What a scalar with `held` bytes on the heap costs the general
    /// decoder: its node, then its copy (each a step of work); paid
    /// before the scalar is made.
    fn charge_scalar(&mut self, held: usize) -> Fast<()> {
        let bytes = held
            .checked_mul(2)
            .and_then(|h| h.checked_add(NODE + VALUE))
            .ok_or(GiveUp)?;
        self.owe(bytes, 2)?;
        self.settle()
    }

    /// A scalar with nothing on the heap.
    #[inline(always)]
    fn scalar(&mut self, v: PyValue) -> Fast<()> {
        self.owe(NODE + VALUE, 2)?;
        self.push(v, 0);
        Ok(())
    }

    #[inline(always)]
    fn push(&mut self, v: PyValue, height: u32) {
        self.stack.push(v);
        self.heights.push(height);
        self.changes += 1;
    }

    /// A container `height` deep (its node and its copy, with `items`
    /// bytes for the copies of its items).
    fn container(&mut self, v: PyValue, items: usize, height: u32) -> Fast<()> {
        if height > self.max_depth {
            return Err(GiveUp);
        }
        self.owe(NODE + VALUE + items, 2)?;
        self.push(v, height);
        Ok(())
    }

    /// The height of a container of the values from `from` up.
    fn height(&self, from: usize) -> Fast<u32> {
        let inner = self.heights[from..].iter().copied().max().unwrap_or(0);
        let h = inner + 1;
        if h > self.max_depth {
            return Err(GiveUp);
        }
        Ok(h)
    }

    /// A tuple or list of the `n` values from `from` up, which it
    /// replaces.
    fn container_items(
        &mut self,
        from: usize,
        n: usize,
        height: u32,
        make: fn(Vec<PyValue>) -> PyValue,
    ) -> Fast<()> {
        self.owe(NODE + VALUE + n * VALUE, 2)?;
        self.settle()?;
        // One copy of the items into a vector of their size.
        let items = self.stack.split_off(from);
        self.heights.truncate(from);
        self.push(make(items), height);
        Ok(())
    }

    /// `APPEND(S)` (`list`) or `SETITEM(S)`: the values from `from` up go
    /// into the list or dict under them.
    fn add(&mut self, from: usize, list: bool) -> Fast<()> {
        let n = self.above(from)?;
        let under = from.checked_sub(1).ok_or(GiveUp)?;
        // The top is now the container.
        self.changes += 1;
        let fits = match &self.stack[under] {
            PyValue::List(_) => list,
            PyValue::Dict(_) => !list && n % 2 == 0,
            _ => false,
        };
        if !fits {
            return Err(GiveUp);
        }
        // The general decoder's item indexes, then the items' copies.
        self.owe(n * (WORD + VALUE), 0)?;
        self.settle()?;
        let h = self.height(from)?.max(self.heights[under]);
        self.heights[under] = h;
        if list {
            let mut items = match &mut self.stack[under] {
                PyValue::List(v) => std::mem::take(v),
                _ => return Err(GiveUp),
            };
            items.extend(self.stack.drain(from..));
            self.heights.truncate(from);
            self.stack[under] = PyValue::List(items);
            Ok(())
        } else {
            self.fill(from, under)
        }
    }

    /// Moves the values from `from` up, as pairs, into the dict at `dict`.
    fn fill(&mut self, from: usize, dict: usize) -> Fast<()> {
        let mut pairs = match &mut self.stack[dict] {
            PyValue::Dict(d) => std::mem::take(d),
            _ => return Err(GiveUp),
        };
        pairs.reserve(self.above(from)? / 2);
        let mut items = self.stack.drain(from..);
        while let (Some(k), Some(v)) = (items.next(), items.next()) {
            pairs.push((k, v));
        }
        drop(items);
        self.heights.truncate(from);
        self.several_keys |= pairs.len() > 1;
        self.stack[dict] = PyValue::Dict(pairs);
        Ok(())
    }

    /// `MEMOIZE`/`BINPUT`: a scalar is copied once (a later `put` of the
    /// same value, or of a copy just read back, shares the copy); a
    /// container is marked, and reading it back gives up.
    fn put(&mut self, key: u32) -> Fast<()> {
        let top = self.stack.len().checked_sub(1).ok_or(GiveUp)?;
        if self.marks.last() == Some(&self.stack.len()) {
            return Err(GiveUp);
        }
        self.owe(self.memo.cost(key), 0)?;
        self.settle()?;
        let entry = match self.last_put {
            Some((changes, entry)) if changes == self.changes => entry,
            _ if self.heights[top] > 0 => NOT_SCALAR,
            _ => {
                // Within what pushing it was charged: its node.
                self.memoized.push(self.stack[top].clone());
                self.memoized.len() - 1
            }
        };
        self.last_put = Some((self.changes, entry));
        self.memo.insert(key, entry);
        Ok(())
    }

    /// `BINGET`: a copy of a memoized scalar, charged first.
    fn get(&mut self, key: u32) -> Fast<()> {
        let entry = self.memo.get(key).ok_or(GiveUp)?;
        let v = self.memoized.get(entry).ok_or(GiveUp)?;
        let held = match v {
            PyValue::Str(s) => s.len(),
            PyValue::Bytes(b) | PyValue::BigInt(b) => b.len(),
            _ => 0,
        };
        // The general decoder's `get`, then the copy of the node.
        self.owe(WORD, 0)?;
        self.owe(VALUE.checked_add(held).ok_or(GiveUp)?, 2)?;
        self.settle()?;
        let v = self.memoized[entry].clone();
        self.push(v, 0);
        // A `put` of this copy shares the memo's (another copy of it
        // would be charged nowhere).
        self.last_put = Some((self.changes, entry));
        Ok(())
    }
}
