//! The serde bridge from typed Rust values to [`PyValue`]s: [`to_value`],
//! which a client uses to encode keys and values.

use std::fmt;

use serde::ser::{self, Serialize};

use super::de::from_value;
use super::limits::ANSWER_NESTING;
use super::protocol::{Id, Kind};
use super::refs::{ProxyRef, PROXY_TOKEN, REDIS_PROXY_CLASS, REDIS_TOKEN};
use super::value::VALUE_TOKEN;
use super::{PyObject, PyValue, MAX_DEPTH};

/// Why a [`PyValue`] could not be converted into a typed Rust value: the
/// error of `PyValue`'s [`Deserializer`](serde::Deserializer), through
/// which any `T: Deserialize` reads a dynamic value.
///
/// # Example
/// ```
/// use multiproc::manager::ConvertError;
/// use multiproc::PyValue;
/// use serde::Deserialize;
/// let pair = PyValue::from((1, "a"));
/// assert_eq!(<(i32, String)>::deserialize(pair.clone())?, (1, "a".to_string()));
/// assert!(u8::deserialize(PyValue::from(-1)).is_err());
/// # Ok::<(), ConvertError>(())
/// ```
#[derive(Debug)]
pub struct ConvertError(pub(crate) String);

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

/// Converts a serde value into the manager's model (a [`PyValue`] as
/// itself).
///
/// # Errors
/// If `T`'s serialization fails.
pub(crate) fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<PyValue, ConvertError> {
    // Each level of a value recurses here (a `PyValue`'s level twice: its
    // variant, then its contents): a value nested deeper than a server
    // takes is an error, not a stack overflow of the client.
    let left = DEPTH_LEFT.get();
    if left == 0 {
        return Err(ConvertError(format!(
            "nested more than {} deep (RecursionError)",
            MAX_DEPTH + ANSWER_NESTING
        )));
    }
    DEPTH_LEFT.set(left - 1);
    let v = value.serialize(ValueSerializer);
    DEPTH_LEFT.set(left);
    v
}

thread_local! {
    /// Levels of nesting left to the value being converted.
    static DEPTH_LEFT: std::cell::Cell<usize> =
        const { std::cell::Cell::new(2 * (MAX_DEPTH + ANSWER_NESTING + 1)) };
}

struct ValueSerializer;

/// Collects the parts of a compound value.
struct Compound {
    items: Vec<PyValue>,
    /// For an enum variant: its name, to wrap the result as `{name: ...}`.
    variant: Option<&'static str>,
    tuple: bool,
}

impl Compound {
    fn finish(self) -> PyValue {
        let v = if self.tuple {
            PyValue::Tuple(self.items)
        } else {
            PyValue::List(self.items)
        };
        wrap(self.variant, v)
    }
}

/// Collects the entries of a map or struct.
struct MapCompound {
    entries: Vec<(PyValue, PyValue)>,
    key: Option<PyValue>,
    variant: Option<&'static str>,
}

fn wrap(variant: Option<&'static str>, v: PyValue) -> PyValue {
    match variant {
        Some(name) => PyValue::Dict(vec![(PyValue::Str(name.into()), v)]),
        None => v,
    }
}

/// A [`PyValue`] from the variant `variant` of [`PyValue`]'s own `Serialize`
/// and its content as converted: a `PyValue` converts as itself.
fn untag(variant: &str, content: PyValue) -> Result<PyValue, ConvertError> {
    let malformed = || ConvertError(format!("a malformed PyValue::{variant}"));
    // `Vec<u8>` serializes as a sequence of ints.
    let byte_list = |items: Vec<PyValue>| {
        items
            .into_iter()
            .map(|b| match b {
                PyValue::Int(b) => u8::try_from(b).map_err(|_| malformed()),
                _ => Err(malformed()),
            })
            .collect::<Result<Vec<u8>, _>>()
    };
    Ok(match (variant, content) {
        ("Bytes", PyValue::List(items)) => PyValue::Bytes(byte_list(items)?),
        ("Tuple", PyValue::List(items)) => PyValue::Tuple(items),
        // A `Vec` of pairs.
        ("Dict", PyValue::List(items)) => PyValue::Dict(
            items
                .into_iter()
                .map(|pair| match pair {
                    PyValue::Tuple(kv) => <[PyValue; 2]>::try_from(kv)
                        .map(|[k, v]| (k, v))
                        .map_err(|_| malformed()),
                    _ => Err(malformed()),
                })
                .collect::<Result<_, _>>()?,
        ),
        ("BigInt", PyValue::List(items)) => PyValue::BigInt(byte_list(items)?),
        ("Set", PyValue::List(items)) => PyValue::Set(items),
        ("FrozenSet", PyValue::List(items)) => PyValue::FrozenSet(items),
        ("Object", fields) => PyValue::Object(Box::new(from_value(fields)?)),
        ("Proxy", fields) => {
            let (kind, id): (Kind, Id) = from_value(fields)?;
            PyValue::Proxy(ProxyRef::new(kind, id))
        }
        (_, content) => content,
    })
}

impl ser::Serializer for ValueSerializer {
    type Ok = PyValue;
    type Error = ConvertError;
    type SerializeSeq = Compound;
    type SerializeTuple = Compound;
    type SerializeTupleStruct = Compound;
    type SerializeTupleVariant = Compound;
    type SerializeMap = MapCompound;
    type SerializeStruct = MapCompound;
    type SerializeStructVariant = MapCompound;

    fn serialize_bool(self, v: bool) -> Result<PyValue, ConvertError> {
        Ok(PyValue::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<PyValue, ConvertError> {
        Ok(PyValue::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<PyValue, ConvertError> {
        Ok(PyValue::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<PyValue, ConvertError> {
        Ok(PyValue::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<PyValue, ConvertError> {
        Ok(PyValue::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<PyValue, ConvertError> {
        Ok(PyValue::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<PyValue, ConvertError> {
        Ok(PyValue::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<PyValue, ConvertError> {
        Ok(PyValue::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<PyValue, ConvertError> {
        self.serialize_i128(v.into())
    }
    /// An `Int` if it fits, else a `BigInt`, as Python's `int`.
    fn serialize_i128(self, v: i128) -> Result<PyValue, ConvertError> {
        if let Ok(i) = i64::try_from(v) {
            return Ok(PyValue::Int(i));
        }
        let mut bytes = v.to_le_bytes().to_vec();
        super::compare::minimal(&mut bytes);
        Ok(PyValue::BigInt(bytes))
    }
    fn serialize_u128(self, v: u128) -> Result<PyValue, ConvertError> {
        if let Ok(i) = i128::try_from(v) {
            return self.serialize_i128(i);
        }
        let mut bytes = v.to_le_bytes().to_vec();
        bytes.push(0);
        Ok(PyValue::BigInt(bytes))
    }
    fn serialize_f32(self, v: f32) -> Result<PyValue, ConvertError> {
        Ok(PyValue::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<PyValue, ConvertError> {
        Ok(PyValue::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<PyValue, ConvertError> {
        Ok(PyValue::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<PyValue, ConvertError> {
        Ok(PyValue::Str(v.into()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<PyValue, ConvertError> {
        Ok(PyValue::Bytes(v.into()))
    }
    fn serialize_none(self) -> Result<PyValue, ConvertError> {
        Ok(PyValue::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<PyValue, ConvertError> {
        match to_value(v)? {
            // It would read back as `None`, another value.
            PyValue::None => Err(ConvertError(
                "Some of a value stored as None (None, (), a unit struct) would read back as None"
                    .into(),
            )),
            v => Ok(v),
        }
    }
    fn serialize_unit(self) -> Result<PyValue, ConvertError> {
        Ok(PyValue::None)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<PyValue, ConvertError> {
        Ok(PyValue::None)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<PyValue, ConvertError> {
        if name == VALUE_TOKEN {
            // `PyValue::None`, the one unit variant.
            return Ok(PyValue::None);
        }
        Ok(PyValue::Str(variant.into()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<PyValue, ConvertError> {
        if name == PROXY_TOKEN {
            let (kind, id): (Kind, Id) = from_value(to_value(v)?)?;
            // A proxy of this client's, sent in a value: kept alive until
            // the value has gone (see `refs::Pin`).
            return Ok(PyValue::Proxy(ProxyRef::pinning(kind, id)));
        }
        if name == REDIS_TOKEN {
            // Recognisable where it is stored (a Redis value, a manager
            // server's object) and read back.
            let (module, class) = REDIS_PROXY_CLASS;
            return match to_value(v)? {
                PyValue::Tuple(fields) => Ok(PyValue::Object(Box::new(PyObject::call(
                    module, class, fields,
                )))),
                other => Err(ConvertError(format!(
                    "a Redis object's proxy as a {}",
                    other.type_name()
                ))),
            };
        }
        to_value(v)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<PyValue, ConvertError> {
        let content = to_value(v)?;
        if name == VALUE_TOKEN {
            return untag(variant, content);
        }
        Ok(wrap(Some(variant), content))
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
    type Ok = PyValue;
    type Error = ConvertError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        self.push(v)
    }
    fn end(self) -> Result<PyValue, ConvertError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for Compound {
    type Ok = PyValue;
    type Error = ConvertError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        self.push(v)
    }
    fn end(self) -> Result<PyValue, ConvertError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for Compound {
    type Ok = PyValue;
    type Error = ConvertError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        self.push(v)
    }
    fn end(self) -> Result<PyValue, ConvertError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleVariant for Compound {
    type Ok = PyValue;
    type Error = ConvertError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        self.push(v)
    }
    fn end(self) -> Result<PyValue, ConvertError> {
        Ok(self.finish())
    }
}

impl MapCompound {
    fn finish(self) -> PyValue {
        wrap(self.variant, PyValue::Dict(self.entries))
    }
}

impl ser::SerializeMap for MapCompound {
    type Ok = PyValue;
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
    fn end(self) -> Result<PyValue, ConvertError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for MapCompound {
    type Ok = PyValue;
    type Error = ConvertError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        k: &'static str,
        v: &T,
    ) -> Result<(), ConvertError> {
        self.entries.push((PyValue::Str(k.into()), to_value(v)?));
        Ok(())
    }
    fn end(self) -> Result<PyValue, ConvertError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for MapCompound {
    type Ok = PyValue;
    type Error = ConvertError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        k: &'static str,
        v: &T,
    ) -> Result<(), ConvertError> {
        self.entries.push((PyValue::Str(k.into()), to_value(v)?));
        Ok(())
    }
    fn end(self) -> Result<PyValue, ConvertError> {
        Ok(self.finish())
    }
}
