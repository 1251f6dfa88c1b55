//! Lists on Redis (placeholder: being written).

use super::Store;
use crate::error::{Error, Result};
use crate::manager::protocol::Op;
use crate::manager::PyValue;

pub(super) const PARTS: &[&str] = &["l"];

pub(super) fn apply(_store: &Store, _name: &str, op: Op) -> Result<PyValue> {
    Err(Error::InvalidArgument(format!(
        "{} is not done on Redis yet",
        op.name()
    )))
}
