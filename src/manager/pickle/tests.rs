//! The codec against captured CPython frames, CPython itself, and hostile
//! input.

use super::super::limits::Budget;
use super::super::value::{PyObject, PyValue};
use super::*;

fn budget() -> Budget {
    Budget::new(usize::MAX, 64 << 20)
}

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// The frames captured from CPython 3.11 and 3.13 clients and servers
/// (PYTHON-WIRE.md), without their 4-byte length.
const CAPTURED: &[(&str, &str)] = &[
    ("('7f95196efbc0', '__setitem__', ('a', 1), {})", "80 04 95 2b 00 00 00 00 00 00 00 28 8c 0c 37 66 39 35 31 39 36 65 66 62 63 30 94 8c 0b 5f 5f 73 65 74 69 74 65 6d 5f 5f 94 8c 01 61 94 4b 01 86 94 7d 94 74 94 2e"),
    ("('#ERROR', KeyError('missing'))", "80 04 95 32 00 00 00 00 00 00 00 8c 06 23 45 52 52 4f 52 94 8c 08 62 75 69 6c 74 69 6e 73 94 8c 08 4b 65 79 45 72 72 6f 72 94 93 94 8c 07 6d 69 73 73 69 6e 67 94 85 94 52 94 86 94 2e"),
    ("('7f95196f82c0', 'append', (2,), {})", "80 04 95 22 00 00 00 00 00 00 00 28 8c 0c 37 66 39 35 31 39 36 66 38 32 63 30 94 8c 06 61 70 70 65 6e 64 94 4b 02 85 94 7d 94 74 94 2e"),
    ("('#PROXY', (('__next__', 'send', 'throw', 'close'), <multiprocessing.managers.Token object>))", "80 04 95 89 00 00 00 00 00 00 00 8c 06 23 50 52 4f 58 59 94 28 8c 08 5f 5f 6e 65 78 74 5f 5f 94 8c 04 73 65 6e 64 94 8c 05 74 68 72 6f 77 94 8c 05 63 6c 6f 73 65 94 74 94 8c 18 6d 75 6c 74 69 70 72 6f 63 65 73 73 69 6e 67 2e 6d 61 6e 61 67 65 72 73 94 8c 05 54 6f 6b 65 6e 94 93 94 29 81 94 8c 08 49 74 65 72 61 74 6f 72 94 8c 09 31 32 37 2e 30 2e 30 2e 31 94 4d bf 9b 86 94 8c 0c 37 66 39 35 31 39 36 63 66 65 63 30 94 87 94 62 86 94 86 94 2e"),
];

#[test]
fn captured_frames_decode_and_round_trip() {
    for (repr, frame) in CAPTURED {
        let v = loads_answer(&hex(frame), &mut budget()).unwrap();
        assert_eq!(v.to_string(), *repr);
        let again = dumps(&v, &PyValue::None);
        let back = loads_answer(&again, &mut budget()).unwrap();
        assert_eq!(back.to_string(), *repr);
    }
}

#[test]
fn values_print_as_python_prints_them() {
    let cases: Vec<(PyValue, &str)> = vec![
        (PyValue::Set(vec![1.into(), 2.into()]), "{1, 2}"),
        (PyValue::Set(vec![]), "set()"),
        (PyValue::FrozenSet(vec![1.into()]), "frozenset({1})"),
        (PyValue::FrozenSet(vec![]), "frozenset()"),
        (
            PyValue::Object(Box::new(PyObject::call(
                "builtins",
                "complex",
                vec![1.0.into(), 2.0.into()],
            ))),
            "(1+2j)",
        ),
        (
            PyValue::Object(Box::new(PyObject::call(
                "builtins",
                "complex",
                vec![0.0.into(), (-2.5).into()],
            ))),
            "-2.5j",
        ),
        (
            PyValue::Object(Box::new(PyObject::call(
                "builtins",
                "bytearray",
                vec![PyValue::Bytes(b"x".to_vec())],
            ))),
            "bytearray(b'x')",
        ),
        (
            PyValue::Object(Box::new(PyObject::call(
                "builtins",
                "slice",
                vec![1.into(), 3.into(), PyValue::None],
            ))),
            "slice(1, 3, None)",
        ),
        (
            PyValue::Object(Box::new(PyObject::call(
                "builtins",
                "range",
                vec![0.into(), 10.into(), 1.into()],
            ))),
            "range(0, 10)",
        ),
        (
            PyValue::Object(Box::new(PyObject::call("__main__", "Point", vec![]))),
            "<__main__.Point object>",
        ),
        (
            int_from_bytes_test(&[0, 0, 0, 0, 0, 0, 0, 0, 1]),
            "18446744073709551616",
        ),
        (
            int_from_bytes_test(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0xff]),
            "-9223372036854775808",
        ),
    ];
    for (v, python) in cases {
        assert_eq!(v.to_string(), python, "{v:?}");
    }
}

fn int_from_bytes_test(b: &[u8]) -> PyValue {
    super::decode::int_from_bytes(b)
}
