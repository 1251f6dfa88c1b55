//! For the criterion benches and the profiler only (not part of the API):
//! a manager server's request handling in this process, without a socket,
//! so that decoding, applying and encoding can be measured and profiled
//! alone.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::apply::{keyed, Map};
use super::dispatch::wire;
use super::objects::{Answer, Objects, Session};
use super::protocol::{Kind, Op};
use super::{calls, client, de, pickle, ser};
use super::{refs, PyValue};

/// A server's objects with one dict, served in this process.
pub struct Codec {
    objects: Objects,
    session: Session,
    dict: String,
}

impl Default for Codec {
    fn default() -> Codec {
        Codec::new()
    }
}

impl Codec {
    /// A server with one empty dict (created as a held connection's, as a
    /// Rust client's are).
    pub fn new() -> Codec {
        refs::start();
        let address = PyValue::Str("/tmp/multiproc-bench.sock".into());
        let mut codec = Codec {
            objects: Objects::new(address, HashMap::new()),
            session: Session::default(),
            dict: String::new(),
        };
        codec.answer(&codec.request(None, "_multiproc_hold", vec![]));
        let reply = codec.answer(&codec.request(None, "create", vec!["dict".into()]));
        let reply = wire::loads(
            &reply,
            &mut super::limits::Budget::new(usize::MAX, usize::MAX),
        )
        .expect("a reply");
        let PyValue::Tuple(t) = reply else {
            panic!("create answered {reply:?}")
        };
        let Some(PyValue::Tuple(r)) = t.get(1) else {
            panic!("create answered {t:?}")
        };
        let Some(PyValue::Str(ident)) = r.first() else {
            panic!("create answered {r:?}")
        };
        codec.dict = ident.clone();
        codec
    }

    fn request(&self, ident: Option<&str>, method: &str, args: Vec<PyValue>) -> Vec<u8> {
        let req = PyValue::Tuple(vec![
            ident.map_or(PyValue::None, |i| PyValue::Str(i.into())),
            method.into(),
            PyValue::Tuple(args),
            PyValue::Dict(Vec::new()),
        ]);
        wire::dumps(&req, &PyValue::None)
    }

    /// The request `d.update({k: v, …})` of the items given (ints), as
    /// the Rust client encodes it.
    pub fn update_request(&self, items: impl IntoIterator<Item = (i64, i64)>) -> Vec<u8> {
        let dict = items
            .into_iter()
            .map(|(k, v)| (PyValue::Int(k), PyValue::Int(v)))
            .collect();
        self.request(Some(&self.dict), "update", vec![PyValue::Dict(dict)])
    }

    /// The request `d[k] = v` (`__setitem__`), as the Rust client encodes it.
    pub fn set_request(&self, k: i64, v: i64) -> Vec<u8> {
        self.request(
            Some(&self.dict),
            "__setitem__",
            vec![PyValue::Int(k), PyValue::Int(v)],
        )
    }

    /// The request `d.get(k)`, as the Rust client encodes it.
    pub fn get_request(&self, k: i64) -> Vec<u8> {
        self.request(Some(&self.dict), "get", vec![PyValue::Int(k)])
    }

    /// The request `d.clear()`.
    pub fn clear_request(&self) -> Vec<u8> {
        self.request(Some(&self.dict), "clear", vec![])
    }

    /// The request of `get_many(keys)` (ints), as the Rust client encodes
    /// it for multiproc's server (`_multiproc_get_many`).
    pub fn get_many_request(&self, keys: impl IntoIterator<Item = i64>) -> Vec<u8> {
        let keys = keys.into_iter().map(PyValue::Int).collect();
        self.request(
            Some(&self.dict),
            "_multiproc_get_many",
            vec![PyValue::List(keys)],
        )
    }

    /// The request of `get_many(keys)` (ints) as a batch of one `get`
    /// request per key (`_multiproc_batch`, how any operations are batched).
    pub fn get_batch_request(&self, keys: impl IntoIterator<Item = i64>) -> Vec<u8> {
        let ident = PyValue::Str(self.dict.clone());
        let items = keys
            .into_iter()
            .map(|k| {
                PyValue::Tuple(vec![
                    ident.clone(),
                    "get".into(),
                    PyValue::Tuple(vec![PyValue::Int(k)]),
                    PyValue::Dict(Vec::new()),
                ])
            })
            .collect();
        self.request(None, "_multiproc_batch", vec![PyValue::List(items)])
    }

    /// The request `d.update(items)` as a Rust client's `DictProxy`
    /// makes it: each key and value through serde, then the pickle.
    ///
    /// # Panics
    /// If an item does not convert.
    #[inline(never)]
    pub fn client_update<K: Serialize, V: Serialize>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
    ) -> Vec<u8> {
        let items = items
            .into_iter()
            .map(|(k, v)| (value(&k), value(&v)))
            .collect();
        self.client_request(Op::Update(items))
    }

    /// The request of a Rust client's `get_many(keys)`.
    ///
    /// # Panics
    /// If a key does not convert.
    #[inline(never)]
    pub fn client_get_many<'k, K: Serialize + 'k>(
        &self,
        keys: impl IntoIterator<Item = &'k K>,
    ) -> Vec<u8> {
        self.client_request(Op::LookupMany(keys.into_iter().map(value).collect()))
    }

    /// The request of a Rust client's `set(k, v)`.
    ///
    /// # Panics
    /// If the key or value does not convert.
    #[inline(never)]
    pub fn client_set<K: Serialize, V: Serialize>(&self, k: K, v: V) -> Vec<u8> {
        self.client_request(Op::Set(value(&k), value(&v)))
    }

    fn client_request(&self, op: Op) -> Vec<u8> {
        let (method, args, kwds) = calls::request(Kind::Dict, op);
        let req = pickle::dumps_request(Some(&self.dict), method, &args, &kwds, &PyValue::None);
        args.into_iter().for_each(PyValue::drop_batch);
        req
    }

    /// What a Rust client makes of a reply to a call: its result as an
    /// `R` (read as the client reads it, then through serde).
    ///
    /// # Panics
    /// If the reply is not a `#RETURN` of an `R`.
    #[inline(never)]
    pub fn client_reply<R: DeserializeOwned>(&self, reply: &[u8]) -> R {
        let answer = client::answer_of(reply, "a call").expect("a reply");
        de::from_value(answer.value).expect("an R")
    }

    /// Serves one encoded request (a frame's bytes): the encoded reply.
    ///
    /// # Panics
    /// If the request waits (a queue's), which no dict request does.
    pub fn answer(&mut self, frame: &[u8]) -> Vec<u8> {
        match self.objects.answer(frame, &mut self.session, 1) {
            Answer::Reply(bytes, _, _) => bytes,
            Answer::Parked => panic!("a dict request does not wait"),
        }
    }
}

/// Batches of int items, decoded already: what a server's `update`
/// inserts once it has decoded a request.
pub struct IntBatches(Vec<Vec<(PyValue, PyValue)>>);

impl IntBatches {
    /// `batches` batches of `per_batch` new int keys (each key's value is
    /// its place in its batch), as the bench's batched rows set them.
    pub fn new(batches: i64, per_batch: i64) -> IntBatches {
        IntBatches::of(batches.saturating_mul(per_batch), per_batch)
    }

    /// The int keys `0..n` as [`IntBatches::new`] makes them, in batches
    /// of `per_batch` (the last one shorter if `per_batch` does not
    /// divide `n`).
    pub fn of(n: i64, per_batch: i64) -> IntBatches {
        let per_batch = per_batch.max(1);
        let batches = (n.max(0) + per_batch - 1) / per_batch;
        IntBatches(
            (0..batches)
                .map(|b| {
                    (b * per_batch..((b + 1) * per_batch).min(n))
                        .map(|k| (PyValue::Int(k), PyValue::Int(k - b * per_batch)))
                        .collect()
                })
                .collect(),
        )
    }
}

/// The server's dict alone, with nothing of a request around it: a new
/// map of the server's type (and hasher), into which each batch goes as
/// `update` puts it (room for the batch, then the items). The floor of
/// any server's `update` that keeps its dicts in this map. Returns the
/// map, for the caller to drop outside any timing.
pub fn bare_updates(batches: IntBatches) -> impl Sized {
    let mut map = Map::with_hasher(keyed());
    for batch in batches.0 {
        map.reserve(batch.len());
        map.extend(batch);
    }
    map
}

/// The server's dict alone, looked up: a map of the server's type holding
/// the int keys `0..n` (each its own value), made before it is returned,
/// whose [`BareDict::lookups`] are the floor of a server's `get_many`.
pub struct BareDict(Map);

impl BareDict {
    /// The map of `n` int items.
    pub fn new(n: i64) -> BareDict {
        let mut map = Map::with_hasher(keyed());
        map.extend((0..n).map(|k| (PyValue::Int(k), PyValue::Int(k))));
        BareDict(map)
    }

    /// Looks up `keys` (ints) as a `get_many` does: each found value
    /// copied into the answer's list, `None` for a key not there.
    pub fn lookups(&self, keys: impl IntoIterator<Item = i64>) -> Vec<PyValue> {
        keys.into_iter()
            .map(|k| {
                self.0
                    .get(&PyValue::Int(k))
                    .cloned()
                    .unwrap_or(PyValue::None)
            })
            .collect()
    }
}

fn value<T: Serialize + ?Sized>(v: &T) -> PyValue {
    ser::to_value(v).expect("a value that converts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_batches_hold_each_key_once() {
        for (n, per_batch) in [(2000, 1000), (1001, 1000), (5, 0), (0, 10)] {
            let batches = IntBatches::of(n, per_batch).0;
            let keys: Vec<PyValue> = batches.iter().flatten().map(|(k, _)| k.clone()).collect();
            assert_eq!(keys, (0..n).map(PyValue::Int).collect::<Vec<_>>());
            assert!(batches.iter().all(|b| b.len() <= per_batch.max(1) as usize));
        }
        let d = BareDict::new(3);
        assert_eq!(
            d.lookups([2, 3]),
            [PyValue::Int(2), PyValue::None],
            "a key not there is None"
        );
    }
}
