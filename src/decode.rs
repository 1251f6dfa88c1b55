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

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// How deep a value from another process may nest (ciborium's default).
/// A debug build decodes a simple recursive type four times as deep on a
/// thread's default 2 MiB stack, which leaves room for larger levels.
pub(crate) const MAX_DEPTH: usize = 256;

/// Decodes `bytes` (trailing bytes ignored, as `postcard::from_bytes`
/// does), refusing values nested deeper than [`MAX_DEPTH`].
///
/// # Errors
/// Postcard's, and one that says the value nests too deeply.
pub(crate) fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> postcard::Result<T> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    T::deserialize(Limited {
        de: &mut de,
        left: MAX_DEPTH,
    })
}

/// As [`from_bytes`], returning the bytes after the value too.
///
/// # Errors
/// As for [`from_bytes`].
pub(crate) fn take_from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> postcard::Result<(T, &[u8])> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let value = T::deserialize(Limited {
        de: &mut de,
        left: MAX_DEPTH,
    })?;
    Ok((value, de.finalize()?))
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
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.de.$method(Wrapped { inner: visitor, left: self.left })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let wrapped = Wrapped {
            inner: visitor,
            left: self.left,
        };
        self.de.deserialize_unit_struct(name, wrapped)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let wrapped = Wrapped {
            inner: visitor,
            left: self.left,
        };
        self.de.deserialize_newtype_struct(name, wrapped)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let wrapped = Wrapped {
            inner: visitor,
            left: self.left,
        };
        self.de.deserialize_tuple(len, wrapped)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let wrapped = Wrapped {
            inner: visitor,
            left: self.left,
        };
        self.de.deserialize_tuple_struct(name, len, wrapped)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let wrapped = Wrapped {
            inner: visitor,
            left: self.left,
        };
        self.de.deserialize_struct(name, fields, wrapped)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let wrapped = Wrapped {
            inner: visitor,
            left: self.left,
        };
        self.de.deserialize_enum(name, variants, wrapped)
    }

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
            self.inner.$method(v)
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
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        let left = deeper(self.left)?;
        self.inner.visit_some(Limited { de, left })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        let left = deeper(self.left)?;
        self.inner.visit_newtype_struct(Limited { de, left })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let left = deeper(self.left)?;
        self.inner.visit_seq(Limited { de: seq, left })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let left = deeper(self.left)?;
        self.inner.visit_map(Limited { de: map, left })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let left = deeper(self.left)?;
        self.inner.visit_enum(Limited { de: data, left })
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
        self.inner.deserialize(Limited {
            de,
            left: self.left,
        })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Limited<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let seed = Seed {
            inner: seed,
            left: self.left,
        };
        self.de.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.de.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Limited<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = Seed {
            inner: seed,
            left: self.left,
        };
        self.de.next_key_seed(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        let seed = Seed {
            inner: seed,
            left: self.left,
        };
        self.de.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.de.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Limited<A> {
    type Error = A::Error;
    type Variant = Limited<A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Limited<A::Variant>), A::Error> {
        let left = self.left;
        let (value, variant) = self.de.variant_seed(Seed { inner: seed, left })?;
        Ok((value, Limited { de: variant, left }))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Limited<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.de.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = Seed {
            inner: seed,
            left: self.left,
        };
        self.de.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let wrapped = Wrapped {
            inner: visitor,
            left: self.left,
        };
        self.de.tuple_variant(len, wrapped)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let wrapped = Wrapped {
            inner: visitor,
            left: self.left,
        };
        self.de.struct_variant(fields, wrapped)
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
            let e = from_bytes::<Tree>(&bytes).unwrap_err();
            assert!(matches!(e, postcard::Error::SerdeDeCustom), "{e:?}");
        }
        let mut shallow = postcard::to_allocvec(&tree(3)).unwrap();
        shallow.extend_from_slice(b"rest");
        let (t, rest) = take_from_bytes::<Tree>(&shallow).unwrap();
        assert_eq!((t, rest), (tree(3), &b"rest"[..]));
        let deep: Vec<u8> = std::iter::repeat_n(1u8, MAX_DEPTH + 1).chain([0]).collect();
        assert!(from_bytes::<Option<Box<Tree>>>(&deep).is_err());
        assert!(take_from_bytes::<Option<Box<Tree>>>(&deep).is_err());
    }
}
