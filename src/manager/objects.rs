//! The object table: every object a manager holds, their reference
//! counts, and one encoded command in, one encoded response out (without
//! sockets: the event loop in `server` feeds it frames).

use std::collections::HashMap;
use std::hash::RandomState;

use super::apply::{apply, Map, Object};
use super::limits::{self, Budget};
use super::protocol::{Command, Exception, Id, Kind, Response};
use super::refs;
use super::PyValue;

/// The largest frame either way: a request over this closes that
/// connection before anything is allocated for it, and an answer that
/// would exceed it is refused with a `MemoryError` before it is built.
pub(crate) const MAX_FRAME: usize = 16 << 20;

/// Room in a frame for the answer's own tags around what the budget counts.
const FRAME_SLACK: usize = 64;

/// The most memory one request may take: decoding it, and the copies its
/// answer is built from.
const REQUEST_MEMORY: usize = 4 * MAX_FRAME;

/// One object and its reference count.
struct Entry {
    kind: Kind,
    refs: u64,
    object: Object,
}

/// Every object of one manager.
pub(super) struct Objects {
    next: Id,
    table: HashMap<Id, Entry>,
    /// The key of every dict's hasher.
    hasher: RandomState,
}

/// The answer for a Python exception.
fn error((kind, message): Exception) -> Response {
    Response::Error {
        kind: kind.into(),
        message,
    }
}

/// Runs `f` (a command), but a panic (a bug) fails only the request it happened in:
/// the answer is an error and the server goes on serving everyone. The
/// object table stays consistent: values are never left half-made, and the
/// references of those dropped while unwinding are recorded as ever.
fn survive_panic(f: impl FnOnce() -> Response) -> Response {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        error((
            "SystemError",
            "the manager server failed on this request (a bug); it goes on serving".into(),
        ))
    })
}

/// What every answer in a batch costs beyond the stored values it copies:
/// its tag and a scalar, or its error's text.
fn answer_overhead(r: &Response) -> usize {
    16 + match r {
        Response::Error { kind, message } => kind.len() + message.len(),
        _ => 0,
    }
}

impl Objects {
    /// Executes one command, within `budget`.
    fn execute(&mut self, req: Command, budget: &mut Budget) -> Response {
        let result = match req {
            Command::Create(kind) => {
                self.next += 1;
                let object = match kind {
                    Kind::List => Object::List(Vec::new()),
                    Kind::Dict | Kind::Namespace => {
                        Object::Dict(Map::with_hasher(self.hasher.clone()))
                    }
                    Kind::Iterator | Kind::Queue | Kind::JoinableQueue => {
                        return error((
                            "TypeError",
                            format!("this server cannot create a {kind:?}"),
                        ));
                    }
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
            Command::Incref(id) => self.entry(id).map(|e| {
                e.refs += 1;
                PyValue::None
            }),
            Command::Decref(id) => self.entry(id).map(|_| ()).map(|()| {
                self.decref(id);
                PyValue::None
            }),
            Command::Call(id, op) => self
                .entry(id)
                .and_then(|e| apply(e.kind, &mut e.object, op, budget)),
            Command::Batch(ops) => {
                let mut answers = Vec::with_capacity(ops.len());
                for (id, op) in ops {
                    let r = self.execute(Command::Call(id, op), budget);
                    let r = match budget.charge_bytes(answer_overhead(&r)) {
                        Ok(()) => r,
                        Err(e) => error(e),
                    };
                    // Once something is refused, the rest is not done.
                    if let (true, Response::Error { kind, message }) = (budget.spent(), &r) {
                        return Response::Error {
                            kind: kind.clone(),
                            message: format!("{message} (the operations before it were done)"),
                        };
                    }
                    answers.push(r);
                }
                return Response::Batch(answers);
            }
            Command::NumberOfObjects => Ok(PyValue::Int(self.table.len() as i64)),
            Command::Shutdown => Ok(PyValue::None),
        };
        result.map_or_else(error, Response::Value)
    }

    fn entry(&mut self, id: Id) -> std::result::Result<&mut Entry, Exception> {
        self.table
            .get_mut(&id)
            .ok_or_else(|| ("ReferenceError", format!("the manager has no object {id}")))
    }
}

impl Objects {
    pub(super) fn new() -> Objects {
        // Ids start at a random point, so that a proxy of another manager,
        // stored here by mistake, names no object of this one.
        let mut seed = [0u8; 8];
        let _ = crate::sys::random_bytes(&mut seed);
        Objects {
            next: u64::from_le_bytes(seed) >> 2,
            table: HashMap::new(),
            hasher: RandomState::new(),
        }
    }

    /// Gives back one reference; the last one frees the object.
    pub(super) fn decref(&mut self, id: Id) {
        if let Some(e) = self.table.get_mut(&id) {
            e.refs = e.refs.saturating_sub(1);
            if e.refs == 0 {
                // Dropping it gives back the references its values held.
                self.table.remove(&id);
            }
        }
    }

    /// Applies the references that `ProxyRef`s took and gave back (by
    /// being decoded, cloned, stored or dropped), taking before giving
    /// back, until freeing objects frees no more.
    pub(super) fn settle(&mut self) {
        loop {
            let deltas = refs::take_deltas();
            if deltas.is_empty() {
                return;
            }
            for &(id, _) in deltas.iter().filter(|(_, d)| *d > 0) {
                if let Some(e) = self.table.get_mut(&id) {
                    e.refs += 1;
                }
            }
            for &(id, _) in deltas.iter().filter(|(_, d)| *d < 0) {
                self.decref(id);
            }
        }
    }

    /// Serves one encoded request of a connection holding `held`: the
    /// encoded response, whether it asked for a shutdown and the work it
    /// took, or `None` if it was malformed (which ends the connection).
    pub(super) fn answer(
        &mut self,
        frame: &[u8],
        held: &mut HashMap<Id, u64>,
    ) -> Option<(Vec<u8>, bool, usize)> {
        let (req, exceeded, memory) =
            limits::decode_limited(REQUEST_MEMORY, || postcard::from_bytes::<Command>(frame));
        // Proxies inside the request must name objects of this manager.
        let decoded = refs::take_decoded();
        let mut work = 0;
        let (response, shutdown) = match (req, exceeded) {
            (Ok(req), _) => {
                let shutdown = matches!(req, Command::Shutdown);
                let unknown = decoded
                    .iter()
                    .find(|(kind, id)| self.table.get(id).is_none_or(|e| e.kind != *kind));
                let response = match unknown {
                    Some((kind, id)) => error((
                        "ReferenceError",
                        format!("this manager has no {kind:?} object {id}"),
                    )),
                    None => {
                        let mut budget = Budget::new(MAX_FRAME - FRAME_SLACK, memory);
                        let r = survive_panic(|| self.run(req, held, &mut budget));
                        work = budget.work_done();
                        r
                    }
                };
                (response, shutdown)
            }
            // Too deep or too large, but a whole frame: the stream goes on.
            (Err(_), Some(why)) => (error(why.error(REQUEST_MEMORY)), false),
            (Err(_), None) => {
                self.settle();
                return None;
            }
        };
        let mut bytes = postcard::to_allocvec(&response);
        // The budget keeps answers within a frame; should it ever fail,
        // the answer is refused whole rather than cut.
        if bytes.as_ref().is_ok_and(|b| b.len() > MAX_FRAME) {
            refs::take_sent();
            bytes = postcard::to_allocvec(&error((
                "MemoryError",
                "the answer would exceed the frame limit; ask for less at a time".into(),
            )));
        }
        drop(response);
        // The client holds a reference to each proxy in the response.
        let sent = refs::take_sent();
        let answer = match bytes {
            Ok(bytes) => {
                for id in sent {
                    if let Some(e) = self.table.get_mut(&id) {
                        e.refs += 1;
                        *held.entry(id).or_default() += 1;
                    }
                }
                Some((bytes, shutdown, work))
            }
            Err(_) => None,
        };
        self.settle();
        answer
    }

    /// Serves one request of a connection holding the references `held`.
    fn run(&mut self, req: Command, held: &mut HashMap<Id, u64>, budget: &mut Budget) -> Response {
        match req {
            // A connection may only give back references it holds.
            Command::Decref(id) if held.get(&id).is_none_or(|&n| n == 0) => Response::Error {
                kind: "ReferenceError".into(),
                message: format!("this connection holds no reference to object {id}"),
            },
            Command::Decref(id) => {
                *held.entry(id).or_default() -= 1;
                self.execute(Command::Decref(id), budget)
            }
            Command::Incref(id) => {
                let r = self.execute(Command::Incref(id), budget);
                if matches!(r, Response::Value(_)) {
                    *held.entry(id).or_default() += 1;
                }
                r
            }
            req => {
                let r = self.execute(req, budget);
                if let Response::Created(id) = r {
                    *held.entry(id).or_default() += 1;
                }
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::manager::protocol::Op;
    use crate::manager::MAX_DEPTH;

    /// One server's object table and one connection's references.
    struct Server {
        objects: Objects,
        held: HashMap<Id, u64>,
    }

    impl Server {
        fn new() -> Server {
            Server {
                objects: Objects::new(),
                held: HashMap::new(),
            }
        }

        fn frame(&mut self, frame: &[u8]) -> Response {
            let (bytes, ..) = self.objects.answer(frame, &mut self.held).expect("a reply");
            assert!(bytes.len() <= MAX_FRAME);
            postcard::from_bytes(&bytes).unwrap()
        }

        fn ask(&mut self, req: Command) -> Response {
            self.frame(&postcard::to_allocvec(&req).unwrap())
        }

        fn create(&mut self, kind: Kind) -> Id {
            match self.ask(Command::Create(kind)) {
                Response::Created(id) => id,
                _ => panic!("not created"),
            }
        }

        fn call(&mut self, id: Id, op: Op) -> std::result::Result<PyValue, String> {
            match self.ask(Command::Call(id, op)) {
                Response::Value(v) => Ok(v),
                Response::Error { kind, .. } => Err(kind),
                _ => panic!("not a value"),
            }
        }
    }

    /// A request to call `op` (its postcard bytes) on `id`, whose last
    /// argument is a list nested `depth` deep around an int: encoded by
    /// hand, as encoding it recursively could itself exhaust the stack.
    fn deep_call(id: Id, op: u8, depth: usize) -> Vec<u8> {
        let mut frame = vec![3]; // Command::Call
        let mut id = id;
        while id >= 0x80 {
            frame.push(id as u8 | 0x80);
            id >>= 7;
        }
        frame.push(id as u8);
        frame.push(op);
        for _ in 0..depth {
            frame.extend([6, 1]); // PyValue::List of one item
        }
        frame.extend([2, 2]); // PyValue::Int(1)
        frame
    }

    const OP_LOOKUP: u8 = 4;
    const OP_APPEND: u8 = 17;

    fn error_kind(r: Response) -> String {
        match r {
            Response::Error { kind, .. } => kind,
            Response::Batch(rs) => panic!("expected an error, got {} answers", rs.len()),
            _ => panic!("expected an error"),
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "too slow under Miri")]
    fn values_nested_too_deep_get_an_error_reply_and_the_deepest_accepted_are_served() {
        let mut s = Server::new();
        let l = s.create(Kind::List);
        let d = s.create(Kind::Dict);
        // 35,000 levels aborted the server (issue 12.2); now refused.
        assert_eq!(
            error_kind(s.frame(&deep_call(l, OP_APPEND, 35_000))),
            "RecursionError"
        );
        assert_eq!(
            error_kind(s.frame(&deep_call(d, OP_LOOKUP, 25_000))),
            "RecursionError"
        );
        // The deepest accepted value, through every walk of the server.
        for _ in 0..3 {
            assert!(matches!(
                s.frame(&deep_call(l, OP_APPEND, MAX_DEPTH - 1)),
                Response::Value(PyValue::None)
            ));
        }
        let deep = s.call(l, Op::Get(PyValue::Int(0))).unwrap();
        assert_eq!(s.call(l, Op::Count(deep.clone())), Ok(PyValue::Int(3)));
        s.call(l, Op::Sort).unwrap();
        s.call(l, Op::Snapshot).unwrap();
        s.call(d, Op::Set(deep.clone(), deep.clone())).unwrap();
        assert_eq!(
            s.call(d, Op::Get(PyValue::List(vec![deep.clone()]))),
            Err("KeyError".into())
        );
        s.call(d, Op::Snapshot).unwrap();
        s.call(d, Op::Clear).unwrap();
        s.call(l, Op::Clear).unwrap();
    }

    #[test]
    fn numbers_are_one_key_and_sort_as_python_sorts_them() {
        let mut s = Server::new();
        let d = s.create(Kind::Dict);
        for (i, k) in [PyValue::Int(1), PyValue::Float(1.0), PyValue::Bool(true)]
            .into_iter()
            .enumerate()
        {
            s.call(d, Op::Set(k, PyValue::Int(i as i64))).unwrap();
        }
        assert_eq!(s.call(d, Op::Len), Ok(PyValue::Int(1)));
        assert_eq!(s.call(d, Op::Get(PyValue::Float(1.0))), Ok(PyValue::Int(2)));
        // The sort that panicked the server (issue 12.3).
        let l = s.create(Kind::List);
        let big = 1i64 << 53;
        let items = (0..7)
            .flat_map(|_| {
                [
                    PyValue::Int(big),
                    PyValue::Float(big as f64),
                    PyValue::Int(big + 1),
                ]
            })
            .collect();
        s.call(l, Op::Extend(items)).unwrap();
        s.call(l, Op::Sort).unwrap();
        assert_eq!(
            s.call(l, Op::Get(PyValue::Int(-1))),
            Ok(PyValue::Int(big + 1))
        );
        // What Python refuses to sort is a TypeError; the list is as it was.
        let mixed = s.create(Kind::List);
        let items = vec![PyValue::Int(1), PyValue::Str("a".into())];
        s.call(mixed, Op::Extend(items.clone())).unwrap();
        assert_eq!(s.call(mixed, Op::Sort), Err("TypeError".into()));
        assert_eq!(s.call(mixed, Op::Snapshot), Ok(PyValue::List(items)));
    }

    #[test]
    fn a_panic_fails_only_its_request() {
        let r = survive_panic(|| panic!("a bug"));
        assert_eq!(error_kind(r), "SystemError");
        let mut s = Server::new();
        let d = s.create(Kind::Dict);
        s.call(d, Op::Set(PyValue::Int(1), PyValue::Int(2)))
            .unwrap();
        assert_eq!(s.call(d, Op::Len), Ok(PyValue::Int(1)));
    }

    #[test]
    fn dicts_hash_under_a_key_of_each_server() {
        use std::hash::BuildHasher;
        let (a, b) = (Objects::new(), Objects::new());
        let key = PyValue::Int(12345);
        assert_ne!(a.hasher.hash_one(&key), b.hasher.hash_one(&key));
    }

    #[test]
    #[cfg_attr(miri, ignore = "too slow under Miri")]
    fn one_request_costs_bounded_memory_and_answers_within_a_frame() {
        let mut s = Server::new();
        let l = s.create(Kind::List);
        s.call(l, Op::Extend(vec![PyValue::Int(7); 1000])).unwrap();
        // 40,000 snapshots of a 1000-item list in one batch needed 1.3 GB
        // (issue 12.6): refused once the answer would pass a frame.
        let t = Instant::now();
        let batch = Command::Batch((0..40_000).map(|_| (l, Op::Snapshot)).collect());
        assert_eq!(error_kind(s.ask(batch)), "MemoryError");
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        // An extend of 4 Mi Nones (4 MiB) would take 128 MiB: refused
        // while decoding.
        let mut frame = vec![3];
        frame.extend(postcard::to_allocvec(&l).unwrap());
        frame.push(18); // Op::Extend
        frame.extend(postcard::to_allocvec(&(4u32 << 20)).unwrap());
        frame.resize(frame.len() + (4 << 20), 0);
        assert_eq!(error_kind(s.frame(&frame)), "MemoryError");
        assert_eq!(s.call(l, Op::Len), Ok(PyValue::Int(1000)));
        // A snapshot larger than a frame is refused before it is copied;
        // a slice that fits is served.
        let big = PyValue::Str("x".repeat(1 << 20));
        for _ in 0..17 {
            s.call(l, Op::Append(big.clone())).unwrap();
        }
        assert_eq!(s.call(l, Op::Snapshot), Err("MemoryError".into()));
        assert!(s.call(l, Op::Slice(0, 1010)).is_ok());
    }

    #[test]
    #[cfg_attr(miri, ignore = "too slow under Miri")]
    fn one_request_does_bounded_work() {
        let mut s = Server::new();
        let l = s.create(Kind::List);
        for _ in 0..4 {
            s.call(l, Op::Extend(vec![PyValue::Int(1); 1 << 18]))
                .unwrap();
        }
        // A million comparisons are served; a batch of a hundred such
        // scans, or of a thousand inserts at the front, is refused whole
        // before it is done.
        assert_eq!(
            s.call(l, Op::Count(PyValue::Int(1))),
            Ok(PyValue::Int(1 << 20))
        );
        let t = Instant::now();
        let scans = Command::Batch((0..100).map(|_| (l, Op::Count(PyValue::Int(1)))).collect());
        assert_eq!(error_kind(s.ask(scans)), "RuntimeError");
        let inserts = Command::Batch(
            (0..1000)
                .map(|_| (l, Op::Insert(0, PyValue::None)))
                .collect(),
        );
        assert_eq!(error_kind(s.ask(inserts)), "RuntimeError");
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        // The inserts before the refused one were done, as in a loop of calls.
        let Ok(PyValue::Int(n)) = s.call(l, Op::Len) else {
            panic!("no length")
        };
        assert!(n > 1 << 20 && n < (1 << 20) + 1000);
    }
}
