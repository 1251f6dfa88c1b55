//! The manager server: owns the objects and serves each client connection
//! on a thread of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use indexmap::IndexMap;

use super::protocol::{Id, Kind, Op, Request, Response};
use super::Value;
use crate::conn::{Connection, Listener};

/// The largest request the server accepts: a frame over this closes that
/// connection before anything is allocated for it.
pub(crate) const MAX_REQUEST: usize = 16 << 20;

/// A fast hasher for the server's dicts (the Fx hash of rustc): SipHash's
/// protection against hash flooding is not needed for authenticated
/// clients, and it costs more than the rest of a small insert.
#[derive(Default)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(n.into());
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        // The product's entropy is in its high bits; the table indexes by
        // the low ones (rustc-hash does the same).
        self.0.rotate_left(26)
    }
}

type Map = IndexMap<Value, Value, std::hash::BuildHasherDefault<FxHasher>>;

enum Object {
    /// Dicts and namespaces (whose keys are names).
    Dict(Map),
    List(Vec<Value>),
}

struct Entry {
    kind: Kind,
    refs: u64,
    object: Object,
}

#[derive(Default)]
struct Objects {
    next: Id,
    table: HashMap<Id, Entry>,
}

type Outcome = std::result::Result<Value, (&'static str, String)>;

fn key_error(key: &Value) -> (&'static str, String) {
    ("KeyError", format!("{key:?}"))
}

fn type_error(msg: String) -> (&'static str, String) {
    ("TypeError", msg)
}

/// A Python index into a list of `len` items, negative from the end.
fn index(
    key: &Value,
    len: usize,
    inserting: bool,
) -> std::result::Result<usize, (&'static str, String)> {
    let Value::Int(i) = *key else {
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

/// `a + b` for ints and floats.
fn add(a: &Value, b: &Value) -> Outcome {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x
            .checked_add(*y)
            .map(Value::Int)
            .ok_or_else(|| ("OverflowError", format!("{x} + {y} overflows a 64-bit int"))),
        (Value::Int(x), Value::Float(y)) => Ok(Value::Float(*x as f64 + y)),
        (Value::Float(x), Value::Int(y)) => Ok(Value::Float(x + *y as f64)),
        (Value::Float(x), Value::Float(y)) => Ok(Value::Float(x + y)),
        _ => Err(type_error(format!(
            "unsupported operand types for +=: '{}' and '{}'",
            a.type_name(),
            b.type_name()
        ))),
    }
}

fn apply(entry: &mut Entry, op: Op) -> Outcome {
    let kind = entry.kind;
    match (&mut entry.object, op) {
        (Object::Dict(d), Op::Len) => Ok(Value::Int(d.len() as i64)),
        (Object::List(l), Op::Len) => Ok(Value::Int(l.len() as i64)),
        (Object::Dict(d), Op::Clear) => {
            d.clear();
            Ok(Value::None)
        }
        (Object::List(l), Op::Clear) => {
            l.clear();
            Ok(Value::None)
        }
        (Object::Dict(d), Op::Snapshot) => Ok(Value::Dict(
            d.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        )),
        (Object::List(l), Op::Snapshot) => Ok(Value::List(l.clone())),
        (Object::Dict(d), Op::Get(k)) => d.get(&k).cloned().ok_or_else(|| match kind {
            Kind::Namespace => ("AttributeError", format!("no attribute {k:?}")),
            _ => key_error(&k),
        }),
        (Object::List(l), Op::Get(k)) => Ok(l[index(&k, l.len(), false)?].clone()),
        (Object::Dict(d), Op::Lookup(k)) => Ok(d.get(&k).cloned().unwrap_or(Value::None)),
        (Object::Dict(d), Op::Set(k, v)) => {
            d.insert(k, v);
            Ok(Value::None)
        }
        (Object::List(l), Op::Set(k, v)) => {
            let i = index(&k, l.len(), false)?;
            l[i] = v;
            Ok(Value::None)
        }
        (Object::Dict(d), Op::Del(k)) => d
            .shift_remove(&k)
            .map(|_| Value::None)
            .ok_or_else(|| key_error(&k)),
        (Object::List(l), Op::Del(k)) => {
            let i = index(&k, l.len(), false)?;
            l.remove(i);
            Ok(Value::None)
        }
        (Object::Dict(d), Op::Pop(k)) => d.shift_remove(&k).ok_or_else(|| key_error(&k)),
        (Object::List(l), Op::Pop(k)) => {
            if l.is_empty() {
                return Err(("IndexError", "pop from empty list".into()));
            }
            let i = index(&k, l.len(), false)?;
            Ok(l.remove(i))
        }
        (Object::Dict(d), Op::Discard(k)) => Ok(d.shift_remove(&k).unwrap_or(Value::None)),
        (Object::Dict(d), Op::PopItem) => d
            .pop()
            .map(|(k, v)| Value::Tuple(vec![k, v]))
            .ok_or_else(|| ("KeyError", "popitem(): dictionary is empty".into())),
        (Object::Dict(d), Op::SetDefault(k, v)) => Ok(d.entry(k).or_insert(v).clone()),
        (Object::Dict(d), Op::Contains(k)) => Ok(Value::Bool(d.contains_key(&k))),
        (Object::List(l), Op::Contains(v)) => Ok(Value::Bool(l.contains(&v))),
        (Object::Dict(d), Op::Keys) => Ok(Value::List(d.keys().cloned().collect())),
        (Object::Dict(d), Op::Values) => Ok(Value::List(d.values().cloned().collect())),
        (Object::Dict(d), Op::Update(items)) => {
            d.extend(items);
            Ok(Value::None)
        }
        (Object::Dict(d), Op::Increment(k, delta)) => {
            let new = match d.get(&k) {
                Some(old) => add(old, &delta)?,
                None => add(&Value::Int(0), &delta)?,
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
            Ok(Value::Bool(matches))
        }
        (Object::List(l), Op::CompareAndSet(k, expected, new)) => {
            let i = index(&k, l.len(), false)?;
            let matches = Some(&l[i]) == expected.as_ref();
            if matches {
                l[i] = new;
            }
            Ok(Value::Bool(matches))
        }
        (Object::List(l), Op::Append(v)) => {
            l.push(v);
            Ok(Value::None)
        }
        (Object::List(l), Op::Extend(vs)) => {
            l.extend(vs);
            Ok(Value::None)
        }
        (Object::List(l), Op::Insert(i, v)) => {
            // Python clamps an insert index to the list.
            let len = l.len() as i64;
            let at = if i < 0 { (i + len).max(0) } else { i.min(len) };
            l.insert(at as usize, v);
            Ok(Value::None)
        }
        (Object::List(l), Op::Remove(v)) => match l.iter().position(|x| *x == v) {
            Some(i) => {
                l.remove(i);
                Ok(Value::None)
            }
            None => Err(("ValueError", "list.remove(x): x not in list".into())),
        },
        (Object::List(l), Op::Index(v)) => l
            .iter()
            .position(|x| *x == v)
            .map(|i| Value::Int(i as i64))
            .ok_or_else(|| ("ValueError", format!("{v:?} is not in list"))),
        (Object::List(l), Op::Count(v)) => {
            Ok(Value::Int(l.iter().filter(|x| **x == v).count() as i64))
        }
        (Object::List(l), Op::Reverse) => {
            l.reverse();
            Ok(Value::None)
        }
        (Object::List(l), Op::Sort) => {
            l.sort();
            Ok(Value::None)
        }
        (Object::List(l), Op::Slice(a, b)) => {
            let len = l.len() as i64;
            let clamp = |i: i64| (if i < 0 { i + len } else { i }).clamp(0, len) as usize;
            let (a, b) = (clamp(a), clamp(b));
            Ok(Value::List(if a < b {
                l[a..b].to_vec()
            } else {
                Vec::new()
            }))
        }
        (_, op) => Err(type_error(format!(
            "{op:?} is not an operation of a {kind:?}"
        ))),
    }
}

impl Objects {
    fn handle(&mut self, req: Request) -> Response {
        let outcome = match req {
            Request::Create(kind) => {
                self.next += 1;
                let object = match kind {
                    Kind::List => Object::List(Vec::new()),
                    Kind::Dict | Kind::Namespace => Object::Dict(Map::default()),
                };
                self.table.insert(
                    self.next,
                    Entry {
                        kind,
                        refs: 1,
                        object,
                    },
                );
                return Response::Created(self.next);
            }
            Request::Incref(id) => self.entry(id).map(|e| {
                e.refs += 1;
                Value::None
            }),
            Request::Decref(id) => self
                .entry(id)
                .map(|e| e.refs = e.refs.saturating_sub(1))
                .map(|()| {
                    if self.table.get(&id).is_some_and(|e| e.refs == 0) {
                        self.table.remove(&id);
                    }
                    Value::None
                }),
            Request::Call(id, op) => self.entry(id).and_then(|e| apply(e, op)),
            Request::Batch(ops) => {
                return Response::Batch(
                    ops.into_iter()
                        .map(|(id, op)| self.handle(Request::Call(id, op)))
                        .collect(),
                )
            }
            Request::NumberOfObjects => Ok(Value::Int(self.table.len() as i64)),
            Request::Shutdown => Ok(Value::None),
        };
        match outcome {
            Ok(v) => Response::Value(v),
            Err((kind, message)) => Response::Error {
                kind: kind.into(),
                message,
            },
        }
    }

    fn entry(&mut self, id: Id) -> std::result::Result<&mut Entry, (&'static str, String)> {
        self.table
            .get_mut(&id)
            .ok_or_else(|| ("ReferenceError", format!("the manager has no object {id}")))
    }
}

/// Serves clients until one asks for a shutdown (or, with `parent`, until
/// that process is gone); then removes the socket file and exits. Each
/// client gets a thread, which first runs its handshake: a slow or hostile
/// client delays no one else.
pub(crate) fn serve(listener: Listener, parent: Option<u32>) -> ! {
    crate::sys::flush_stdio();
    let objects = Arc::new(Mutex::new(Objects::default()));
    let listener = Arc::new(listener);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&*listener);
    loop {
        // Wake up now and then to see whether the parent is still there.
        let ready = crate::sys::poll_readable(&[fd], Some(std::time::Duration::from_secs(1)));
        if parent.is_some_and(|p| std::os::unix::process::parent_id() != p) {
            listener.remove_socket_file();
            crate::sys::exit_now(0);
        }
        if !matches!(ready.as_deref(), Ok([true])) {
            continue;
        }
        match listener.accept_unauthenticated() {
            Ok(conn) => {
                let (objects, listener) = (objects.clone(), listener.clone());
                // Out of threads: this client's connection closes; the others go on.
                let _ = std::thread::Builder::new()
                    .name("manager-client".into())
                    .spawn(move || serve_client(conn, &objects, &listener));
            }
            // E.g. out of descriptors: back off instead of spinning.
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
}

fn serve_client(mut conn: Connection, objects: &Mutex<Objects>, listener: &Listener) {
    if listener.authenticate(&mut conn).is_err() {
        return;
    }
    conn.set_max_message(MAX_REQUEST);
    // The references this connection (one client process) holds: released
    // when it closes, however the client ended, so that a process that
    // exits or is killed never leaks an object.
    let mut held: HashMap<Id, u64> = HashMap::new();
    // Malformed input or a vanished client ends this connection only.
    while let Ok(req) = conn.recv::<Request>() {
        let shutdown = matches!(req, Request::Shutdown);
        let response = {
            let mut objects = objects.lock().unwrap_or_else(PoisonError::into_inner);
            match req {
                // A connection may only give back references it holds.
                Request::Decref(id) if held.get(&id).is_none_or(|&n| n == 0) => Response::Error {
                    kind: "ReferenceError".into(),
                    message: format!("this connection holds no reference to object {id}"),
                },
                Request::Decref(id) => {
                    *held.entry(id).or_default() -= 1;
                    objects.handle(Request::Decref(id))
                }
                Request::Incref(id) => {
                    let r = objects.handle(Request::Incref(id));
                    if matches!(r, Response::Value(_)) {
                        *held.entry(id).or_default() += 1;
                    }
                    r
                }
                req => {
                    let r = objects.handle(req);
                    if let Response::Created(id) = r {
                        *held.entry(id).or_default() += 1;
                    }
                    r
                }
            }
        };
        if conn.send(&response).is_err() {
            break;
        }
        if shutdown {
            listener.remove_socket_file();
            crate::sys::exit_now(0);
        }
    }
    let mut objects = objects.lock().unwrap_or_else(PoisonError::into_inner);
    for (id, n) in held {
        for _ in 0..n {
            objects.handle(Request::Decref(id));
        }
    }
}
