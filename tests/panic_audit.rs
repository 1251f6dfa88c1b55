//! Arguments at the ends of their types, given through the public API to
//! code that does arithmetic on them: each is an answer (a value or an
//! error, as Python gives), never a panic or an overflow in a debug build.

mod common;

use std::time::Duration;

use common::watchdog;
use multiproc::{Error, Manager};

const LIMIT: Duration = Duration::from_secs(60);

/// The class of the server's exception; for anything else, what came.
fn remote_kind<T: std::fmt::Debug>(r: multiproc::Result<T>) -> String {
    match r {
        Err(Error::Remote { kind, .. }) => kind,
        other => format!("not a remote error: {other:?}"),
    }
}

/// A list proxy's indices and slice bounds at `i64::MIN` and `i64::MAX`:
/// the server adds the list's length to a negative one and clamps a
/// slice's, which must not overflow; the answers are CPython's for
/// `-2**63` and `2**63 - 1`.
#[test]
fn list_indices_at_the_ends_of_i64_answer_as_python() {
    watchdog("list indices", LIMIT, || {
        let m = Manager::start().unwrap();
        let l = m.list::<i64>().unwrap();
        l.extend([1, 2]).unwrap();
        for i in [i64::MIN, i64::MAX] {
            assert_eq!(remote_kind(l.get(i)), "IndexError", "get({i})");
            assert_eq!(remote_kind(l.set(i, 9)), "IndexError", "set({i})");
            assert_eq!(remote_kind(l.pop(i)), "IndexError", "pop({i})");
            assert_eq!(
                remote_kind(l.increment(i, 1)),
                "IndexError",
                "increment({i})"
            );
        }
        assert_eq!(l.slice(i64::MIN, i64::MAX).unwrap(), [1, 2]);
        assert_eq!(l.slice(i64::MAX, i64::MIN).unwrap(), Vec::<i64>::new());
        assert_eq!(l.slice(i64::MIN, -1).unwrap(), [1]);
        assert_eq!(l.slice(-1, i64::MAX).unwrap(), [2]);
        l.insert(i64::MIN, 0).unwrap();
        l.insert(i64::MAX, 3).unwrap();
        assert_eq!(l.slice(0, i64::MAX).unwrap(), [0, 1, 2, 3]);
    });
}
