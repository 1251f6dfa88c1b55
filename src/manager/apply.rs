//! The object model: what each operation does to a dict or a list, as
//! Python's would, within a request's [`Budget`]. Pure: no sockets and no
//! reference counting, so that it can be tested (and reused) on its own.

use std::hash::RandomState;

use indexmap::IndexMap;

use super::compare::sort;
use super::limits::{self, Budget};
use super::protocol::{Exception, Kind, Op};
use super::PyValue;

/// The server's dicts hash with SipHash-1-3 under a random key of this
/// server's (std's `RandomState`): a client that chooses keys cannot
/// choose their collisions.
pub(super) type Map = IndexMap<PyValue, PyValue, RandomState>;

/// A manager object's contents.
pub(super) enum Object {
    /// Dicts and namespaces (whose keys are names).
    Dict(Map),
    List(Vec<PyValue>),
}

/// What an operation answers: a value, or the Python exception it raises.
pub(super) type OpResult = std::result::Result<PyValue, Exception>;

fn key_error(key: &PyValue) -> Exception {
    ("KeyError", key.repr())
}

fn type_error(msg: String) -> Exception {
    ("TypeError", msg)
}

/// A Python index into a list of `len` items, negative from the end.
fn index(key: &PyValue, len: usize, inserting: bool) -> std::result::Result<usize, Exception> {
    let PyValue::Int(i) = *key else {
        return Err(type_error(format!(
            "list indices must be integers, not {}",
            key.type_name()
        )));
    };
    let len = len as i64;
    let at = if i < 0 { i + len } else { i };
    let limit = if inserting { len + 1 } else { len };
    if (0..limit).contains(&at) {
        Ok(at as usize)
    } else {
        Err((
            "IndexError",
            format!("list index {i} out of range for length {len}"),
        ))
    }
}

/// `a + b` for ints and floats (and bools, which are ints in Python).
fn add(a: &PyValue, b: &PyValue) -> OpResult {
    let int = |v: &PyValue| match *v {
        PyValue::Bool(b) => PyValue::Int(b.into()),
        ref v => v.clone(),
    };
    match (int(a), int(b)) {
        (PyValue::Int(x), PyValue::Int(y)) => x
            .checked_add(y)
            .map(PyValue::Int)
            .ok_or_else(|| ("OverflowError", format!("{x} + {y} overflows a 64-bit int"))),
        (PyValue::Int(x), PyValue::Float(y)) => Ok(PyValue::Float(x as f64 + y)),
        (PyValue::Float(x), PyValue::Int(y)) => Ok(PyValue::Float(x + y as f64)),
        (PyValue::Float(x), PyValue::Float(y)) => Ok(PyValue::Float(x + y)),
        _ => Err(type_error(format!(
            "unsupported operand types for +=: '{}' and '{}'",
            a.type_name(),
            b.type_name()
        ))),
    }
}

/// Applies `op` to `object`, a `kind` object; the answer's copies of stored
/// values are taken from `budget` before they are made.
pub(super) fn apply(kind: Kind, object: &mut Object, op: Op, budget: &mut Budget) -> OpResult {
    match (object, op) {
        (Object::Dict(d), Op::Len) => Ok(PyValue::Int(d.len() as i64)),
        (Object::List(l), Op::Len) => Ok(PyValue::Int(l.len() as i64)),
        (Object::Dict(d), Op::Clear) => {
            d.clear();
            Ok(PyValue::None)
        }
        (Object::List(l), Op::Clear) => {
            l.clear();
            Ok(PyValue::None)
        }
        (Object::Dict(d), Op::Snapshot) => {
            budget.charge(d.iter().flat_map(|(k, v)| [k, v]))?;
            Ok(PyValue::Dict(
                d.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ))
        }
        (Object::List(l), Op::Snapshot) => {
            budget.charge(l.iter())?;
            Ok(PyValue::List(l.clone()))
        }
        (Object::Dict(d), Op::Get(k)) => match d.get(&k) {
            Some(v) => {
                budget.charge([v])?;
                Ok(v.clone())
            }
            None => Err(match kind {
                Kind::Namespace => ("AttributeError", format!("no attribute {}", k.repr())),
                _ => key_error(&k),
            }),
        },
        (Object::List(l), Op::Get(k)) => {
            let v = &l[index(&k, l.len(), false)?];
            budget.charge([v])?;
            Ok(v.clone())
        }
        (Object::Dict(d), Op::Lookup(k)) => match d.get(&k) {
            Some(v) => {
                budget.charge([v])?;
                Ok(v.clone())
            }
            None => Ok(PyValue::None),
        },
        (Object::Dict(d), Op::Set(k, v)) => {
            d.insert(k, v);
            Ok(PyValue::None)
        }
        (Object::List(l), Op::Set(k, v)) => {
            let i = index(&k, l.len(), false)?;
            l[i] = v;
            Ok(PyValue::None)
        }
        (Object::Dict(d), Op::Del(k)) => remove_key(d, &k, budget)?
            .map(|_| PyValue::None)
            .ok_or_else(|| key_error(&k)),
        (Object::List(l), Op::Del(k)) => {
            let i = index(&k, l.len(), false)?;
            budget.work(l.len() - i)?;
            l.remove(i);
            Ok(PyValue::None)
        }
        (Object::Dict(d), Op::Pop(k)) => {
            budget.charge(d.get(&k))?;
            remove_key(d, &k, budget)?.ok_or_else(|| key_error(&k))
        }
        (Object::List(l), Op::Pop(k)) => {
            if l.is_empty() {
                return Err(("IndexError", "pop from empty list".into()));
            }
            let i = index(&k, l.len(), false)?;
            budget.charge([&l[i]])?;
            budget.work(l.len() - i)?;
            Ok(l.remove(i))
        }
        (Object::Dict(d), Op::Discard(k)) => {
            budget.charge(d.get(&k))?;
            Ok(remove_key(d, &k, budget)?.unwrap_or(PyValue::None))
        }
        (Object::Dict(d), Op::PopItem) => {
            budget.charge(d.last().into_iter().flat_map(|(k, v)| [k, v]))?;
            d.pop()
                .map(|(k, v)| PyValue::Tuple(vec![k, v]))
                .ok_or_else(|| ("KeyError", "popitem(): dictionary is empty".into()))
        }
        (Object::Dict(d), Op::SetDefault(k, v)) => {
            budget.charge([d.get(&k).unwrap_or(&v)])?;
            Ok(d.entry(k).or_insert(v).clone())
        }
        (Object::Dict(d), Op::Contains(k)) => Ok(PyValue::Bool(d.contains_key(&k))),
        (Object::List(l), Op::Contains(v)) => {
            scan(l, &v, budget)?;
            Ok(PyValue::Bool(l.contains(&v)))
        }
        (Object::Dict(d), Op::Keys) => {
            budget.charge(d.keys())?;
            Ok(PyValue::List(d.keys().cloned().collect()))
        }
        (Object::Dict(d), Op::Values) => {
            budget.charge(d.values())?;
            Ok(PyValue::List(d.values().cloned().collect()))
        }
        (Object::Dict(d), Op::Update(items)) => {
            d.extend(items);
            Ok(PyValue::None)
        }
        (Object::Dict(d), Op::Increment(k, delta)) => {
            let new = match d.get(&k) {
                Some(old) => add(old, &delta)?,
                None => add(&PyValue::Int(0), &delta)?,
            };
            d.insert(k, new.clone());
            Ok(new)
        }
        (Object::List(l), Op::Increment(k, delta)) => {
            let i = index(&k, l.len(), false)?;
            l[i] = add(&l[i], &delta)?;
            Ok(l[i].clone())
        }
        (Object::Dict(d), Op::CompareAndSet(k, expected, new)) => {
            let matches = d.get(&k) == expected.as_ref();
            if matches {
                d.insert(k, new);
            }
            Ok(PyValue::Bool(matches))
        }
        (Object::List(l), Op::CompareAndSet(k, expected, new)) => {
            let i = index(&k, l.len(), false)?;
            let matches = Some(&l[i]) == expected.as_ref();
            if matches {
                l[i] = new;
            }
            Ok(PyValue::Bool(matches))
        }
        (Object::List(l), Op::Append(v)) => {
            l.push(v);
            Ok(PyValue::None)
        }
        (Object::List(l), Op::Extend(vs)) => {
            l.extend(vs);
            Ok(PyValue::None)
        }
        (Object::List(l), Op::Insert(i, v)) => {
            // Python clamps an insert index to the list.
            let len = l.len() as i64;
            let at = if i < 0 { (i + len).max(0) } else { i.min(len) } as usize;
            budget.work(l.len() - at)?;
            l.insert(at, v);
            Ok(PyValue::None)
        }
        (Object::List(l), Op::Remove(v)) => {
            scan(l, &v, budget)?;
            match l.iter().position(|x| *x == v) {
                Some(i) => {
                    l.remove(i);
                    Ok(PyValue::None)
                }
                None => Err(("ValueError", "list.remove(x): x not in list".into())),
            }
        }
        (Object::List(l), Op::Index(v)) => {
            scan(l, &v, budget)?;
            l.iter()
                .position(|x| *x == v)
                .map(|i| PyValue::Int(i as i64))
                .ok_or_else(|| ("ValueError", format!("{} is not in list", v.repr())))
        }
        (Object::List(l), Op::Count(v)) => {
            scan(l, &v, budget)?;
            Ok(PyValue::Int(l.iter().filter(|x| **x == v).count() as i64))
        }
        (Object::List(l), Op::Reverse) => {
            budget.work(l.len())?;
            l.reverse();
            Ok(PyValue::None)
        }
        (Object::List(l), Op::Sort) => {
            // Each of about n log n comparisons walks at most the smaller
            // of two items.
            let mut widest = 0;
            for v in l.iter() {
                let size = limits::size(v);
                budget.work(size)?;
                widest = widest.max(size);
            }
            let n = l.len();
            let compares = n.saturating_mul(n.max(2).ilog2() as usize + 1);
            budget.work(compares.saturating_mul(widest))?;
            sort(l).map_err(type_error)?;
            Ok(PyValue::None)
        }
        (Object::List(l), Op::Slice(a, b)) => {
            let len = l.len() as i64;
            let clamp = |i: i64| (if i < 0 { i + len } else { i }).clamp(0, len) as usize;
            let (a, b) = (clamp(a), clamp(b));
            let items = l.get(a..b).unwrap_or_default();
            budget.charge(items)?;
            Ok(PyValue::List(items.to_vec()))
        }
        (_, op) => Err(type_error(format!(
            "{} is not an operation of a {kind:?}",
            op.name()
        ))),
    }
}

/// Takes the work of comparing `probe` with every item of `items`.
fn scan(
    items: &[PyValue],
    probe: &PyValue,
    budget: &mut Budget,
) -> std::result::Result<(), Exception> {
    budget.work(items.len().saturating_mul(limits::size(probe)))
}

/// `d.pop(k)` keeping the order of the others, which moves those after it.
fn remove_key(
    d: &mut Map,
    k: &PyValue,
    budget: &mut Budget,
) -> std::result::Result<Option<PyValue>, Exception> {
    let Some(i) = d.get_index_of(k) else {
        return Ok(None);
    };
    budget.work(d.len() - i)?;
    Ok(d.shift_remove_index(i).map(|(_, v)| v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A budget far from any limit.
    fn budget() -> Budget {
        Budget::new(usize::MAX / 2, usize::MAX / 2)
    }

    fn dict() -> Object {
        Object::Dict(Map::with_hasher(RandomState::new()))
    }

    /// Applies `op` to `object` as a `kind`: the answer, or the exception's class.
    fn run(kind: Kind, object: &mut Object, op: Op) -> Result<PyValue, &'static str> {
        apply(kind, object, op, &mut budget()).map_err(|(class, _)| class)
    }

    #[test]
    fn dict_operations_are_pythons() {
        let mut d = dict();
        let k = |s: &str| PyValue::from(s);
        assert_eq!(
            run(Kind::Dict, &mut d, Op::Set(k("a"), 1.into())),
            Ok(PyValue::None)
        );
        assert_eq!(
            run(Kind::Dict, &mut d, Op::Set(2.into(), k("b"))),
            Ok(PyValue::None)
        );
        assert_eq!(run(Kind::Dict, &mut d, Op::Len), Ok(2.into()));
        assert_eq!(run(Kind::Dict, &mut d, Op::Get(2.0.into())), Ok(k("b")));
        assert_eq!(run(Kind::Dict, &mut d, Op::Get(k("zz"))), Err("KeyError"));
        assert_eq!(
            run(Kind::Dict, &mut d, Op::Lookup(k("zz"))),
            Ok(PyValue::None)
        );
        assert_eq!(
            run(Kind::Dict, &mut d, Op::Increment(k("a"), 2.5.into())),
            Ok(3.5.into())
        );
        assert_eq!(
            run(Kind::Dict, &mut d, Op::Increment(k("n"), 1.into())),
            Ok(1.into())
        );
        assert_eq!(
            run(Kind::Dict, &mut d, Op::Increment(2.into(), 1.into())),
            Err("TypeError")
        );
        assert_eq!(
            run(Kind::Dict, &mut d, Op::Increment(k("n"), i64::MAX.into())),
            Err("OverflowError")
        );
        assert_eq!(
            run(
                Kind::Dict,
                &mut d,
                Op::CompareAndSet(k("n"), Some(1.into()), 5.into())
            ),
            Ok(true.into())
        );
        assert_eq!(
            run(
                Kind::Dict,
                &mut d,
                Op::CompareAndSet(k("n"), None, 6.into())
            ),
            Ok(false.into())
        );
        // Insertion order, kept by a removal.
        assert_eq!(run(Kind::Dict, &mut d, Op::Pop(2.into())), Ok(k("b")));
        assert_eq!(
            run(Kind::Dict, &mut d, Op::Keys),
            Ok(PyValue::List(vec![k("a"), k("n")]))
        );
        assert_eq!(
            run(Kind::Dict, &mut d, Op::PopItem),
            Ok(PyValue::Tuple(vec![k("n"), 5.into()]))
        );
        assert_eq!(
            run(Kind::Dict, &mut d, Op::Append(1.into())),
            Err("TypeError")
        );
        assert_eq!(
            run(Kind::Namespace, &mut d, Op::Get(k("missing"))),
            Err("AttributeError")
        );
    }

    #[test]
    fn list_operations_are_pythons() {
        let mut l = Object::List(Vec::new());
        let items: Vec<PyValue> = [3, 1, 2].into_iter().map(PyValue::from).collect();
        run(Kind::List, &mut l, Op::Extend(items)).unwrap();
        assert_eq!(run(Kind::List, &mut l, Op::Get((-1).into())), Ok(2.into()));
        assert_eq!(
            run(Kind::List, &mut l, Op::Get(3.into())),
            Err("IndexError")
        );
        assert_eq!(
            run(Kind::List, &mut l, Op::Get("0".into())),
            Err("TypeError")
        );
        // An insert index is clamped, as in Python.
        run(Kind::List, &mut l, Op::Insert(-100, 0.into())).unwrap();
        run(Kind::List, &mut l, Op::Insert(100, 9.into())).unwrap();
        run(Kind::List, &mut l, Op::Sort).unwrap();
        assert_eq!(
            run(Kind::List, &mut l, Op::Snapshot),
            Ok(PyValue::from(vec![0, 1, 2, 3, 9]))
        );
        assert_eq!(
            run(Kind::List, &mut l, Op::Slice(-3, 100)),
            Ok(PyValue::from(vec![2, 3, 9]))
        );
        assert_eq!(run(Kind::List, &mut l, Op::Index(9.0.into())), Ok(4.into()));
        assert_eq!(
            run(Kind::List, &mut l, Op::Remove(7.into())),
            Err("ValueError")
        );
        assert_eq!(run(Kind::List, &mut l, Op::Pop((-1).into())), Ok(9.into()));
        run(Kind::List, &mut l, Op::Reverse).unwrap();
        assert_eq!(
            run(Kind::List, &mut l, Op::Snapshot),
            Ok(PyValue::from(vec![3, 2, 1, 0]))
        );
        run(Kind::List, &mut l, Op::Clear).unwrap();
        assert_eq!(
            run(Kind::List, &mut l, Op::Pop((-1).into())),
            Err("IndexError")
        );
        assert_eq!(run(Kind::List, &mut l, Op::Keys), Err("TypeError"));
    }

    #[test]
    fn an_operation_over_budget_is_refused_before_it_is_done() {
        let mut l = Object::List(vec![PyValue::None; 1000]);
        let mut tight = Budget::new(16, usize::MAX / 2);
        assert_eq!(
            apply(Kind::List, &mut l, Op::Snapshot, &mut tight).map_err(|(c, _)| c),
            Err("MemoryError")
        );
        let mut l = Object::List(vec![PyValue::None; 1000]);
        assert_eq!(run(Kind::List, &mut l, Op::Len), Ok(1000.into()));
    }
}
