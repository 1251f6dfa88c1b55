//! Structure-aware requests to a real manager server: values nested around
//! and beyond the depth limit, keys that mix ints, floats and bools near
//! the limits of exact conversion (and ints beyond 64 bits, which the
//! manager keeps as Python's big ints), sorts of comparable and incomparable
//! lists, large batches and many snapshots. Every request must get an
//! answer (a value or a Python exception), and the server must stay up.
#![no_main]

use std::fmt;
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use multiproc::manager::{DictProxy, ListProxy, Manager, MAX_DEPTH};
use multiproc::Error;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, SerializeTuple, Serializer};

/// A Python value, encoded as exactly the manager's `PyValue` variant.
#[derive(Clone, Debug)]
enum Py {
    None,
    Bool(bool),
    Int(i64),
    /// An int beyond `i64` (a Python `int` the manager keeps as a big int).
    Big(i128),
    Float(f64),
    Str(String),
    List(Vec<Py>),
    Tuple(Vec<Py>),
}

impl serde::Serialize for Py {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Py::None => s.serialize_unit(),
            Py::Bool(b) => s.serialize_bool(*b),
            Py::Int(i) => s.serialize_i64(*i),
            Py::Big(i) => s.serialize_i128(*i),
            Py::Float(f) => s.serialize_f64(*f),
            Py::Str(v) => s.serialize_str(v),
            Py::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                items.iter().try_for_each(|v| seq.serialize_element(v))?;
                seq.end()
            }
            Py::Tuple(items) => {
                let mut seq = s.serialize_tuple(items.len())?;
                items.iter().try_for_each(|v| seq.serialize_element(v))?;
                seq.end()
            }
        }
    }
}

/// Reads back whatever the server answers (dicts and bytes as lists).
impl<'de> serde::Deserialize<'de> for Py {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Py, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Py;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_unit<E>(self) -> Result<Py, E> {
                Ok(Py::None)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Py, E> {
                Ok(Py::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Py, E> {
                Ok(Py::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Py, E> {
                Ok(Py::Big(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Py, E> {
                Ok(Py::Big(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Py, E> {
                Ok(Py::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Py, E> {
                Ok(Py::Str(v.into()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Py, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Py::List(items))
            }
        }
        d.deserialize_any(Any)
    }
}

/// The numbers where conversions between ints and floats go wrong.
#[derive(Arbitrary, Debug)]
enum Atom {
    None,
    Bool(bool),
    Small(i8),
    /// 2**53 plus a little: no longer exact as a float.
    NearTwo53(i8),
    /// The same, as the float it rounds to.
    NearTwo53Float(i8),
    Extreme(bool),
    /// 2**63 plus a little, either side of `i64`'s end: an int or a big int.
    NearTwo63(i8),
    /// -2**64 or 2**64 plus a little, and the float near it.
    NearTwo64(bool, i8),
    NearTwo64Float(bool),
    Float(f64),
    Str(u8),
}

impl Atom {
    fn py(&self) -> Py {
        let two53 = 1i64 << 53;
        match *self {
            Atom::None => Py::None,
            Atom::Bool(b) => Py::Bool(b),
            Atom::Small(i) => Py::Int(i.into()),
            Atom::NearTwo53(d) => Py::Int(two53 + i64::from(d)),
            Atom::NearTwo53Float(d) => Py::Float((two53 + i64::from(d)) as f64),
            Atom::Extreme(max) => Py::Int(if max { i64::MAX } else { i64::MIN }),
            Atom::NearTwo63(d) => Py::Big((1i128 << 63) + i128::from(d)),
            Atom::NearTwo64(negative, d) => {
                let v = (1i128 << 64) + i128::from(d);
                Py::Big(if negative { -v } else { v })
            }
            Atom::NearTwo64Float(negative) => Py::Float(if negative { -1.0 } else { 1.0 } * 2f64.powi(64)),
            Atom::Float(f) => Py::Float(f),
            Atom::Str(c) => Py::Str(char::from(b'a' + c % 4).into()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Shape {
    Atom(Atom),
    List(Vec<Shape>),
    Tuple(Vec<Shape>),
    /// An atom inside lists this deep: around and beyond the limit.
    Deep(u16, Atom),
}

impl Shape {
    fn py(&self) -> Py {
        match self {
            Shape::Atom(a) => a.py(),
            Shape::List(items) => Py::List(items.iter().take(16).map(Shape::py).collect()),
            Shape::Tuple(items) => Py::Tuple(items.iter().take(16).map(Shape::py).collect()),
            Shape::Deep(depth, a) => {
                let mut v = a.py();
                for _ in 0..usize::from(*depth) % (MAX_DEPTH + 200) {
                    v = Py::List(vec![v]);
                }
                v
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Step {
    Set(Shape, Shape),
    Get(Shape),
    Contains(Shape),
    Remove(Shape),
    /// Many keys in one round trip.
    SetMany(Vec<(Atom, Shape)>),
    /// The same keys asked for many times in one round trip: many copies.
    GetMany(Vec<Atom>, u16),
    Append(Shape),
    /// `count` Nones, in one request.
    ExtendNones(u16),
    Sort,
    Count(Shape),
    Index(Shape),
    Snapshot,
    Pop(i8),
    /// Up to 1023 tuples nested up to the depth limit around 0 to 6, so
    /// that comparing them walks down to their innermost item (a walk
    /// per level once made sorting them quadratic in the depth).
    ExtendDeep(u16, u16),
}

/// The longest one step may take: every request is bounded to about a
/// quarter of a second of the server's work ([`multiproc::manager::MAX_WORK`]);
/// far beyond it, on however busy a machine, a request costs more than
/// it was charged.
const STEP_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

fn manager() -> &'static Manager {
    static M: OnceLock<Manager> = OnceLock::new();
    M.get_or_init(|| Manager::start().expect("start the manager"))
}

/// An answer: a value or a Python exception; anything else means the
/// server did not answer.
fn answered<T>(r: Result<T, Error>) {
    match r {
        Ok(_) | Err(Error::Remote { .. }) => {}
        Err(e) => panic!("no answer: {e}"),
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let m = manager();
    let d: DictProxy<Py, Py> = m.dict().unwrap();
    let l: ListProxy<Py> = m.list().unwrap();
    for step in steps.iter().take(32) {
        let began = std::time::Instant::now();
        match step {
            Step::Set(k, v) => answered(d.set(k.py(), v.py())),
            Step::Get(k) => answered(d.get(&k.py())),
            Step::Contains(k) => answered(d.contains(&k.py())),
            Step::Remove(k) => answered(d.remove(&k.py())),
            Step::SetMany(items) => {
                answered(d.set_many(items.iter().map(|(k, v)| (k.py(), v.py()))))
            }
            Step::GetMany(keys, times) => {
                let keys: Vec<Py> = keys.iter().take(8).map(Atom::py).collect();
                let many: Vec<&Py> = keys
                    .iter()
                    .cycle()
                    .take(keys.len() * usize::from(*times))
                    .collect();
                answered(d.get_many(many));
            }
            Step::Append(v) => answered(l.append(v.py())),
            Step::ExtendNones(n) => {
                answered(l.extend(std::iter::repeat_n(Py::None, usize::from(*n) * 32)))
            }
            Step::Sort => answered(l.sort()),
            Step::Count(v) => answered(l.count(&v.py())),
            Step::Index(v) => answered(l.index(&v.py())),
            Step::Snapshot => {
                answered(l.to_vec());
                answered(d.items());
            }
            Step::Pop(i) => answered(l.pop((*i).into())),
            Step::ExtendDeep(n, depth) => {
                let depth = usize::from(*depth) % MAX_DEPTH;
                answered(l.extend((0..usize::from(*n) % 1024).map(|i| {
                    let mut v = Py::Int((i % 7) as i64);
                    for _ in 0..depth {
                        v = Py::Tuple(vec![v]);
                    }
                    v
                })))
            }
        }
        let took = began.elapsed();
        assert!(took < STEP_LIMIT, "{step:?} took {took:?}");
    }
    drop((d, l));
    if let Err(e) = m.number_of_objects() {
        panic!("the manager stopped serving: {e}");
    }
});
