//! Deserialize any serde type from a node of the span tree.
//!
//! Errors carry the range of the innermost node that failed, so a wrong type in a rule file, a
//! configuration file or a pod spec is reported at its exact line and column. Scalars are read
//! the way Kubernetes reads them: YAML 1.1 resolution for booleans and numbers, while a field
//! typed as string accepts any scalar (a JSON number into a `Quantity` is fine, for instance).

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

use super::{Document, Entry, NodeId, NodeKind, Plain};
use crate::source::TextRange;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError {
    /// The innermost node that failed, and its range.
    pub node: Option<NodeId>,
    pub range: Option<TextRange>,
    pub message: String,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            node: None,
            range: None,
            message: msg.to_string(),
        }
    }
}

pub fn from_node<'de, T: de::Deserialize<'de>>(
    doc: &'de Document,
    id: NodeId,
) -> Result<T, DeError> {
    T::deserialize(NodeDe {
        doc,
        id,
        key: false,
    })
}

#[derive(Clone, Copy)]
struct NodeDe<'de> {
    doc: &'de Document,
    id: NodeId,
    /// Mapping keys become strings whatever they resolve to, as sigs.k8s.io/yaml makes them.
    key: bool,
}

impl<'de> NodeDe<'de> {
    fn locate(&self, mut e: DeError) -> DeError {
        if e.range.is_none() {
            e.node = Some(self.id);
            e.range = Some(self.doc.node(self.id).range);
        }
        e
    }

    fn target(&self) -> Result<NodeId, DeError> {
        self.doc.resolve(self.id).ok_or_else(|| DeError {
            node: Some(self.id),
            range: Some(self.doc.node(self.id).range),
            message: "alias expansion budget exceeded".into(),
        })
    }

    fn mismatch(&self, expected: &str) -> DeError {
        let found = self
            .target()
            .map_or("alias", |t| self.doc.node(t).type_name());
        let shown = match self
            .target()
            .ok()
            .and_then(|t| self.doc.node(t).as_scalar())
        {
            Some(s) if found == "string" => format!("string {:?}", s.value),
            Some(s) => format!("{found} `{}`", s.value),
            None => found.to_string(),
        };
        DeError {
            node: Some(self.id),
            range: Some(self.doc.node(self.id).range),
            message: format!("expected {expected}, found {shown}"),
        }
    }

    fn plain(&self) -> Result<Option<Plain<'de>>, DeError> {
        let t = self.target()?;
        Ok(self.doc.node(t).as_scalar().map(|s| s.resolved()))
    }
}

macro_rules! int_method {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            match self.plain()? {
                Some(Plain::Int(i)) => match <$ty>::try_from(i) {
                    Ok(v) => visitor.$visit(v).map_err(|e| self.locate(e)),
                    Err(_) => Err(self.mismatch(concat!("an integer that fits ", stringify!($ty)))),
                },
                _ => Err(self.mismatch("an integer")),
            }
        }
    };
}

impl<'de> Deserializer<'de> for NodeDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let t = self.target()?;
        let result = match &self.doc.node(t).kind {
            NodeKind::Scalar(s) => match s.resolved() {
                Plain::Null => visitor.visit_unit(),
                Plain::Bool(b) => visitor.visit_bool(b),
                Plain::Int(i) => visitor.visit_i64(i),
                Plain::Float(f) => visitor.visit_f64(f),
                Plain::Str(v) => visitor.visit_borrowed_str(v),
            },
            NodeKind::Sequence { items, .. } => visitor.visit_seq(Seq {
                doc: self.doc,
                items: items.iter(),
            }),
            NodeKind::Mapping { .. } => visitor.visit_map(Map {
                doc: self.doc,
                entries: self.doc.entries(t).into_iter(),
                value: None,
            }),
            NodeKind::Alias { .. } => Err(self.mismatch("a value")),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.plain()? {
            Some(Plain::Bool(b)) => visitor.visit_bool(b).map_err(|e| self.locate(e)),
            _ => Err(self.mismatch("a boolean")),
        }
    }

    int_method!(deserialize_i8, visit_i8, i8);
    int_method!(deserialize_i16, visit_i16, i16);
    int_method!(deserialize_i32, visit_i32, i32);
    int_method!(deserialize_i64, visit_i64, i64);
    int_method!(deserialize_u8, visit_u8, u8);
    int_method!(deserialize_u16, visit_u16, u16);
    int_method!(deserialize_u32, visit_u32, u32);
    int_method!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.plain()? {
            Some(Plain::Int(i)) => visitor.visit_f64(i as f64).map_err(|e| self.locate(e)),
            Some(Plain::Float(f)) => visitor.visit_f64(f).map_err(|e| self.locate(e)),
            _ => Err(self.mismatch("a number")),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let t = self.target()?;
        // Like encoding/json behind the API server, a string field takes no number or boolean
        // (`command: [sleep, 3600]` is rejected); keys are the exception.
        match self.doc.node(t).as_scalar() {
            Some(s)
                if matches!(s.resolved(), Plain::Str(_))
                    || self.key && s.resolved() != Plain::Null =>
            {
                visitor
                    .visit_borrowed_str(&s.value)
                    .map_err(|e| self.locate(e))
            }
            _ => Err(self.mismatch("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.plain()? {
            Some(Plain::Null) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e| self.locate(e))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.plain()? {
            Some(Plain::Null) => visitor.visit_unit().map_err(|e| self.locate(e)),
            _ => Err(self.mismatch("null")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| self.locate(e))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let t = self.target()?;
        match &self.doc.node(t).kind {
            NodeKind::Sequence { items, .. } => visitor
                .visit_seq(Seq {
                    doc: self.doc,
                    items: items.iter(),
                })
                .map_err(|e| self.locate(e)),
            _ => Err(self.mismatch("a sequence")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let t = self.target()?;
        match &self.doc.node(t).kind {
            NodeKind::Mapping { .. } => visitor
                .visit_map(Map {
                    doc: self.doc,
                    entries: self.doc.entries(t).into_iter(),
                    value: None,
                })
                .map_err(|e| self.locate(e)),
            _ => Err(self.mismatch("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let t = self.target()?;
        match &self.doc.node(t).kind {
            NodeKind::Scalar(s) => visitor
                .visit_enum(s.value.as_str().into_deserializer())
                .map_err(|e: DeError| self.locate(e)),
            // `{variant: content}`, the externally tagged form.
            NodeKind::Mapping { .. } => {
                let entries = self.doc.entries(t);
                match entries.as_slice() {
                    [entry] => visitor
                        .visit_enum(Variant {
                            doc: self.doc,
                            entry: *entry,
                        })
                        .map_err(|e| self.locate(e)),
                    _ => Err(self.mismatch("a mapping with exactly one key")),
                }
            }
            _ => Err(self.mismatch("a string or a one-key mapping")),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        NodeDe { key: true, ..self }.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // Unknown fields are skipped without walking them: an alias bomb hidden in a field
        // nobody reads costs nothing.
        visitor.visit_unit()
    }
}

struct Seq<'de> {
    doc: &'de Document,
    items: std::slice::Iter<'de, NodeId>,
}

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(&id) => seed
                .deserialize(NodeDe {
                    doc: self.doc,
                    id,
                    key: false,
                })
                .map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'de> {
    doc: &'de Document,
    entries: std::vec::IntoIter<Entry>,
    value: Option<NodeId>,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some(e) => {
                self.value = Some(e.value);
                seed.deserialize(NodeDe {
                    doc: self.doc,
                    id: e.key,
                    key: true,
                })
                .map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let id = self.value.take().expect("value requested before key");
        seed.deserialize(NodeDe {
            doc: self.doc,
            id,
            key: false,
        })
    }
}

struct Variant<'de> {
    doc: &'de Document,
    entry: Entry,
}

impl<'de> de::EnumAccess<'de> for Variant<'de> {
    type Error = DeError;
    type Variant = NodeDe<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, NodeDe<'de>), DeError> {
        let key = seed.deserialize(NodeDe {
            doc: self.doc,
            id: self.entry.key,
            key: true,
        })?;
        Ok((
            key,
            NodeDe {
                doc: self.doc,
                id: self.entry.value,
                key: false,
            },
        ))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDe<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.plain()? {
            Some(Plain::Null) => Ok(()),
            _ => Err(self.mismatch("no value")),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }
}
