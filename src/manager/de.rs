//! The serde bridge from [`PyValue`]s to typed Rust values: [`from_value`],
//! which a client uses to decode answers.

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::Deserializer;

use super::protocol::Kind;
use super::refs::{ProxyRef, PROXY_TOKEN, REDIS_PROXY_CLASS};
use super::ser::ConvertError;
use super::value::VALUE_TOKEN;
use super::PyValue;

/// Converts a value of the manager's model into `T` (into a [`PyValue`]
/// as itself).
///
/// # Errors
/// If the value does not have `T`'s shape.
pub(crate) fn from_value<T: DeserializeOwned>(value: PyValue) -> Result<T, ConvertError> {
    T::deserialize(value)
}

/// The stack a conversion leaves free below each nested container it
/// enters, once nested [`SHALLOW`] deep: room for one more level, and for
/// dropping what is left of the value (recursively: about 150 bytes a
/// level in a debug build, for the 510 levels an answer may have), and
/// for the caller's work after the error. (A debug build takes about
/// 6 KiB a level to convert an answer into a `PyValue`.)
const STACK_RESERVE: usize = 128 << 10;

/// How deep a conversion nests before it looks at the stack left (a
/// value no deeper costs no look, and converts on any thread's stack).
const SHALLOW: u32 = 8;

thread_local! {
    /// This thread's stack, lowest and highest address (`(0, 0)`: not
    /// looked up yet; `(1, 0)`: unknown, not checked).
    static STACK: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
    /// How many containers the conversions on this thread are inside.
    static NESTING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// This thread's stack, lowest and highest address, if it can be known.
fn stack_bounds() -> Option<(usize, usize)> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: plain call; `attr` is written by it when it succeeds.
    let thread = unsafe { libc::pthread_self() };
    // SAFETY: as above.
    if unsafe { libc::pthread_getattr_np(thread, attr.as_mut_ptr()) } != 0 {
        return None;
    }
    let (mut addr, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: `attr` was initialised by `pthread_getattr_np`.
    let r = unsafe { libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) };
    // SAFETY: initialised above, destroyed once, not used after.
    unsafe { libc::pthread_attr_destroy(attr.as_mut_ptr()) };
    let low = addr as usize;
    (r == 0 && low > 1).then(|| (low, low.saturating_add(size)))
}

/// One more level of nesting in a conversion, given back when dropped.
struct Nested(());

impl Nested {
    /// Enters one more container; fails, rather than overflow the stack
    /// (which aborts the process), once nested [`SHALLOW`] deep with less
    /// than [`STACK_RESERVE`] of this thread's stack left. A value nested
    /// as deep as a manager stores (`MAX_DEPTH`) converts on a spawned
    /// thread's default stack (2 MiB) in a release build, not always in a
    /// debug one.
    fn enter() -> Result<Nested, ConvertError> {
        let depth = NESTING.get() + 1;
        NESTING.set(depth);
        let level = Nested(());
        if depth > SHALLOW {
            let (mut low, mut high) = STACK.get();
            if low == 0 {
                (low, high) = stack_bounds().unwrap_or((1, 0));
                STACK.set((low, high));
            }
            let here = std::ptr::addr_of!(low) as usize;
            // Not on the thread's own stack (a coroutine's, say): not
            // checked.
            if (low..high).contains(&here) && here - low < STACK_RESERVE {
                return Err(ConvertError(format!(
                    "the value is nested too deep ({depth} levels so far) to convert on \
                     this thread's stack ({} KiB left); convert it on a thread with a \
                     larger stack (std::thread::Builder::stack_size)",
                    (here - low) >> 10
                )));
            }
        }
        Ok(level)
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        NESTING.set(NESTING.get() - 1);
    }
}

impl de::Error for ConvertError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        ConvertError(msg.to_string())
    }
}

impl<'de> Deserializer<'de> for PyValue {
    type Error = ConvertError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvertError> {
        let _level = self.is_container().then(Nested::enter).transpose()?;
        match self {
            PyValue::None => visitor.visit_unit(),
            PyValue::Bool(b) => visitor.visit_bool(b),
            PyValue::Int(i) => visitor.visit_i64(i),
            PyValue::Float(f) => visitor.visit_f64(f),
            PyValue::Str(s) => visitor.visit_string(s),
            PyValue::Bytes(b) => visitor.visit_byte_buf(b),
            PyValue::List(v) | PyValue::Tuple(v) => {
                visitor.visit_seq(de::value::SeqDeserializer::new(v.into_iter()))
            }
            PyValue::Dict(d) => visitor.visit_map(de::value::MapDeserializer::new(d.into_iter())),
            PyValue::Proxy(r) => visitor.visit_seq(de::value::SeqDeserializer::new(
                proxy_fields(&r).into_iter(),
            )),
            PyValue::BigInt(b) => match big_to_i128(&b) {
                Some(i) => match u64::try_from(i) {
                    Ok(u) => visitor.visit_u64(u),
                    Err(_) => visitor.visit_i128(i),
                },
                None => match big_to_u128(&b) {
                    Some(u) => visitor.visit_u128(u),
                    None => Err(ConvertError(format!(
                        "an int of {} bytes is too large for any Rust integer",
                        b.len()
                    ))),
                },
            },
            PyValue::Set(v) | PyValue::FrozenSet(v) => {
                visitor.visit_seq(de::value::SeqDeserializer::new(v.into_iter()))
            }
            PyValue::Object(o) => match (o.is_builtin("bytearray"), o.args.into_iter().next()) {
                (true, Some(PyValue::Bytes(b))) => visitor.visit_byte_buf(b),
                (true, None) => visitor.visit_byte_buf(Vec::new()),
                _ => Err(ConvertError(format!(
                    "a {}.{} object has no Rust form",
                    o.module, o.name
                ))),
            },
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvertError> {
        match self {
            PyValue::None => visitor.visit_none(),
            v => visitor.visit_some(v),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConvertError> {
        match self {
            PyValue::Proxy(r) => visitor.visit_newtype_struct(PyValue::Tuple(proxy_fields(&r))),
            // A Redis object's proxy (see `ser`): its URL, kind and name.
            PyValue::Object(o) if (o.module.as_str(), o.name.as_str()) == REDIS_PROXY_CLASS => {
                visitor.visit_newtype_struct(PyValue::Tuple(o.args))
            }
            _ if name == PROXY_TOKEN => Err(ConvertError(format!(
                "expected a proxy, found a {}",
                self.type_name()
            ))),
            v => visitor.visit_newtype_struct(v),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConvertError> {
        if name == VALUE_TOKEN {
            let _level = self.is_container().then(Nested::enter).transpose()?;
            // A `PyValue` decodes as itself.
            return visitor.visit_enum(Tagged(self));
        }
        match self {
            PyValue::Str(name) => visitor.visit_enum(name.into_deserializer()),
            PyValue::Dict(mut d) if d.len() == 1 => {
                let (k, v) = d.pop().expect("one entry");
                let PyValue::Str(name) = k else {
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

    /// A dict also reads as a sequence of its `(key, value)` items.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvertError> {
        match self {
            PyValue::Dict(d) => {
                let _level = Nested::enter()?;
                visitor.visit_seq(de::value::SeqDeserializer::new(
                    d.into_iter().map(|(k, v)| PyValue::Tuple(vec![k, v])),
                ))
            }
            v => v.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct map struct identifier ignored_any
    }
}

/// A [`PyValue`] seen as the enum its own `Serialize` writes (its variant,
/// then its content as the variant's field), for its `Deserialize`.
struct Tagged(PyValue);

impl<'de> de::EnumAccess<'de> for Tagged {
    type Error = ConvertError;
    type Variant = Tagged;
    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Tagged), ConvertError> {
        let variant = match &self.0 {
            PyValue::None => "None",
            PyValue::Bool(_) => "Bool",
            PyValue::Int(_) => "Int",
            PyValue::Float(_) => "Float",
            PyValue::Str(_) => "Str",
            PyValue::Bytes(_) => "Bytes",
            PyValue::List(_) => "List",
            PyValue::Tuple(_) => "Tuple",
            PyValue::Dict(_) => "Dict",
            PyValue::Proxy(_) => "Proxy",
            PyValue::BigInt(_) => "BigInt",
            PyValue::Set(_) => "Set",
            PyValue::FrozenSet(_) => "FrozenSet",
            PyValue::Object(_) => "Object",
        };
        let variant =
            seed.deserialize(IntoDeserializer::<ConvertError>::into_deserializer(variant))?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for Tagged {
    type Error = ConvertError;
    fn unit_variant(self) -> Result<(), ConvertError> {
        Ok(())
    }
    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, ConvertError> {
        use de::value::SeqDeserializer;
        // The field's types: `Vec<u8>`, `Vec<PyValue>`, `Vec<(PyValue,
        // PyValue)>`, `ProxyRef` or a scalar.
        match self.0 {
            PyValue::Bytes(b) | PyValue::BigInt(b) => {
                seed.deserialize(SeqDeserializer::new(b.into_iter()))
            }
            PyValue::Object(o) => seed.deserialize(super::ser::to_value(&*o)?),
            PyValue::List(v) | PyValue::Tuple(v) | PyValue::Set(v) | PyValue::FrozenSet(v) => {
                seed.deserialize(SeqDeserializer::new(v.into_iter()))
            }
            PyValue::Dict(d) => seed.deserialize(SeqDeserializer::new(
                d.into_iter().map(|(k, v)| PyValue::Tuple(vec![k, v])),
            )),
            PyValue::Proxy(r) => seed.deserialize(PyValue::Tuple(proxy_fields(&r))),
            scalar => seed.deserialize(scalar),
        }
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, ConvertError> {
        Err(ConvertError("a PyValue has no tuple variant".into()))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, ConvertError> {
        Err(ConvertError("a PyValue has no struct variant".into()))
    }
}

impl PyValue {
    /// Whether converting it recurses into values it holds.
    fn is_container(&self) -> bool {
        matches!(
            self,
            PyValue::List(_)
                | PyValue::Tuple(_)
                | PyValue::Dict(_)
                | PyValue::Set(_)
                | PyValue::FrozenSet(_)
                | PyValue::Object(_)
        )
    }
}

/// A proxy reference as the (kind, id) pair a proxy deserializes from.
fn proxy_fields(r: &ProxyRef) -> Vec<PyValue> {
    let kind = match r.kind {
        Kind::Dict => "Dict",
        Kind::List => "List",
        Kind::Namespace => "Namespace",
        Kind::Iterator => "Iterator",
        Kind::Queue => "Queue",
        Kind::JoinableQueue => "JoinableQueue",
    };
    vec![PyValue::Str(kind.into()), PyValue::Int(r.id as i64)]
}

/// An int in two's complement bytes as an `i128`, if it fits.
fn big_to_i128(b: &[u8]) -> Option<i128> {
    let negative = b.last().is_some_and(|&x| x & 0x80 != 0);
    let fill = if negative { 0xff } else { 0 };
    if b.len() > 16 && (b[16..].iter().any(|&x| x != fill) || (b[15] & 0x80 != 0) != negative) {
        return None;
    }
    let mut word = [fill; 16];
    let n = b.len().min(16);
    word[..n].copy_from_slice(&b[..n]);
    Some(i128::from_le_bytes(word))
}

/// A non-negative int in two's complement bytes as a `u128`, if it fits.
fn big_to_u128(b: &[u8]) -> Option<u128> {
    if b.last().is_some_and(|&x| x & 0x80 != 0) || b.len() > 16 && b[16..].iter().any(|&x| x != 0) {
        return None;
    }
    let mut word = [0; 16];
    let n = b.len().min(16);
    word[..n].copy_from_slice(&b[..n]);
    Some(u128::from_le_bytes(word))
}

impl IntoDeserializer<'_, ConvertError> for PyValue {
    type Deserializer = PyValue;
    fn into_deserializer(self) -> PyValue {
        self
    }
}

struct EnumAccess {
    name: String,
    content: PyValue,
}

impl<'de> de::EnumAccess<'de> for EnumAccess {
    type Error = ConvertError;
    type Variant = PyValue;
    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, PyValue), ConvertError> {
        let name = seed.deserialize(self.name.into_deserializer())?;
        Ok((name, self.content))
    }
}

impl<'de> de::VariantAccess<'de> for PyValue {
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

    use super::super::ser::to_value;
    use super::*;

    #[test]
    fn ints_beyond_i64_are_big_ints_both_ways() {
        let big = to_value(&u64::MAX).unwrap();
        assert_eq!(big.to_string(), "18446744073709551615");
        assert!(matches!(big, PyValue::BigInt(_)));
        assert_eq!(from_value::<u64>(big.clone()).unwrap(), u64::MAX);
        assert!(from_value::<i64>(big).is_err());
        assert_eq!(to_value(&5u64).unwrap(), PyValue::Int(5));
        for v in [i128::MIN, i128::MAX, -(1i128 << 64)] {
            let b = to_value(&v).unwrap();
            assert_eq!(b.to_string(), v.to_string());
            assert_eq!(from_value::<i128>(b).unwrap(), v);
        }
        let b = to_value(&u128::MAX).unwrap();
        assert_eq!(b.to_string(), u128::MAX.to_string());
        assert_eq!(from_value::<u128>(b).unwrap(), u128::MAX);
        let mut beyond = vec![0; 16];
        beyond.extend([1, 0]);
        assert!(from_value::<u128>(PyValue::BigInt(beyond)).is_err());
    }

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
            assert!(matches!(v, PyValue::Dict(_)));
            assert_eq!(from_value::<Record>(v).unwrap(), r);
        }
        assert_eq!(
            to_value(&(1u8, "a")).unwrap(),
            PyValue::Tuple(vec![PyValue::Int(1), PyValue::Str("a".into())])
        );
        assert_eq!(to_value(&None::<u8>).unwrap(), PyValue::None);
        assert!(matches!(to_value(&u64::MAX).unwrap(), PyValue::BigInt(_)));
        assert!(from_value::<String>(PyValue::Int(1)).is_err());
    }

    #[test]
    fn a_py_value_converts_as_itself() {
        let values = [
            PyValue::None,
            PyValue::Bool(true),
            PyValue::Int(-3),
            PyValue::Float(0.25),
            PyValue::Str("s".into()),
            PyValue::Bytes(vec![0, 255]),
            PyValue::List(vec![1.into(), PyValue::Tuple(vec![])]),
            PyValue::Tuple(vec![PyValue::None]),
            PyValue::dict([
                (PyValue::from(1), PyValue::from("1")),
                ("k".into(), vec![2].into()),
            ]),
            PyValue::Proxy(ProxyRef::new(Kind::Dict, 9)),
        ];
        for v in values {
            let there = to_value(&v).unwrap();
            assert_eq!(format!("{there:?}"), format!("{v:?}"));
            let back: PyValue = from_value(there).unwrap();
            assert_eq!(format!("{back:?}"), format!("{v:?}"));
        }
        // Inside typed values too; and a dict reads as its items.
        let m: BTreeMap<String, PyValue> = [("a".into(), PyValue::Int(1))].into();
        let v = to_value(&m).unwrap();
        assert_eq!(
            from_value::<BTreeMap<String, PyValue>>(v.clone()).unwrap(),
            m
        );
        let items: Vec<(String, PyValue)> = from_value(v).unwrap();
        assert_eq!(items, [("a".to_string(), PyValue::Int(1))]);
        // Checked conversions: a negative int is no usize.
        assert!(from_value::<usize>(PyValue::Int(-1)).is_err());
        assert_eq!(from_value::<usize>(PyValue::Int(3)).unwrap(), 3);
    }
}
