//! Dicts and namespaces on Redis (placeholder: being written).

use super::Store;
use crate::error::{Error, Result};
use crate::manager::protocol::{Kind, Op};
use crate::manager::PyValue;

/// The keys a dict is made of: its values by field (`v`), its fields in
/// insertion order (`o`), and the keys given in another form than their
/// field (`k`).
pub(super) const PARTS: &[&str] = &["v", "o", "k"];

pub(super) fn apply(_store: &Store, _kind: Kind, _name: &str, op: Op) -> Result<PyValue> {
    Err(Error::InvalidArgument(format!(
        "{} is not done on Redis yet",
        op.name()
    )))
}
