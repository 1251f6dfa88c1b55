//! The server's dynamic value model, Python's basic types, and the serde
//! bridge that turns a client's typed values into it and back.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};
use serde::Deserializer;

use super::protocol::{Id, Kind};

/// A value as the manager stores it: Python's `None`, `bool`, `int`,
/// `float`, `str`, `bytes`, `list`, `tuple` and `dict` (in insertion order).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Value {
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
    List(Vec<Value>),
    /// `tuple` (Rust tuples).
    Tuple(Vec<Value>),
    /// `dict` (Rust maps and structs), in insertion order.
    Dict(Vec<(Value, Value)>),
    /// Another object of the same manager: a proxy stored in a dict, list
    /// or namespace (Python's nested proxies). The container holds a
    /// reference, so the object lives while it is stored anywhere.
    Proxy(ProxyRef),
}

/// The name under which proxies pass through serde, so that the bridge to
/// [`Value`] recognises them.
pub(crate) const PROXY_TOKEN: &str = "$multiproc::Proxy";

/// A reference to a manager object inside a [`Value`]: its kind and id.
///
/// In the server, every `ProxyRef` that exists counts as one reference to
/// its object: decoding or cloning one takes a reference and dropping it
/// gives one back. The changes are recorded as they happen and applied by
/// the server after each request (see [`refs`]), so that a value stored,
/// replaced, popped or cleared anywhere keeps the count right without
/// every operation having to.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProxyRef {
    pub(crate) kind: Kind,
    pub(crate) id: Id,
}

impl ProxyRef {
    pub(crate) fn new(kind: Kind, id: Id) -> ProxyRef {
        refs::record(id, 1);
        ProxyRef { kind, id }
    }
}

impl Clone for ProxyRef {
    fn clone(&self) -> ProxyRef {
        ProxyRef::new(self.kind, self.id)
    }
}

impl Drop for ProxyRef {
    fn drop(&mut self) {
        refs::record(self.id, -1);
    }
}

impl Serialize for ProxyRef {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        refs::sent(self.id);
        (self.kind, self.id).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for ProxyRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ProxyRef, D::Error> {
        let (kind, id) = <(Kind, Id)>::deserialize(d)?;
        refs::decoded(kind, id);
        Ok(ProxyRef::new(kind, id))
    }
}

/// The server's record of references taken and given back by
/// [`ProxyRef`]s (on this thread; only the server thread records).
pub(crate) mod refs {
    use std::cell::{Cell, RefCell};

    use super::super::protocol::{Id, Kind};

    /// What happened to references since they were last taken.
    #[derive(Default)]
    struct Changes {
        /// Each reference taken (+1) or given back (-1), in order.
        deltas: Vec<(Id, i8)>,
        /// The references that arrived in a request, to validate.
        decoded: Vec<(Kind, Id)>,
        /// The references that left in a response (the client now holds them).
        sent: Vec<Id>,
    }

    thread_local! {
        static RECORDING: Cell<bool> = const { Cell::new(false) };
        static CHANGES: RefCell<Changes> = RefCell::new(Changes::default());
    }

    /// Starts recording on this thread (the server's).
    pub(crate) fn start() {
        RECORDING.set(true);
    }

    fn with(f: impl FnOnce(&mut Changes)) {
        if RECORDING.get() {
            CHANGES.with_borrow_mut(f);
        }
    }

    pub(super) fn record(id: Id, delta: i8) {
        with(|c| c.deltas.push((id, delta)));
    }

    pub(super) fn decoded(kind: Kind, id: Id) {
        with(|c| c.decoded.push((kind, id)));
    }

    pub(super) fn sent(id: Id) {
        with(|c| c.sent.push(id));
    }

    /// The references taken and given back since the last call.
    pub(crate) fn take_deltas() -> Vec<(Id, i8)> {
        CHANGES.with_borrow_mut(|c| std::mem::take(&mut c.deltas))
    }

    /// The references decoded since the last call.
    pub(crate) fn take_decoded() -> Vec<(Kind, Id)> {
        CHANGES.with_borrow_mut(|c| std::mem::take(&mut c.decoded))
    }

    /// The references encoded since the last call.
    pub(crate) fn take_sent() -> Vec<Id> {
        CHANGES.with_borrow_mut(|c| std::mem::take(&mut c.sent))
    }
}

impl Value {
    fn rank(&self) -> u8 {
        match self {
            Value::None => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) => 2,
            Value::Str(_) => 3,
            Value::Bytes(_) => 4,
            Value::List(_) => 5,
            Value::Tuple(_) => 6,
            Value::Dict(_) => 7,
            Value::Proxy(_) => 8,
        }
    }

    /// The Python type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Proxy(r) => match r.kind {
                Kind::Dict => "DictProxy",
                Kind::List => "ListProxy",
                Kind::Namespace => "NamespaceProxy",
            },
        }
    }
}

/// A total order for sorting: by kind, then value; ints and floats compare
/// as numbers (a NaN sorts after every other number).
impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        use Value::*;
        match (self, other) {
            (Int(a), Int(b)) => a.cmp(b),
            (Int(a), Float(b)) => (*a as f64).total_cmp(b),
            (Float(a), Int(b)) => a.total_cmp(&(*b as f64)),
            (Float(a), Float(b)) => a.total_cmp(b),
            (Bool(a), Bool(b)) => a.cmp(b),
            (Str(a), Str(b)) => a.cmp(b),
            (Bytes(a), Bytes(b)) => a.cmp(b),
            (List(a), List(b)) | (Tuple(a), Tuple(b)) => a.cmp(b),
            (Dict(a), Dict(b)) => a.cmp(b),
            (Proxy(a), Proxy(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

/// Consistent with `Eq`: an int and a float that are equal hash alike.
impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Value::None => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => i.hash(state),
            // An integral float hashes as the int it equals.
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => (*f as i64).hash(state),
            Value::Float(f) => f.to_bits().hash(state),
            Value::Str(s) => s.hash(state),
            Value::Bytes(b) => b.hash(state),
            Value::List(v) | Value::Tuple(v) => v.hash(state),
            Value::Dict(d) => d.hash(state),
            Value::Proxy(r) => r.hash(state),
        }
    }
}

/// Why a value could not be converted.
#[derive(Debug)]
pub struct ConvertError(pub String);

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConvertError {}

impl ser::Error for ConvertError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ConvertError(msg.to_string())
    }
}

impl de::Error for ConvertError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ConvertError(msg.to_string())
    }
}

/// Converts a serde value into the manager's model.
///
/// # Errors
/// If `T`'s serialization fails, or an unsigned integer exceeds `i64`.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, ConvertError> {
    value.serialize(ValueSerializer)
}

/// Converts a value of the manager's model into `T`.
///
/// # Errors
/// If the value does not have `T`'s shape.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ConvertError> {
    T::deserialize(value)
}

struct ValueSerializer;

/// Collects the parts of a compound value.
struct Compound {
    items: Vec<Value>,
    /// For an enum variant: its name, to wrap the result as `{name: ...}`.
    variant: Option<&'static str>,
    tuple: bool,
}

impl Compound {
    fn finish(self) -> Value {
        let v = if self.tuple {
            Value::Tuple(self.items)
        } else {
            Value::List(self.items)
        };
        wrap(self.variant, v)
    }
}

/// Collects the entries of a map or struct.
struct MapCompound {
    entries: Vec<(Value, Value)>,
    key: Option<Value>,
    variant: Option<&'static str>,
}

fn wrap(variant: Option<&'static str>, v: Value) -> Value {
    match variant {
        Some(name) => Value::Dict(vec![(Value::Str(name.into()), v)]),
        None => v,
    }
}

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = ConvertError;
    type SerializeSeq = Compound;
    type SerializeTuple = Compound;
    type SerializeTupleStruct = Compound;
    type SerializeTupleVariant = Compound;
    type SerializeMap = MapCompound;
    type SerializeStruct = MapCompound;
    type SerializeStructVariant = MapCompound;

    fn serialize_bool(self, v: bool) -> Result<Value, ConvertError> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, ConvertError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, ConvertError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, ConvertError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, ConvertError> {
        Ok(Value::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, ConvertError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, ConvertError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, ConvertError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, ConvertError> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| ConvertError(format!("{v} does not fit a 64-bit signed int")))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, ConvertError> {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, ConvertError> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, ConvertError> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, ConvertError> {
        Ok(Value::Str(v.into()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, ConvertError> {
        Ok(Value::Bytes(v.into()))
    }
    fn serialize_none(self) -> Result<Value, ConvertError> {
        Ok(Value::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Value, ConvertError> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, ConvertError> {
        Ok(Value::None)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Value, ConvertError> {
        Ok(Value::None)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Value, ConvertError> {
        Ok(Value::Str(variant.into()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<Value, ConvertError> {
        if name == PROXY_TOKEN {
            let (kind, id): (Kind, Id) = from_value(v.serialize(self)?)?;
            return Ok(Value::Proxy(ProxyRef::new(kind, id)));
        }
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Value, ConvertError> {
        Ok(wrap(Some(variant), v.serialize(self)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound, ConvertError> {
        Ok(Compound {
            items: Vec::with_capacity(len.unwrap_or(0)),
            variant: None,
            tuple: false,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound, ConvertError> {
        Ok(Compound {
            items: Vec::with_capacity(len),
            variant: None,
            tuple: true,
        })
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Compound, ConvertError> {
        self.serialize_tuple(len)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound, ConvertError> {
        Ok(Compound {
            items: Vec::with_capacity(len),
            variant: Some(variant),
            tuple: true,
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapCompound, ConvertError> {
        Ok(MapCompound {
            entries: Vec::new(),
            key: None,
            variant: None,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<MapCompound, ConvertError> {
        self.serialize_map(None)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<MapCompound, ConvertError> {
        Ok(MapCompound {
            entries: Vec::new(),
            key: None,
            variant: Some(variant),
        })
    }
}

impl Compound {
    fn push<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        self.items.push(to_value(v)?);
        Ok(())
    }
}

impl ser::SerializeSeq for Compound {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        self.push(v)
    }
    fn end(self) -> Result<Value, ConvertError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for Compound {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        self.push(v)
    }
    fn end(self) -> Result<Value, ConvertError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for Compound {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        self.push(v)
    }
    fn end(self) -> Result<Value, ConvertError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleVariant for Compound {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        self.push(v)
    }
    fn end(self) -> Result<Value, ConvertError> {
        Ok(self.finish())
    }
}

impl MapCompound {
    fn finish(self) -> Value {
        wrap(self.variant, Value::Dict(self.entries))
    }
}

impl ser::SerializeMap for MapCompound {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), ConvertError> {
        self.key = Some(to_value(k)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| ConvertError("a map value without a key".into()))?;
        self.entries.push((key, to_value(v)?));
        Ok(())
    }
    fn end(self) -> Result<Value, ConvertError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for MapCompound {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        k: &'static str,
        v: &T,
    ) -> Result<(), ConvertError> {
        self.entries.push((Value::Str(k.into()), to_value(v)?));
        Ok(())
    }
    fn end(self) -> Result<Value, ConvertError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for MapCompound {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        k: &'static str,
        v: &T,
    ) -> Result<(), ConvertError> {
        self.entries.push((Value::Str(k.into()), to_value(v)?));
        Ok(())
    }
    fn end(self) -> Result<Value, ConvertError> {
        Ok(self.finish())
    }
}

impl<'de> Deserializer<'de> for Value {
    type Error = ConvertError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvertError> {
        match self {
            Value::None => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(i) => visitor.visit_i64(i),
            Value::Float(f) => visitor.visit_f64(f),
            Value::Str(s) => visitor.visit_string(s),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            Value::List(v) | Value::Tuple(v) => {
                visitor.visit_seq(de::value::SeqDeserializer::new(v.into_iter()))
            }
            Value::Dict(d) => visitor.visit_map(de::value::MapDeserializer::new(d.into_iter())),
            Value::Proxy(r) => visitor.visit_seq(de::value::SeqDeserializer::new(
                proxy_fields(&r).into_iter(),
            )),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvertError> {
        match self {
            Value::None => visitor.visit_none(),
            v => visitor.visit_some(v),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConvertError> {
        match self {
            Value::Proxy(r) => visitor.visit_newtype_struct(Value::Tuple(proxy_fields(&r))),
            _ if name == PROXY_TOKEN => Err(ConvertError(format!(
                "expected a proxy, found a {}",
                self.type_name()
            ))),
            v => visitor.visit_newtype_struct(v),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConvertError> {
        match self {
            Value::Str(name) => visitor.visit_enum(name.into_deserializer()),
            Value::Dict(mut d) if d.len() == 1 => {
                let (k, v) = d.pop().expect("one entry");
                let Value::Str(name) = k else {
                    return Err(ConvertError("an enum variant name must be a str".into()));
                };
                visitor.visit_enum(EnumAccess { name, content: v })
            }
            other => Err(ConvertError(format!(
                "expected an enum, found a {}",
                other.type_name()
            ))),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// A proxy reference as the (kind, id) pair a proxy deserializes from.
fn proxy_fields(r: &ProxyRef) -> Vec<Value> {
    let kind = match r.kind {
        Kind::Dict => "Dict",
        Kind::List => "List",
        Kind::Namespace => "Namespace",
    };
    vec![Value::Str(kind.into()), Value::Int(r.id as i64)]
}

impl IntoDeserializer<'_, ConvertError> for Value {
    type Deserializer = Value;
    fn into_deserializer(self) -> Value {
        self
    }
}

struct EnumAccess {
    name: String,
    content: Value,
}

impl<'de> de::EnumAccess<'de> for EnumAccess {
    type Error = ConvertError;
    type Variant = Value;
    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Value), ConvertError> {
        let name = seed.deserialize(self.name.into_deserializer())?;
        Ok((name, self.content))
    }
}

impl<'de> de::VariantAccess<'de> for Value {
    type Error = ConvertError;
    fn unit_variant(self) -> Result<(), ConvertError> {
        Ok(())
    }
    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, ConvertError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(
        self,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, ConvertError> {
        self.deserialize_any(visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConvertError> {
        self.deserialize_any(visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    enum Shape {
        Dot,
        Circle(f64),
        Rect { w: u32, h: u32 },
        Pair(i8, String),
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Record {
        id: u64,
        name: String,
        tags: Vec<String>,
        shape: Shape,
        maybe: Option<i32>,
        map: BTreeMap<u16, (bool, char)>,
        raw: serde_bytes_like::Bytes,
    }

    /// Bytes that serialize with `serialize_bytes`.
    mod serde_bytes_like {
        #[derive(Debug, PartialEq)]
        pub struct Bytes(pub Vec<u8>);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
        impl<'de> serde::Deserialize<'de> for Bytes {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = Bytes;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                        Ok(Bytes(v))
                    }
                }
                d.deserialize_byte_buf(V)
            }
        }
    }

    #[test]
    fn proxy_refs_count_what_is_decoded_cloned_and_dropped() {
        refs::start();
        let v = Value::List(vec![Value::Proxy(ProxyRef::new(Kind::List, 7))]);
        let bytes = postcard::to_allocvec(&v).unwrap();
        assert_eq!(refs::take_sent(), vec![7]);
        let back: Value = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(refs::take_decoded(), vec![(Kind::List, 7)]);
        let copy = back.clone();
        drop((v, back, copy));
        // Made, decoded and cloned: three references taken, three given back.
        let deltas = refs::take_deltas();
        assert!(deltas.iter().all(|&(id, _)| id == 7));
        assert_eq!(deltas.iter().filter(|(_, d)| *d > 0).count(), 3);
        assert_eq!(deltas.iter().map(|&(_, d)| i32::from(d)).sum::<i32>(), 0);
    }

    #[test]
    fn round_trips_through_the_model() {
        for shape in [
            Shape::Dot,
            Shape::Circle(1.5),
            Shape::Rect { w: 2, h: 3 },
            Shape::Pair(-1, "x".into()),
        ] {
            let r = Record {
                id: 7,
                name: "n".into(),
                tags: vec!["a".into(), "b".into()],
                shape,
                maybe: Some(-3),
                map: [(1, (true, 'z')), (2, (false, 'é'))].into(),
                raw: serde_bytes_like::Bytes(vec![0, 255]),
            };
            let v = to_value(&r).unwrap();
            assert!(matches!(v, Value::Dict(_)));
            assert_eq!(from_value::<Record>(v).unwrap(), r);
        }
        assert_eq!(
            to_value(&(1u8, "a")).unwrap(),
            Value::Tuple(vec![Value::Int(1), Value::Str("a".into())])
        );
        assert_eq!(to_value(&None::<u8>).unwrap(), Value::None);
        assert!(to_value(&u64::MAX).is_err());
        assert!(from_value::<String>(Value::Int(1)).is_err());
    }

    #[test]
    fn order_and_equality_are_pythonic_enough_to_sort() {
        let mut v = vec![
            Value::Str("b".into()),
            Value::Float(2.5),
            Value::Int(3),
            Value::None,
            Value::Int(-1),
        ];
        v.sort();
        assert_eq!(
            v,
            vec![
                Value::None,
                Value::Int(-1),
                Value::Float(2.5),
                Value::Int(3),
                Value::Str("b".into())
            ]
        );
        assert_eq!(Value::Int(2), Value::Float(2.0));
        use std::collections::hash_map::DefaultHasher;
        let h = |v: &Value| {
            let mut s = DefaultHasher::new();
            v.hash(&mut s);
            s.finish()
        };
        assert_eq!(h(&Value::Int(2)), h(&Value::Float(2.0)));
    }
}
