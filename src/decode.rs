//! Decoding what another process sent (postcard) with a bound on how deep
//! its values nest.
//!
//! Postcard decodes a recursive type (`enum Tree { Leaf, Node(Box<Tree>) }`)
//! by recursion, one level per byte or so: a peer that nests a million
//! levels in a 1 MiB message would overflow the receiver's stack, which
//! aborts the whole process. Here every level (a sequence's or map's
//! element, an enum's content, an option's value, a newtype's field)
//! counts, and a value nested deeper than [`MAX_DEPTH`] is a decoding
//! error, as Python's unpickler raises `RecursionError`.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// How deep a value from another process may nest (ciborium's default).
/// A debug build decodes a simple recursive type four times as deep on a
/// thread's default 2 MiB stack, which leaves room for larger levels.
pub(crate) const MAX_DEPTH: usize = 256;

/// Why a message did not decode: postcard's reason, or the message of the
/// type that refused it (a `Deserialize` impl's own, or that the value
/// nests too deeply), which postcard's error type would drop.
#[derive(Debug)]
pub(crate) struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decodes `bytes`, all of them: a message or an item is one value, and
/// postcard carries no types, so bytes left over mean that it holds
/// another type than `T` (a `u32` of 300 read as a `u8` would be 172).
/// Refuses values nested deeper than [`MAX_DEPTH`].
///
/// # Errors
/// Postcard's, the decoded type's own, one that says the value nests too
/// deeply, and one for bytes left after the value.
pub(crate) fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match take_from_bytes(bytes)? {
        (value, []) => Ok(value),
        (_, rest) => Err(DecodeError(format!(
            "{} of the {} bytes left after the value: it is not a {}",
            rest.len(),
            bytes.len(),
            std::any::type_name::<T>()
        ))),
    }
}

/// As [`from_bytes`], returning the bytes after the value too.
///
/// # Errors
/// As for [`from_bytes`].
pub(crate) fn take_from_bytes<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, &[u8]), DecodeError> {
    let _ = MESSAGE.try_with(Cell::take);
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let value = T::deserialize(Limited {
        de: &mut de,
        left: MAX_DEPTH,
    })
    .map_err(|e| DecodeError(e.into_message()))?;
    let rest = de
        .finalize()
        .map_err(|e| DecodeError(Kept::Inner(e).into_message()))?;
    Ok((value, rest))
}

thread_local! {
    /// The message of the last [`Kept::Message`] handed to postcard as
    /// its own error, which keeps no message (read back at the top).
    /// Reached with `try_with`: a thread-local value's destructor may
    /// decode after this cell is gone (its messages are then postcard's).
    static MESSAGE: Cell<Option<String>> = const { Cell::new(None) };
}

/// The error of the wrapped deserializers: the inner deserializer's, or a
/// message (made by `custom`, which postcard's error would drop).
#[derive(Debug)]
enum Kept<E> {
    Inner(E),
    Message(String),
}

impl<E: fmt::Display> fmt::Display for Kept<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kept::Inner(e) => e.fmt(f),
            Kept::Message(m) => f.write_str(m),
        }
    }
}

impl<E: de::Error> std::error::Error for Kept<E> {}

impl<E: de::Error> de::Error for Kept<E> {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Kept::Message(msg.to_string())
    }
}

impl<E: de::Error> Kept<E> {
    /// As the inner deserializer's error, to give back to it: a message
    /// waits in [`MESSAGE`] for the top to read.
    fn into_inner(self) -> E {
        match self {
            Kept::Inner(e) => e,
            Kept::Message(m) => {
                let e = E::custom(&m);
                let _ = MESSAGE.try_with(|kept| kept.set(Some(m)));
                e
            }
        }
    }

    /// The message to show: a kept one if the inner error is the one made
    /// from it.
    fn into_message(self) -> String {
        match (self, MESSAGE.try_with(Cell::take).ok().flatten()) {
            (Kept::Message(m), _) => m,
            (Kept::Inner(e), Some(m)) if e.to_string() == E::custom(&m).to_string() => m,
            (Kept::Inner(e), _) => e.to_string(),
        }
    }
}

/// A deserializer that may go `left` levels deeper.
struct Limited<D> {
    de: D,
    left: usize,
}

/// One level down from `left`, or the error that says it is too deep.
fn deeper<E: de::Error>(left: usize) -> Result<usize, E> {
    left.checked_sub(1)
        .ok_or_else(|| E::custom(format_args!("nested more than {MAX_DEPTH} levels deep")))
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(
            self,
            $($arg: $ty,)*
            visitor: V,
        ) -> Result<V::Value, Kept<D::Error>> {
            let wrapped = Wrapped { inner: visitor, left: self.left };
            self.de.$method($($arg,)* wrapped).map_err(Kept::Inner)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<D> {
    type Error = Kept<D::Error>;

    forward_deserialize!(
        deserialize_any(),
        deserialize_bool(),
        deserialize_i8(),
        deserialize_i16(),
        deserialize_i32(),
        deserialize_i64(),
        deserialize_i128(),
        deserialize_u8(),
        deserialize_u16(),
        deserialize_u32(),
        deserialize_u64(),
        deserialize_u128(),
        deserialize_f32(),
        deserialize_f64(),
        deserialize_char(),
        deserialize_str(),
        deserialize_string(),
        deserialize_bytes(),
        deserialize_byte_buf(),
        deserialize_option(),
        deserialize_unit(),
        deserialize_seq(),
        deserialize_map(),
        deserialize_identifier(),
        deserialize_ignored_any(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    );

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

/// A visitor whose nested values go through [`Limited`], one level down.
struct Wrapped<V> {
    inner: V,
    left: usize,
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method::<Kept<E>>(v).map_err(Kept::into_inner)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrapped<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none::<Kept<E>>().map_err(Kept::into_inner)
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit::<Kept<E>>().map_err(Kept::into_inner)
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        let left = deeper(self.left).map_err(Kept::into_inner)?;
        self.inner
            .visit_some(Limited { de, left })
            .map_err(Kept::into_inner)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        let left = deeper(self.left).map_err(Kept::into_inner)?;
        self.inner
            .visit_newtype_struct(Limited { de, left })
            .map_err(Kept::into_inner)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let left = deeper(self.left).map_err(Kept::into_inner)?;
        self.inner
            .visit_seq(Limited { de: seq, left })
            .map_err(Kept::into_inner)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let left = deeper(self.left).map_err(Kept::into_inner)?;
        self.inner
            .visit_map(Limited { de: map, left })
            .map_err(Kept::into_inner)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let left = deeper(self.left).map_err(Kept::into_inner)?;
        self.inner
            .visit_enum(Limited { de: data, left })
            .map_err(Kept::into_inner)
    }
}

/// A seed whose value goes through [`Limited`] with `left` levels.
struct Seed<S> {
    inner: S,
    left: usize,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        self.inner
            .deserialize(Limited {
                de,
                left: self.left,
            })
            .map_err(Kept::into_inner)
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Limited<A> {
    type Error = Kept<A::Error>;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Kept<A::Error>> {
        let seed = Seed {
            inner: seed,
            left: self.left,
        };
        self.de.next_element_seed(seed).map_err(Kept::Inner)
    }

    fn size_hint(&self) -> Option<usize> {
        self.de.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Limited<A> {
    type Error = Kept<A::Error>;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Kept<A::Error>> {
        let seed = Seed {
            inner: seed,
            left: self.left,
        };
        self.de.next_key_seed(seed).map_err(Kept::Inner)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Kept<A::Error>> {
        let seed = Seed {
            inner: seed,
            left: self.left,
        };
        self.de.next_value_seed(seed).map_err(Kept::Inner)
    }

    fn size_hint(&self) -> Option<usize> {
        self.de.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Limited<A> {
    type Error = Kept<A::Error>;
    type Variant = Limited<A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Limited<A::Variant>), Kept<A::Error>> {
        let left = self.left;
        let (value, variant) = self
            .de
            .variant_seed(Seed { inner: seed, left })
            .map_err(Kept::Inner)?;
        Ok((value, Limited { de: variant, left }))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Limited<A> {
    type Error = Kept<A::Error>;

    fn unit_variant(self) -> Result<(), Kept<A::Error>> {
        self.de.unit_variant().map_err(Kept::Inner)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Kept<A::Error>> {
        let seed = Seed {
            inner: seed,
            left: self.left,
        };
        self.de.newtype_variant_seed(seed).map_err(Kept::Inner)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Kept<A::Error>> {
        let wrapped = Wrapped {
            inner: visitor,
            left: self.left,
        };
        self.de.tuple_variant(len, wrapped).map_err(Kept::Inner)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Kept<A::Error>> {
        let wrapped = Wrapped {
            inner: visitor,
            left: self.left,
        };
        self.de.struct_variant(fields, wrapped).map_err(Kept::Inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A recursive type, nested as deep as its bytes say.
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    fn tree(depth: usize) -> Tree {
        (0..depth).fold(Tree::Leaf, |t, _| Tree::Node(Box::new(t)))
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Mixed {
        name: String,
        list: Vec<Option<(u8, i64)>>,
        map: BTreeMap<String, Vec<u32>>,
        nested: Option<Box<Mixed>>,
        bytes: Vec<u8>,
        unit: (),
        float: f64,
        wide: u128,
    }

    /// Every shape of value decodes as postcard decodes it.
    #[test]
    fn values_decode_as_postcard_decodes_them() {
        let inner = Mixed {
            name: "inner".into(),
            list: vec![None, Some((1, -2))],
            map: BTreeMap::from([("k".into(), vec![1, 2, 3])]),
            nested: None,
            bytes: vec![0, 255],
            unit: (),
            float: 1.5,
            wide: u128::MAX,
        };
        let outer = Mixed {
            name: "outer".into(),
            nested: Some(Box::new(inner)),
            list: Vec::new(),
            map: BTreeMap::new(),
            bytes: Vec::new(),
            unit: (),
            float: f64::NAN,
            wide: 0,
        };
        let bytes = postcard::to_allocvec(&outer).unwrap();
        let ours: Mixed = from_bytes(&bytes).unwrap();
        let theirs: Mixed = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        // As deep as allowed, on a thread's default stack (2 MiB).
        let t = tree(MAX_DEPTH - 1);
        let bytes = postcard::to_allocvec(&t).unwrap();
        let back = std::thread::spawn(move || from_bytes::<Tree>(&bytes).unwrap());
        assert_eq!(back.join().unwrap(), t);
    }

    /// A value nested deeper than the bound is an error, however deep,
    /// without recursing further (a million levels would overflow the stack).
    #[test]
    fn values_nested_too_deep_are_refused() {
        for depth in [MAX_DEPTH, 1_000_000] {
            let mut bytes = vec![1u8; depth];
            bytes.push(0);
            let e = from_bytes::<Tree>(&bytes).unwrap_err().to_string();
            assert_eq!(e, format!("nested more than {MAX_DEPTH} levels deep"));
        }
        let mut shallow = postcard::to_allocvec(&tree(3)).unwrap();
        shallow.extend_from_slice(b"rest");
        let (t, rest) = take_from_bytes::<Tree>(&shallow).unwrap();
        assert_eq!((t, rest), (tree(3), &b"rest"[..]));
        let deep: Vec<u8> = std::iter::repeat_n(1u8, MAX_DEPTH + 1).chain([0]).collect();
        assert!(from_bytes::<Option<Box<Tree>>>(&deep).is_err());
        assert!(take_from_bytes::<Option<Box<Tree>>>(&deep).is_err());
    }

    /// A type's own refusal reaches the caller with its message, at any
    /// depth (postcard's error type would say only "Serde Deserialization
    /// Error"); postcard's own errors are postcard's.
    #[test]
    fn a_types_own_message_is_kept() {
        #[derive(Debug)]
        struct Picky;
        impl<'de> serde::Deserialize<'de> for Picky {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Picky, D::Error> {
                match u8::deserialize(d)? {
                    7 => Ok(Picky),
                    n => Err(de::Error::custom(format_args!("{n} is not 7"))),
                }
            }
        }
        let bytes = postcard::to_allocvec(&vec![Some(7u8), Some(8)]).unwrap();
        let e = from_bytes::<Vec<Option<Picky>>>(&bytes).unwrap_err();
        assert_eq!(e.to_string(), "8 is not 7");
        let e = from_bytes::<std::num::NonZeroU8>(&[0]).unwrap_err();
        assert!(e.to_string().contains("nonzero"), "{e}");
        let e = from_bytes::<u32>(&[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            postcard::Error::DeserializeUnexpectedEnd.to_string()
        );
        // A message swallowed on the way is not shown for a later error.
        assert!(from_bytes::<Picky>(&[8]).is_err());
        let e = from_bytes::<(u8, u32)>(&[1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            postcard::Error::DeserializeUnexpectedEnd.to_string()
        );
    }
}
