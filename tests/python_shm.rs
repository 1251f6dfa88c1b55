//! Python's `multiprocessing.shared_memory` attaches to a named `Array`
//! made here, reads its elements and writes some back.

mod common;

use std::process::Command;

use common::TempName;
use multiproc::Array;

/// Reads the doubles at the given offset, checks them, negates them and
/// appends their sum; prints the sum. Python before 3.13 registers an
/// attached segment with its resource tracker, which would unlink it when
/// the script ends: unregister it there (3.13's `track=False`).
const SCRIPT: &str = r#"
import struct, sys
from multiprocessing import shared_memory, resource_tracker
name, offset, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    shm = shared_memory.SharedMemory(name=name, track=False)
except TypeError:
    shm = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(shm._name, "shared_memory")
fmt = "=%dd" % n
values = struct.unpack_from(fmt, shm.buf, offset)
assert values == tuple(float(i) + 0.5 for i in range(n)), values
struct.pack_into(fmt, shm.buf, offset, *(-v for v in values))
print(sum(values))
shm.close()
"#;

/// Every CPython 3.8+ that pyenv has here, or `python3`.
fn pythons() -> Vec<String> {
    let found: Vec<String> = common::cpython::pyenv_pythons()
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if found.is_empty() {
        return vec!["python3".into()];
    }
    found
}

#[test]
fn python_shared_memory_reads_and_writes_a_named_array() {
    for python in pythons() {
        let name = TempName::new("python-shm");
        let init: Vec<f64> = (0..100).map(|i| f64::from(i) + 0.5).collect();
        let array = Array::create(&name, &init).unwrap();
        let (file, offset) = array.shm_location().unwrap();
        let out = Command::new(&python)
            .args(["-c", SCRIPT, &file, &offset.to_string(), "100"])
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "{python}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sum: f64 = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(sum, init.iter().sum::<f64>(), "{python}");
        let negated: Vec<f64> = init.iter().map(|v| -v).collect();
        assert_eq!(array.to_vec().unwrap(), negated, "{python}");
        // The segment is still there after the script ended.
        assert!(Array::<f64>::open(&name).is_ok(), "{python} unlinked it");
    }
}

#[test]
fn an_anonymous_array_has_no_location() {
    assert!(Array::<u8>::new(4).unwrap().shm_location().is_none());
}
