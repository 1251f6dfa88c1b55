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

/// The Pythons installed under pyenv (3.8 and later, as the manager
/// supports), oldest first.
fn pythons() -> Vec<std::path::PathBuf> {
    let root = std::env::var_os("PYENV_ROOT")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pyenv")));
    let Some(Ok(dir)) = root.map(|r| std::fs::read_dir(r.join("versions"))) else {
        return Vec::new();
    };
    let mut found: Vec<((u32, u32), std::path::PathBuf)> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let mut parts = name.split('.');
            let major: u32 = parts.next()?.parse().ok()?;
            let minor: u32 = parts.next()?.parse().ok()?;
            let python = e.path().join("bin/python3");
            (major == 3 && minor >= 8 && python.exists()).then_some(((major, minor), python))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// The Python half of the differential test: `dump` evaluates each line
/// of stdin and prints its repr and its pickles with every protocol from
/// 2; `load` unpickles each hex line of stdin and prints the repr (with a
/// stand-in for `RebuildProxy`, which would connect to a manager).
const SCRIPT: &str = r#"
import sys, pickle, re, datetime, decimal, fractions, collections
from dataclasses import dataclass
from multiprocessing.managers import RebuildProxy, DictProxy, ListProxy, AutoProxy, Token, Namespace

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def __repr__(self):
        return 'Point(%r, %r)' % (self.x, self.y)

@dataclass
class Pair:
    a: object
    b: object

class Items(list):
    pass

class Proxied:
    def __init__(self, cls, typeid, ident, kwds):
        self.args = (cls, Token(typeid, '/tmp/x.sock', ident), 'pickle', kwds)
    def __reduce__(self):
        return (RebuildProxy, self.args)

class Call:
    def __init__(self, f, *args):
        self.f, self.args = f, args
    def __reduce__(self):
        return (self.f, self.args)

def norm(r):
    return re.sub(r' at 0x[0-9a-f]+>', '>', r)

class Loader(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ('multiprocessing.managers', 'RebuildProxy'):
            return lambda f, t, s, k: ('RebuildProxy', f.__name__, t, s, k)
        return super().find_class(module, name)

import io
if sys.argv[1] == 'dump':
    for line in sys.stdin.read().splitlines():
        v = eval(line)
        pickles = ' '.join('%d:%s' % (p, pickle.dumps(v, p).hex())
                           for p in range(2, pickle.HIGHEST_PROTOCOL + 1))
        print(norm(repr(v)) + '\t' + pickles)
else:
    for line in sys.stdin.read().splitlines():
        print(norm(repr(Loader(io.BytesIO(bytes.fromhex(line))).load())))
"#;

/// Runs `python SCRIPT mode` with `input` as stdin; its stdout's lines.
fn run_python(python: &std::path::Path, mode: &str, input: &str) -> Vec<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(python)
        .args(["-c", SCRIPT, mode])
        .env("PYTHONHASHSEED", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write to python");
    drop(stdin);
    let out = child.wait_with_output().expect("python's output");
    assert!(
        out.status.success(),
        "{} {mode} failed: {}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(String::from)
        .collect()
}

/// What the differential test pickles: a Python expression, our repr of
/// it when it differs from Python's, and Python's repr of our pickle when
/// it differs from the original's.
const VALUES: &[(&str, Option<&str>, Option<&str>)] = &[
    ("None", None, None),
    ("(True, False)", None, None),
    ("[0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31 - 1, 2**31, 2**63 - 1, -2**63]", None, None),
    ("[2**63, -2**63 - 1, 2**64, 10**100, -10**100, 2**3000, -2**3000]", None, None),
    ("[0.5, -0.0, 1e300, 1e16, 1.5e-05, float('inf'), float('-inf'), float('nan')]", None, None),
    ("['', 'a', 'it\\'s', '\\u00e9\\U0001f600', 'a\\nb\\t', 'x' * 300]", None, None),
    ("[b'', b'\\x00\\xff', b'x' * 300]", None, None),
    ("([], (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), {})", None, None),
    ("[1, [2, [3, (4, {'a': [5]})]]]", None, None),
    ("{'a': 1, 2: [3], (4, 5): None, 1.5: b'x'}", None, None),
    ("[set(), {1, 2, 3}, frozenset(), frozenset({1, 'a'}), {(1, 2)}, frozenset({frozenset({1})})]", None, None),
    ("{1, 1.0, True, 2}", None, None),
    ("[complex(1, 2), 2j, complex(-0.0, -1), complex(1.5, float('inf'))]", None, None),
    ("[slice(1, 3), slice(None, None, -1), slice('a', 2.5, None)]", None, None),
    ("[bytearray(b'xy'), bytearray(), bytearray(b'\\x00' * 300)]", None, None),
    ("[range(10), range(1, 10, 2), range(-5, 5, -1)]", None, None),
    ("[KeyError('k'), ValueError('a', 1), IndexError('list index out of range')]", None, None),
    ("(lambda x: [x, x, {'k': x}])([1, 'shared'])", None, None),
    ("(lambda l: [l, l[299], l[0]])(['s%d' % i for i in range(300)])", None, None),
    ("list(range(2500))", None, None),
    ("{i: str(i) for i in range(1500)}", None, None),
    ("set(range(1200))", None, None),
    ("[b'y' * 70000, 'z' * 70000]", None, None),
    ("Point(1, [2])", Some("<__main__.Point object>"), None),
    ("[Pair(1, 'b'), Pair(Point(0, 0), None)]", Some("[<__main__.Pair object>, <__main__.Pair object>]"), None),
    ("Items([1, 2])", Some("<__main__.Items object>"), None),
    ("Namespace(name='Bob', n=[1])", Some("<multiprocessing.managers.Namespace object>"), None),
    ("Token('dict', ('127.0.0.1', 5000), 'ff')", Some("<multiprocessing.managers.Token object>"), None),
    (
        "Proxied(DictProxy, 'dict', 'ff', {})",
        Some("<DictProxy object 255>"),
        Some("('RebuildProxy', 'DictProxy', Token(typeid='dict', address='/tmp/x.sock', id='ff'), 'pickle', {})"),
    ),
    (
        "[Proxied(ListProxy, 'list', '7f95196f82c0', {'authkey': b'k'}), Proxied(AutoProxy, 'Queue', 'a0', {'exposed': ('get', 'put')})]",
        Some("[<ListProxy object 140278353593024>, <AutoProxy object 160>]"),
        Some("[('RebuildProxy', 'ListProxy', Token(typeid='list', address='/tmp/x.sock', id='7f95196f82c0'), 'pickle', {}), ('RebuildProxy', 'AutoProxy', Token(typeid='Queue', address='/tmp/x.sock', id='a0'), 'pickle', {'exposed': ('empty', 'full', 'get', 'get_nowait', 'join', 'put', 'put_nowait', 'qsize', 'shutdown', 'task_done')})]"),
    ),
    (
        "[datetime.datetime(2024, 1, 2, 3, 4, 5, 6), datetime.date(2024, 1, 2), datetime.timedelta(days=1)]",
        Some("[<datetime.datetime object>, <datetime.date object>, <datetime.timedelta object>]"),
        None,
    ),
    (
        "[decimal.Decimal('1.50'), fractions.Fraction(1, 3), collections.OrderedDict(a=1, b=[2])]",
        Some("[<decimal.Decimal object>, <fractions.Fraction object>, <collections.OrderedDict object>]"),
        None,
    ),
    (
        "[collections.deque([1], 3), collections.Counter('ab'), collections.defaultdict(list, {1: [2]})]",
        Some("[<collections.deque object>, <collections.Counter object>, <collections.defaultdict object>]"),
        None,
    ),
    ("[len, Point, int, ValueError, Ellipsis, NotImplemented]", None, None),
];

/// Every installed CPython's pickles, with every protocol from 2, decode
/// to the value Python printed; and every CPython reads back what `dumps`
/// writes of them as the same value.
#[test]
#[cfg_attr(miri, ignore = "runs Python")]
fn cpython_pickles_decode_and_ours_unpickle_in_cpython() {
    let pythons = pythons();
    if pythons.is_empty() {
        eprintln!("no CPython under pyenv: differential test skipped");
        return;
    }
    let input: String = VALUES.iter().map(|(e, ..)| format!("{e}\n")).collect();
    let address = PyValue::Str("/tmp/x.sock".into());
    for python in &pythons {
        let dumped = run_python(python, "dump", &input);
        assert_eq!(dumped.len(), VALUES.len(), "{}", python.display());
        let mut ours = String::new();
        let mut expected = Vec::new();
        for ((expr, our_repr, back_repr), line) in VALUES.iter().zip(&dumped) {
            let (repr, pickles) = line.split_once('\t').expect("repr and pickles");
            for pickle in pickles.split(' ') {
                let (protocol, hex) = pickle.split_once(':').expect("protocol:hex");
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                let context = format!("{} protocol {protocol}: {expr}", python.display());
                let v = loads(&bytes, &mut budget()).unwrap_or_else(|e| panic!("{context}: {e:?}"));
                assert_eq!(v.to_string(), our_repr.unwrap_or(repr), "{context}");
                if protocol == "4" {
                    let bytes = dumps(&v, &address);
                    ours.extend(bytes.iter().map(|b| format!("{b:02x}")));
                    ours.push('\n');
                    expected.push((*expr, back_repr.unwrap_or(repr)));
                }
            }
        }
        let loaded = run_python(python, "load", &ours);
        assert_eq!(loaded.len(), expected.len());
        for ((expr, want), got) in expected.iter().zip(&loaded) {
            assert_eq!(got, want, "{} unpickling our {expr}", python.display());
        }
        eprintln!("{}: {} values agree", python.display(), VALUES.len());
    }
}

/// Decodes `bytes` as a request, within `memory` bytes.
fn try_loads(bytes: &[u8], memory: usize) -> Result<PyValue, crate::manager::protocol::Exception> {
    loads(bytes, &mut Budget::new(usize::MAX, memory))
}

fn pickle4(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, 4];
    v.extend_from_slice(body);
    v.push(b'.');
    v
}

#[test]
fn calls_to_anything_but_the_allowed_globals_are_refused() {
    let stack_global = |module: &str, name: &str, arg: &str| {
        let mut b = vec![0x8c, module.len() as u8];
        b.extend_from_slice(module.as_bytes());
        b.extend_from_slice(&[0x8c, name.len() as u8]);
        b.extend_from_slice(name.as_bytes());
        b.push(0x93);
        b.extend_from_slice(&[0x8c, arg.len() as u8]);
        b.extend_from_slice(arg.as_bytes());
        b.extend_from_slice(&[0x85, b'R']);
        pickle4(&b)
    };
    for (module, name) in [
        ("os", "system"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("subprocess", "Popen"),
        ("posix", "system"),
        ("copyreg", "_reconstructor"),
    ] {
        let (kind, message) =
            try_loads(&stack_global(module, name, "echo hacked"), 1 << 20).expect_err(name);
        assert_eq!(kind, "UnpicklingError");
        assert!(message.contains(&format!("{module}.{name}")), "{message}");
    }
    // Protocol 2's spelling.
    let (kind, _) = try_loads(
        b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsq\x00\x85R.",
        1 << 20,
    )
    .unwrap_err();
    assert_eq!(kind, "UnpicklingError");
    assert!(try_loads(
        b"\x80\x02c__builtin__\neval\nX\x01\x00\x00\x001\x85R.",
        1 << 20
    )
    .is_err());
    // Protocol 0's calls and persistent ids are no opcodes of ours.
    for body in [
        &b"(cos\nsystem\nS'ls'\ni"[..],
        b"(cos\nsystem\no",
        b"N\x51",
        b"Pid\n",
    ] {
        assert_eq!(
            try_loads(&pickle4(body), 1 << 20).unwrap_err().0,
            "UnpicklingError"
        );
    }
    // NEWOBJ never calls: an inert record, whatever the class.
    let v = try_loads(b"\x80\x04\x8c\x02os\x8c\x06system\x93)\x81.", 1 << 20).unwrap();
    assert_eq!(v.to_string(), "<os.system object>");
}

#[test]
fn malformed_pickles_are_errors_never_panics() {
    // Every prefix of real pickles, and every opcode after each prefix.
    let mut samples: Vec<Vec<u8>> = CAPTURED.iter().map(|(_, h)| hex(h)).collect();
    let address = PyValue::Str("/tmp/x.sock".into());
    let rich = PyValue::Tuple(vec![
        PyValue::Set(vec![1.into(), "a".into()]),
        PyValue::FrozenSet(vec![2.5.into()]),
        PyValue::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]),
        PyValue::Object(Box::new(PyObject::call(
            "builtins",
            "slice",
            vec![1.into(), PyValue::None, PyValue::None],
        ))),
        PyValue::Object(Box::new(PyObject::instance(
            "__main__",
            "P",
            vec![1.into()],
            Some(PyValue::dict([("x", 1)])),
        ))),
        PyValue::Proxy(crate::manager::ProxyRef::new(
            crate::manager::protocol::Kind::Queue,
            10,
        )),
        PyValue::Dict(vec![(
            "k".into(),
            PyValue::List(vec![1.into(), PyValue::Bytes(b"x".to_vec())]),
        )]),
    ]);
    samples.push(dumps(&rich, &address));
    for sample in &samples {
        for end in 0..sample.len() {
            let _ = try_loads(&sample[..end], 1 << 20);
            for op in 0..=255u8 {
                let mut b = sample[..end].to_vec();
                b.push(op);
                b.extend_from_slice(&sample[end..]);
                let _ = try_loads(&b, 1 << 20);
            }
        }
        assert!(
            try_loads(&sample[..sample.len() - 1], 1 << 20).is_err(),
            "no STOP"
        );
    }
    for op in 0..=255u8 {
        let _ = try_loads(&[0x80, 4, op], 1 << 20);
        let _ = try_loads(
            &[0x80, 4, op, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            1 << 20,
        );
    }
    for bad in [
        &b"\x80\x04a."[..],               // APPEND on an empty stack
        b"\x80\x04(a.",                   // APPEND onto a mark
        b"\x80\x04Na.",                   // APPEND to None
        b"\x80\x04)}b.",                  // BUILD of a dict on a tuple
        b"\x80\x04Ne.",                   // APPENDS without a mark
        b"\x80\x04h\x05.",                // memo key never stored
        b"\x80\x04.",                     // STOP on an empty stack
        b"\x80\x09N.",                    // protocol 9
        b"\x80\x04(NNu.",                 // SETITEMS on no dict
        b"\x80\x04}(Nu.",                 // odd SETITEMS
        b"\x80\x04\x8c\x01\xff.",         // not UTF-8
        b"\x80\x04\x8c\x03\xed\xa0\x80.", // a lone surrogate
        b"\x80\x04N\x8c\x01a\x93.",       // STACK_GLOBAL of None
        b"\x80\x04]\x8c\x01aR.",          // REDUCE of a list
    ] {
        let e = try_loads(bad, 1 << 20).expect_err(&format!("{bad:?}"));
        assert_eq!(e.0, "UnpicklingError", "{bad:?}: {e:?}");
    }
}

#[test]
fn lengths_beyond_the_input_are_refused_before_allocating() {
    let huge = [
        &b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x0f"[..], // BINUNICODE8
        b"\x80\x04\x8e\x00\x00\x00\x00\x00\x00\x00\x80",      // BINBYTES8
        b"\x80\x04\x96\xff\xff\xff\xff\xff\xff\xff\xff",      // BYTEARRAY8
        b"\x80\x04X\xff\xff\xff\xff",                         // BINUNICODE
        b"\x80\x04B\xff\xff\xff\x7f",                         // BINBYTES
        b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xff",      // FRAME
        b"\x80\x04\x8b\xff\xff\xff\x7f",                      // LONG4
    ];
    for b in huge {
        let e = try_loads(b, 1 << 20).unwrap_err();
        assert!(
            matches!(e.0, "UnpicklingError" | "OverflowError"),
            "{b:?}: {e:?}"
        );
    }
    assert_eq!(
        try_loads(b"\x80\x04\x8b\xff\xff\xff\xff.", 1 << 20)
            .unwrap_err()
            .0,
        "UnpicklingError",
        "a negative length"
    );
    // An int longer than the limit, present in full.
    let mut long = b"\x80\x04\x8b".to_vec();
    long.extend_from_slice(&((MAX_INT_BYTES + 1) as u32).to_le_bytes());
    long.extend(std::iter::repeat_n(1u8, MAX_INT_BYTES + 1));
    long.push(b'.');
    assert_eq!(try_loads(&long, 64 << 20).unwrap_err().0, "OverflowError");
}

#[test]
fn nesting_is_bounded_and_recursion_refused() {
    use crate::manager::MAX_DEPTH;
    // A list in a list ... `depth` deep, as the request's value: inside
    // the request tuple and its args tuple.
    let nested = |depth: usize| {
        let mut b = vec![0x80, 4, b'N', b'N'];
        b.extend(std::iter::repeat_n(b']', depth));
        b.extend(std::iter::repeat_n(b'a', depth - 1));
        b.extend_from_slice(&[0x85, 0x86, b'.']);
        b
    };
    assert!(try_loads(&nested(MAX_DEPTH), 64 << 20).is_ok());
    assert_eq!(
        try_loads(&nested(MAX_DEPTH + 1), 64 << 20).unwrap_err().0,
        "RecursionError"
    );
    assert_eq!(
        try_loads(&nested(100_000), 64 << 20).unwrap_err().0,
        "RecursionError"
    );
    // A list that contains itself (`l.append(l)`), and a cycle through a
    // dict and an object's state.
    for cyclic in [
        &b"\x80\x04]\x94h\x00a."[..],
        b"\x80\x04}\x94\x8c\x01kh\x00s.",
        b"\x80\x04\x8c\x01m\x8c\x01C\x93)\x81\x94h\x00b.",
    ] {
        let (kind, message) = try_loads(cyclic, 1 << 20).unwrap_err();
        assert_eq!(kind, "UnpicklingError");
        assert!(message.contains("contains itself"), "{message}");
    }
}

#[test]
fn memo_copies_are_charged_so_bombs_are_refused_quickly() {
    // x = []; then 40 times x = (x, x): 2**40 leaves written out.
    let mut b = vec![0x80, 4, b']', 0x94];
    for i in 0..40u8 {
        b.extend_from_slice(&[b'h', i, b'h', i, 0x86, 0x94]);
    }
    b.push(b'.');
    let start = std::time::Instant::now();
    let e = try_loads(&b, 64 << 20).unwrap_err();
    assert!(matches!(e.0, "MemoryError" | "RuntimeError"), "{e:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    // A 64 KiB str referenced a thousand times: 64 MiB, refused.
    let mut b = vec![0x80, 4, b'X'];
    b.extend_from_slice(&(1u32 << 16).to_le_bytes());
    b.extend(std::iter::repeat_n(b'x', 1 << 16));
    b.extend_from_slice(&[0x94, b'(']);
    for _ in 0..1000 {
        b.extend_from_slice(&[b'h', 0]);
    }
    b.extend_from_slice(b"l.");
    assert_eq!(try_loads(&b, 16 << 20).unwrap_err().0, "MemoryError");
    // Within the budget, the copies are made.
    let v = try_loads(&b, 128 << 20).unwrap();
    assert!(matches!(&v, PyValue::List(l) if l.len() == 1000));
}

#[test]
fn proxies_decode_to_references_and_encode_as_rebuild_proxy() {
    use crate::manager::protocol::Kind;
    use crate::manager::ProxyRef;
    let address = PyValue::Tuple(vec!["127.0.0.1".into(), 5000.into()]);
    for kind in Kind::ALL {
        let v = PyValue::List(vec![PyValue::Proxy(ProxyRef::new(kind, 0xabc))]);
        let bytes = dumps(&v, &address);
        let back = try_loads(&bytes, 1 << 20).unwrap();
        assert!(
            matches!(&back, PyValue::List(l) if matches!(&l[0], PyValue::Proxy(r) if r.kind == kind && r.id == 0xabc)),
            "{kind:?}: {back:?}"
        );
    }
    // A Token of a typeid this manager has not, or an id that is not hex.
    let token = |typeid: &str, ident: &str| {
        PyValue::Object(Box::new(PyObject::instance(
            "multiprocessing.managers",
            "Token",
            vec![],
            Some(PyValue::Tuple(vec![
                typeid.into(),
                address.clone(),
                ident.into(),
            ])),
        )))
    };
    let rebuild = |token: PyValue| {
        PyValue::Object(Box::new(PyObject::call(
            "multiprocessing.managers",
            "RebuildProxy",
            vec![
                PyValue::Object(Box::new(PyObject::global(
                    "multiprocessing.managers",
                    "AutoProxy",
                ))),
                token,
                "pickle".into(),
                PyValue::Dict(vec![]),
            ],
        )))
    };
    assert!(try_loads(&dumps(&rebuild(token("dict", "ff")), &address), 1 << 20).is_ok());
    for bad in [token("Lock", "ff"), token("dict", "xyz"), PyValue::None] {
        let e = try_loads(&dumps(&rebuild(bad), &address), 1 << 20).unwrap_err();
        assert_eq!(e.0, "UnpicklingError");
    }
}

#[test]
fn round_trips_keep_every_variant() {
    let address = PyValue::Str("/tmp/m.sock".into());
    let values = vec![
        PyValue::Tuple((250..260).chain(65530..65540).map(PyValue::from).collect()),
        PyValue::List(vec![
            PyValue::Int(i64::from(i32::MIN)),
            PyValue::Int(i64::from(i32::MIN) - 1),
            PyValue::Str("s".repeat(255)),
            PyValue::Str("s".repeat(256)),
            PyValue::Bytes(vec![1; 255]),
            PyValue::List(vec![]),
            PyValue::Dict(vec![]),
            PyValue::Set(vec![]),
            PyValue::FrozenSet(vec![]),
            PyValue::Tuple(vec![]),
            PyValue::Tuple(vec![1.into(), 2.into(), 3.into(), 4.into()]),
            PyValue::Dict(vec![(PyValue::None, true.into())]),
        ]),
        PyValue::List(vec![PyValue::Proxy(crate::manager::ProxyRef::new(
            crate::manager::protocol::Kind::JoinableQueue,
            u64::MAX,
        ))]),
        PyValue::Int(i64::MIN),
        PyValue::Int(i64::MAX),
        PyValue::Int(-1),
        PyValue::Int(70000),
        PyValue::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x80]),
        PyValue::BigInt(vec![0xff; 300].into_iter().chain([0x7f]).collect()),
        PyValue::Float(-0.0),
        PyValue::Str("é".repeat(200)),
        PyValue::Bytes(vec![7; 70000]),
        PyValue::Set(vec![PyValue::Tuple(vec![1.into(), 2.into()])]),
        PyValue::FrozenSet((0..10).map(PyValue::from).collect()),
        PyValue::Object(Box::new(PyObject {
            kwargs: Some(vec![("k".into(), 1.into())]),
            list_items: vec![1.into()],
            dict_items: vec![("a".into(), 2.into())],
            ..PyObject::instance("m", "C", vec![3.into()], Some(PyValue::None))
        })),
        PyValue::Object(Box::new(PyObject::global("builtins", "len"))),
    ];
    for v in values {
        let back = try_loads(&dumps(&PyValue::Tuple(vec![v.clone()]), &address), 64 << 20).unwrap();
        let PyValue::Tuple(mut items) = back else {
            panic!("not a tuple")
        };
        let back = items.pop().unwrap();
        assert_eq!(format!("{back}"), format!("{v}"));
        if let (PyValue::Object(a), PyValue::Object(b)) = (&v, &back) {
            assert_eq!(
                (
                    &a.module,
                    &a.name,
                    &a.args,
                    a.new,
                    &a.kwargs,
                    &a.state,
                    &a.list_items,
                    &a.dict_items,
                    a.global
                ),
                (
                    &b.module,
                    &b.name,
                    &b.args,
                    b.new,
                    &b.kwargs,
                    &b.state,
                    &b.list_items,
                    &b.dict_items,
                    b.global
                )
            );
            if a.global {
                assert_eq!(v, back, "a class or function is one object, its name");
            } else {
                assert_ne!(v, back, "two decoded objects are two objects");
            }
        } else {
            assert_eq!(v, back);
        }
    }
}

#[test]
fn memo_keys_may_be_sparse_and_memoize_takes_the_count() {
    // BINPUT 5, LONG_BINPUT 2**32 - 1, then MEMOIZE (key 2, the count),
    // each read back.
    let b = b"\x80\x04K\x01q\x05K\x02r\xff\xff\xff\xffK\x03\x94(h\x05j\xff\xff\xff\xffh\x02t.";
    assert_eq!(try_loads(b, 1 << 20).unwrap().to_string(), "(1, 2, 3)");
    // Overwriting a key; a key never set.
    let b = b"\x80\x04K\x01\x94K\x02q\x00h\x00.";
    assert_eq!(try_loads(b, 1 << 20).unwrap().to_string(), "2");
    assert!(try_loads(b"\x80\x04K\x01q\x05h\x04.", 1 << 20).is_err());
}

/// Whether the one-pass decoder takes `bytes` on within the request's
/// depth and a large budget; checked, for small depths and (`sweep`)
/// for memory budgets around what decoding needs, that whatever it takes
/// on it decodes and charges exactly as the general decoder does.
fn one_pass_agrees(bytes: &[u8], sweep: bool) -> bool {
    use super::super::limits::MAX_DEPTH;
    let address = PyValue::Str("/tmp/x.sock".into());
    let agree = |memory: usize, depth: usize| -> bool {
        let mut fast = Budget::new(usize::MAX, memory);
        let Ok(v) = flat::decode(bytes, &mut fast, depth) else {
            return false;
        };
        let mut general = Budget::new(usize::MAX, memory);
        let w = decode::general(bytes, &mut general, depth)
            .unwrap_or_else(|e| panic!("{bytes:?}: one pass gave {v:?}, the general {e:?}"));
        assert!(
            dumps(&v, &address) == dumps(&w, &address),
            "{bytes:?}: {v:?} against {w:?}"
        );
        assert_eq!(fast, general, "{bytes:?} charged differently");
        true
    };
    let took = agree(64 << 20, MAX_DEPTH + 2);
    for depth in 0..4 {
        agree(64 << 20, depth);
    }
    if sweep {
        // The least memory the general decoder needs, then budgets
        // around it: the one pass succeeds exactly where it does.
        let ok = |m: usize| {
            decode::general(bytes, &mut Budget::new(usize::MAX, m), MAX_DEPTH + 2).is_ok()
        };
        let (mut low, mut high) = (0, 64 << 20);
        while low < high {
            let mid = (low + high) / 2;
            if ok(mid) {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        for memory in [0, 1, low / 2, low.saturating_sub(1), low, low + 1] {
            assert_eq!(
                agree(memory, MAX_DEPTH + 2),
                took && memory >= low,
                "{bytes:?} at {memory}"
            );
        }
    }
    took
}

#[test]
fn the_one_pass_decoder_agrees_with_the_general_one() {
    let address = PyValue::Str("/tmp/x.sock".into());
    // What it takes on: Rust clients' requests, CPython's (framed and
    // memoized), each way of building tuples, lists and dicts.
    let plain: Vec<Vec<u8>> = vec![
        dumps(
            &PyValue::Tuple(vec![
                "7f00".into(),
                "update".into(),
                PyValue::Tuple(vec![PyValue::Dict(
                    (0..300)
                        .map(|i| (PyValue::Int(i * 1000), PyValue::Int(-i)))
                        .collect(),
                )]),
                PyValue::Dict(vec![]),
            ]),
            &address,
        ),
        dumps(
            &PyValue::List(vec![
                PyValue::None,
                true.into(),
                false.into(),
                PyValue::Float(-0.5),
                PyValue::Str("é".repeat(300)),
                PyValue::Bytes(vec![1; 300]),
                PyValue::BigInt(vec![0; 20].into_iter().chain([1]).collect()),
                PyValue::Int(i64::MIN),
                PyValue::Tuple(vec![]),
                PyValue::Tuple(vec![1.into()]),
                PyValue::Tuple((0..5).map(PyValue::from).collect()),
                PyValue::List(vec![PyValue::List(vec![PyValue::Dict(vec![(
                    PyValue::Tuple(vec![1.into(), "k".into()]),
                    PyValue::List(vec![]),
                )])])]),
            ]),
            &address,
        ),
        hex(CAPTURED[0].1),
        hex(CAPTURED[2].1),
        // DICT, LIST, TUPLE after a MARK; APPEND and SETITEM one by one.
        b"\x80\x02((K\x01K\x02K\x03(K\x04ldK\x05(t\x86t.".to_vec(),
        b"\x80\x04]\x94K\x01a}\x94K\x02K\x03sK\x04\x87.".to_vec(),
        // Memoized str read back (as CPython writes a repeated str), a
        // MEMOIZE twice on one value, sparse keys.
        b"\x80\x04}\x94(\x8c\x01a\x94\x8c\x01x\x94\x94\x8c\x01bh\x01\x8c\x01ch\x03u.".to_vec(),
        b"\x80\x04(K\x01q\x05K\x02r\xff\xff\xff\xffh\x05j\xff\xff\xff\xff\x94h\x02t.".to_vec(),
        // A MARK left open under the value.
        b"\x80\x04(K\x01.".to_vec(),
    ];
    for p in &plain {
        assert!(one_pass_agrees(p, true), "not taken on: {p:?}");
    }
    // What it gives up on, for the general decoder to answer.
    let other: Vec<&[u8]> = vec![
        // Values left under the top (which the general decoder never copies).
        b"\x80\x04K\x01q\x05K\x02r\xff\xff\xff\xffK\x03\x94(h\x05j\xff\xff\xff\xffh\x02t.",
        b"\x80\x04]\x94h\x00a.",
        b"\x80\x04]\x94K\x01ah\x00.",
        b"\x80\x04K\x01K\x02.",
        b"\x80\x04K\x010K\x02.",
        b"\x80\x04K\x012\x86.",
        b"\x80\x04\x8f(K\x01\x90.",
        b"\x80\x04\x8c\x08builtins\x8c\x03len\x93.",
        b"\x80\x04K\x01q\x05h\x04.",
        b"\x80\x04(K\x01K\x02K\x03d.",
        b"\x80\x04(a.",
        b"\x80\x04K\x01(K\x02a.",
        b"\x80\x04]K\x01(a.",
        b"\x80\x04\x8c\x02\xff\xfe.",
        b"\x80\x04K\x01",
        b"\x80\x06N.",
        b"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.",
        b"\x80\x04\x8a\x01",
        b"\x80\x04\x8b\xff\xff\xff\xffN.",
    ];
    for p in other {
        assert!(!one_pass_agrees(p, true), "taken on: {p:?}");
    }
    // Every prefix and every one-byte change of the plain pickles.
    for p in &plain {
        for end in (0..p.len()).step_by(p.len() / 200 + 1) {
            one_pass_agrees(&p[..end], false);
        }
        for at in 0..p.len().min(120) {
            for byte in [0, 1, b'(', b'.', b'a', b'u', b't', 0x85, 0x94, b'h', 0xff] {
                let mut q = p.clone();
                q[at] = byte;
                one_pass_agrees(&q, false);
            }
        }
    }
    // Nesting: as deep as allowed, and one more.
    let nested = |depth: usize| {
        let mut b = vec![0x80, 4];
        b.extend(std::iter::repeat_n(b']', depth));
        b.extend(std::iter::repeat_n(b'a', depth - 1));
        b.push(b'.');
        b
    };
    use super::super::limits::MAX_DEPTH;
    let mut budget = Budget::new(usize::MAX, 64 << 20);
    assert!(flat::decode(&nested(MAX_DEPTH + 2), &mut budget, MAX_DEPTH + 2).is_ok());
    let mut budget = Budget::new(usize::MAX, 64 << 20);
    assert!(flat::decode(&nested(MAX_DEPTH + 3), &mut budget, MAX_DEPTH + 2).is_err());
    let mut budget = Budget::new(usize::MAX, 64 << 20);
    assert!(flat::decode(&nested(100_000), &mut budget, MAX_DEPTH + 2).is_err());
}

/// A memoized str read back and memoized again (`h0 MEMOIZE h1 MEMOIZE`
/// ...: each copy under a new key) is charged once per copy; the one-pass
/// decoder must not also keep a copy of each in its memo, which would
/// take twice the memory the budget allows. Measured as the peak memory
/// of a child that decodes it.
#[test]
#[cfg_attr(miri, ignore = "fork")]
fn memo_copies_read_back_take_no_more_memory_than_charged() {
    const LEN: usize = 1 << 20;
    const COPIES: u8 = 60;
    let mut b = vec![0x80, 4, b'(', b'X'];
    b.extend_from_slice(&(LEN as u32).to_le_bytes());
    b.extend(std::iter::repeat_n(b'x', LEN));
    b.push(0x94);
    for key in 0..COPIES {
        b.extend_from_slice(&[b'h', key, 0x94]);
    }
    b.extend_from_slice(b"l.");
    let peak_kb = || -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(usize::MAX)
    };
    // SAFETY: the child decodes, reads a file and calls `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let before = peak_kb();
        let v = loads(&b, &mut Budget::new(usize::MAX, 70 << 20));
        let grown_mb = (peak_kb().saturating_sub(before) >> 10).min(250);
        let ok = matches!(&v, Ok(PyValue::List(l)) if l.len() == usize::from(COPIES) + 1);
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(if ok { grown_mb as i32 } else { 255 }) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "{status}");
    let grown_mb = libc::WEXITSTATUS(status);
    assert!(grown_mb != 255, "not decoded");
    // The 61 copies of the list (61 MiB), and little more.
    assert!(grown_mb < 90, "decoding took {grown_mb} MiB");
}

/// `APPENDS`, `SETITEMS` and `ADDITEMS` of no items change nothing, onto
/// whatever is below the mark: CPython returns before it looks at that
/// (`do_append`, `do_setitems`, `load_additems`), so such pickles load
/// there; with items, only a list, a dict or a set takes them.
#[test]
fn adding_no_items_to_anything_is_nothing() {
    for (body, want) in [
        (&b"K\x05(e"[..], "5"),
        (b"N(u", "None"),
        (b"\x8c\x01x(\x90", "'x'"),
        (b"](K\x01e(u", "[1]"),
        (b")(e(u(\x90", "()"),
    ] {
        let v = try_loads(&pickle4(body), 1 << 20);
        assert_eq!(v.map(|v| v.to_string()), Ok(want.into()), "{body:?}");
    }
    for body in [&b"K\x05(K\x01e"[..], b"N(K\x01K\x02u", b"](K\x01\x90"] {
        assert!(try_loads(&pickle4(body), 1 << 20).is_err(), "{body:?}");
    }
    // Still nothing below the mark: an error, as in CPython.
    for body in [&b"(e"[..], b"(u", b"(\x90"] {
        assert!(try_loads(&pickle4(body), 1 << 20).is_err(), "{body:?}");
    }
}

/// `BUILD` with the state `None` onto a value that is no object (a
/// float, a list) leaves it as it is, as CPython's default
/// `__setstate__` does; other states onto it are refused.
#[test]
fn building_none_onto_a_plain_value_is_nothing() {
    for (body, want) in [
        (&b"G\x80\x00\x00\x00\x00\x00\x00\x00Nb"[..], "-0.0"),
        (b"](K\x01eNb", "[1]"),
    ] {
        let v = try_loads(&pickle4(body), 1 << 20);
        assert_eq!(v.map(|v| v.to_string()), Ok(want.into()), "{body:?}");
    }
    assert!(try_loads(&pickle4(b"]}b"), 1 << 20).is_err());
}

/// The replies read straight from their bytes are read as the decoders
/// read them, and bytes that are not exactly such a reply are left to the
/// decoders.
#[test]
fn returned_scalars_read_as_the_decoders_read_them() {
    let address = PyValue::Str("/tmp/x.sock".into());
    let mut scalars = vec![
        PyValue::None,
        PyValue::Bool(true),
        PyValue::Bool(false),
        PyValue::Float(-0.5),
        PyValue::Float(f64::NAN),
    ];
    for i in [
        0,
        1,
        255,
        256,
        65535,
        65536,
        -1,
        -129,
        i64::from(i32::MIN),
        i64::from(i32::MAX),
    ] {
        scalars.extend([i, i + 1, i - 1, i64::MAX - i.abs(), i64::MIN + i.abs()].map(PyValue::Int));
    }
    let decoded = |bytes: &[u8]| loads_answer(bytes, &mut budget()).ok();
    for v in scalars {
        let bytes = dumps_tagged("#RETURN", &v, &address);
        let fast = returned_scalar(&bytes).unwrap_or_else(|| panic!("{v:?} not read"));
        let pair = PyValue::Tuple(vec!["#RETURN".into(), fast]);
        assert_eq!(
            Some(dumps(&pair, &address)),
            decoded(&bytes).map(|d| dumps(&d, &address))
        );
        // Every byte changed, and every shorter and longer pickle: read
        // alike by both, or left to the decoders.
        for at in 0..bytes.len() {
            for delta in [1u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] = b[at].wrapping_add(delta);
                agree(&b, &address);
            }
            agree(&bytes[..at], &address);
            let mut longer = bytes.clone();
            longer.insert(at, b'N');
            agree(&longer, &address);
        }
    }
    // Other replies are the decoders'.
    for v in [
        PyValue::Str("x".into()),
        PyValue::Tuple(vec![]),
        PyValue::BigInt(vec![0; 9]),
    ] {
        assert_eq!(
            returned_scalar(&dumps_tagged("#RETURN", &v, &address)),
            None
        );
    }
    assert_eq!(
        returned_scalar(&dumps_tagged("#ERROR", &PyValue::None, &address)),
        None
    );
}

/// `bytes` read straight as a reply's scalar only where the decoders read
/// them as that reply.
fn agree(bytes: &[u8], address: &PyValue) {
    if let Some(v) = returned_scalar(bytes) {
        let pair = PyValue::Tuple(vec!["#RETURN".into(), v]);
        let decoded = loads_answer(bytes, &mut budget()).unwrap_or_else(|e| {
            panic!("{bytes:?} read as {pair:?}, which the decoders refuse: {e:?}")
        });
        assert_eq!(dumps(&decoded, address), dumps(&pair, address), "{bytes:?}");
    }
}

/// Requests as CPython 3.11's clients pickle them (`Connection.send`):
/// plain calls of scalars, which are read straight from their bytes.
const PLAIN_CALLS: &[(&str, &str)] = &[
    ("('7f3a2b1c', '__setitem__', (7, 70000), {})", "80 04 95 28 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 0b 5f 5f 73 65 74 69 74 65 6d 5f 5f 94 4b 07 4a 70 11 01 00 86 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', 'get', (-1,), {})", "80 04 95 1e 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 03 67 65 74 94 4a ff ff ff ff 85 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', 'append', ('héllo',), {})", "80 04 95 25 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 06 61 70 70 65 6e 64 94 8c 06 68 c3 a9 6c 6c 6f 94 85 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', '__setitem__', (b'k', 2.5), {})", "80 04 95 2e 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 0b 5f 5f 73 65 74 69 74 65 6d 5f 5f 94 43 01 6b 94 47 40 04 00 00 00 00 00 00 86 94 7d 94 74 94 2e"),
    ("(None, 'incref', ('7f3a2b1c',), {})", "80 04 95 1d 00 00 00 00 00 00 00 28 4e 8c 06 69 6e 63 72 65 66 94 8c 08 37 66 33 61 32 62 31 63 94 85 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', '__len__', (), {})", "80 04 95 1c 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 07 5f 5f 6c 65 6e 5f 5f 94 29 7d 94 74 94 2e"),
    ("('7f3a2b1c', 'f', (True, False, None, 1099511627776, -9223372036854775808, 300), {})", "80 04 95 30 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 01 66 94 28 88 89 4e 8a 06 00 00 00 00 00 01 8a 08 00 00 00 00 00 00 00 80 4d 2c 01 74 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', 'update', ({1: 2, 300: -5, 'k': 2.5, b'b': None, 70000: True},), {})", "80 04 95 44 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 06 75 70 64 61 74 65 94 7d 94 28 4b 01 4b 02 4d 2c 01 4a fb ff ff ff 8c 01 6b 94 47 40 04 00 00 00 00 00 00 43 01 62 94 4e 4a 70 11 01 00 88 75 85 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', 'update', ({'a': 1},), {})", "80 04 95 25 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 06 75 70 64 61 74 65 94 7d 94 8c 01 61 94 4b 01 73 85 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', 'update', ({},), {})", "80 04 95 1e 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 06 75 70 64 61 74 65 94 7d 94 85 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', 'j', ([1],), {})", "80 04 95 1c 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 01 6a 94 5d 94 4b 01 61 85 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', 'extend', ([1, 'a', None, 2.5, b'x'],), {})", "80 04 95 34 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 06 65 78 74 65 6e 64 94 5d 94 28 4b 01 8c 01 61 94 4e 47 40 04 00 00 00 00 00 00 43 01 78 94 65 85 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', '_multiproc_get_many', ([3, 70000, -1],), {})", "80 04 95 39 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 13 5f 6d 75 6c 74 69 70 72 6f 63 5f 67 65 74 5f 6d 61 6e 79 94 5d 94 28 4b 03 4a 70 11 01 00 4a ff ff ff ff 65 85 94 7d 94 74 94 2e"),
];

/// Requests as CPython 3.11's clients pickle them that are the
/// decoders' (an int past `i64`, a str read back from the memo, keyword
/// arguments, a list, more arguments than are read straight).
const OTHER_CALLS: &[(&str, &str)] = &[
    ("('7f3a2b1c', 'g', (18446744073709551616,), {})", "80 04 95 22 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 01 67 94 8a 09 00 00 00 00 00 00 00 00 01 85 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', 'h', ('k', 'k'), {})", "80 04 95 1d 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 01 68 94 8c 01 6b 94 68 02 86 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', 'i', (1,), {'x': 1})", "80 04 95 20 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 01 69 94 4b 01 85 94 7d 94 8c 01 78 94 4b 01 73 74 94 2e"),
    ("('7f3a2b1c', 'j', ([[1]],), {})", "80 04 95 1f 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 01 6a 94 5d 94 5d 94 4b 01 61 61 85 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', 'k', (0, 1, 2, 3, 4, 5, 6, 7, 8), {})", "80 04 95 2a 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 01 6b 94 28 4b 00 4b 01 4b 02 4b 03 4b 04 4b 05 4b 06 4b 07 4b 08 74 94 7d 94 74 94 2e"),
    // Updates the decoders read: a str read back from the memo, keyword
    // arguments, a list; and a dict that is not an update's.
    ("('7f3a2b1c', 'update', ({'a': 'v', 'b': 'v'},), {})", "80 04 95 2e 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 06 75 70 64 61 74 65 94 7d 94 28 8c 01 61 94 8c 01 76 94 8c 01 62 94 68 04 75 85 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', 'update', ({'a': 1},), {'b': 2})", "80 04 95 2c 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 06 75 70 64 61 74 65 94 7d 94 8c 01 61 94 4b 01 73 85 94 7d 94 8c 01 62 94 4b 02 73 74 94 2e"),
    ("('7f3a2b1c', 'update', ({'a': [1]},), {})", "80 04 95 28 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 06 75 70 64 61 74 65 94 7d 94 8c 01 61 94 5d 94 4b 01 61 73 85 94 7d 94 74 94 2e"),
    ("('7f3a2b1c', '__setitem__', ('a', {'b': 1}), {})", "80 04 95 2e 00 00 00 00 00 00 00 28 8c 08 37 66 33 61 32 62 31 63 94 8c 0b 5f 5f 73 65 74 69 74 65 6d 5f 5f 94 8c 01 61 94 7d 94 8c 01 62 94 4b 01 73 86 94 7d 94 74 94 2e"),
];
/// A request read straight from its bytes is read as the decoders read
/// it: CPython's and multiproc's plain calls of scalars are, every byte of
/// them changed and every shorter and longer pickle read alike by both or
/// left to the decoders; other calls are the decoders'.
#[test]
fn plain_calls_read_as_the_decoders_read_them() {
    let address = PyValue::Str("/tmp/x.sock".into());
    let mut plain: Vec<Vec<u8>> = PLAIN_CALLS.iter().map(|(_, b)| hex(b)).collect();
    for args in [
        vec![],
        vec![
            PyValue::Int(i64::MIN),
            PyValue::Int(-129),
            PyValue::Int(65536),
        ],
        vec![PyValue::Str("k".into()), PyValue::Bytes(b"v".to_vec())],
        vec![
            PyValue::Float(-0.0),
            PyValue::None,
            PyValue::Bool(true),
            PyValue::Int(7),
        ],
    ] {
        plain.push(dumps_request(Some("7f3a"), "m", &args, &[], &address));
        plain.push(dumps_request(None, "incref", &args, &[], &address));
    }
    // Lists of scalars, empty and not, among other arguments.
    let list = PyValue::List(vec![PyValue::Int(-3), PyValue::Str("s".into())]);
    for args in [
        vec![list.clone()],
        vec![PyValue::Int(0), PyValue::List(vec![])],
        vec![PyValue::Int(1), list],
    ] {
        plain.push(dumps_request(Some("7f3a"), "m", &args, &[], &address));
    }
    // An update whose dict sets a key twice (1 and 1.0 are one key).
    let items = vec![
        (PyValue::Int(1), PyValue::Str("x".into())),
        (PyValue::Str("k".into()), PyValue::Float(0.5)),
        (PyValue::Float(1.0), PyValue::Bytes(b"y".to_vec())),
        (PyValue::Int(1), PyValue::None),
    ];
    plain.push(dumps_request(
        Some("7f3a"),
        "update",
        &[PyValue::Dict(items)],
        &[],
        &address,
    ));
    for bytes in &plain {
        let parts = request_parts(bytes).unwrap_or_else(|| panic!("{bytes:?} not read"));
        read_alike(bytes, &address, parts);
        for at in 0..bytes.len() {
            for delta in [1u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] = b[at].wrapping_add(delta);
                agree_on_request(&b, &address);
            }
            agree_on_request(&bytes[..at], &address);
            for extra in [op::MEMOIZE, op::NONE, op::STOP, op::MARK] {
                let mut longer = bytes.clone();
                longer.insert(at, extra);
                agree_on_request(&longer, &address);
            }
        }
    }
    for (repr, bytes) in OTHER_CALLS {
        let bytes = hex(bytes);
        assert_eq!(request_parts(&bytes), None, "{repr}");
        assert_eq!(loads(&bytes, &mut budget()).unwrap().to_string(), *repr);
    }
}

/// An update's dict of more items than a batch, as CPython writes it
/// (`MARK` … `SETITEMS` for each thousand; with one item, `SETITEM`), is
/// read straight with each key set twice where the pickle sets it twice,
/// and as the decoders read it; one of more items than are read straight
/// is the decoders'.
#[test]
fn large_updates_read_as_the_decoders_read_them() {
    let address = PyValue::Str("/tmp/x.sock".into());
    let update = |n: u16, batches: &[std::ops::Range<u16>], single: bool| {
        let mut body = vec![op::MARK, op::SHORT_BINUNICODE, 4];
        body.extend(b"7f3a");
        body.extend([op::MEMOIZE, op::SHORT_BINUNICODE, 6]);
        body.extend(b"update");
        body.extend([op::MEMOIZE, op::EMPTY_DICT, op::MEMOIZE]);
        let item = |body: &mut Vec<u8>, i: u16| {
            body.push(op::BININT2);
            body.extend((i % n).to_le_bytes());
            body.extend([op::BININT1, i as u8]);
        };
        for batch in batches {
            body.push(op::MARK);
            batch.clone().for_each(|i| item(&mut body, i));
            body.push(op::SETITEMS);
        }
        if single {
            item(&mut body, n);
            body.push(op::SETITEM);
        }
        body.extend([op::TUPLE1, op::MEMOIZE, op::EMPTY_DICT, op::MEMOIZE]);
        body.extend([op::TUPLE, op::MEMOIZE, op::STOP]);
        let mut bytes = vec![op::PROTO, 4, op::FRAME];
        bytes.extend((body.len() as u64).to_le_bytes());
        bytes.extend(body);
        bytes
    };
    // 2500 items over 2000 keys (the last 500 set again), in batches of
    // 1000 and a last single item.
    let bytes = update(2000, &[0..1000, 1000..2000, 2000..2500], true);
    let parts = request_parts(&bytes).expect("read straight");
    let PyValue::Dict(items) = &parts.args[0] else {
        panic!("{:?}", parts.args)
    };
    assert_eq!(items.len(), 2501);
    read_alike(&bytes, &address, parts);
    // An empty batch, as a pickle may hold one.
    let bytes = update(3, &[0..3, 3..3], false);
    read_alike(
        &bytes,
        &address,
        request_parts(&bytes).expect("read straight"),
    );
    // More items than are read straight: the decoders'.
    let bytes = update(
        5000,
        &[0..1000, 1000..2000, 2000..3000, 3000..4000, 4000..4097],
        false,
    );
    assert_eq!(request_parts(&bytes), None);
    assert!(loads(&bytes, &mut budget()).is_ok());
}

/// The request tuple of what [`request_parts`] read.
fn request_value(parts: RequestParts<'_>) -> PyValue {
    PyValue::Tuple(vec![
        parts.ident.map_or(PyValue::None, PyValue::from),
        parts.method.into(),
        PyValue::Tuple(parts.args),
        PyValue::Dict(Default::default()),
    ])
}

/// `bytes` read straight as a request only where the decoders read them
/// as that request.
fn agree_on_request(bytes: &[u8], address: &PyValue) {
    if let Some(parts) = request_parts(bytes) {
        read_alike(bytes, address, parts);
    }
}

/// `bytes`, read straight as `parts`, are read so by the decoders too:
/// the same request, the same charges to a budget.
fn read_alike(bytes: &[u8], address: &PyValue, parts: RequestParts<'_>) {
    let mut charged = budget();
    charged.memory(parts.charges.0).unwrap();
    charged.work(parts.charges.1).unwrap();
    let mut read = request_value(parts);
    // An update's items as set: the decoders keep one a key.
    super::flat::one_item_a_key_inside(&mut read);
    let mut decoding = budget();
    let decoded = loads(bytes, &mut decoding)
        .unwrap_or_else(|e| panic!("{bytes:?} read as {read:?}, which the decoders refuse: {e:?}"));
    assert_eq!(dumps(&decoded, address), dumps(&read, address), "{bytes:?}");
    assert_eq!(
        charged, decoding,
        "{bytes:?} read as {read:?} charged otherwise"
    );
}

/// A request's bytes are those of its tuple.
#[test]
fn requests_encode_as_their_tuples() {
    let address = PyValue::Str("/tmp/x.sock".into());
    let kwds = [(PyValue::from("k"), PyValue::from(1))];
    let args = [PyValue::from(1), PyValue::from("v"), PyValue::Tuple(vec![])];
    for ident in [None, Some("7f")] {
        for (args, kwds) in [
            (&args[..], &kwds[..]),
            (&args[..2], &[][..]),
            (&[][..], &[][..]),
        ] {
            let tuple = PyValue::Tuple(vec![
                ident.map_or(PyValue::None, PyValue::from),
                "get".into(),
                PyValue::Tuple(args.to_vec()),
                PyValue::Dict(kwds.to_vec()),
            ]);
            assert_eq!(
                dumps_request(ident, "get", args, kwds, &address),
                dumps(&tuple, &address)
            );
        }
    }
}

/// A request read straight leaves the server the budget the decoders
/// leave it: the same bytes served through the decoders (a byte after
/// their `STOP`, which the decoders never read, keeps them off the
/// straight read) take the same work and fail at the same size. (When
/// `Request::read` charged nothing, a request read straight could build
/// an answer the decoded one was refused, `MemoryError`, and its work, the
/// server's turn between connections, counted less.)
#[test]
fn a_request_read_straight_takes_the_budget_the_decoders_take() {
    use super::super::objects::{Answer, Objects, Session};
    let address = PyValue::Str("/tmp/x.sock".into());
    super::super::refs::start();
    let mut objects = Objects::new(
        PyValue::Tuple(vec!["127.0.0.1".into(), 5000.into()]),
        Default::default(),
    );
    let mut session = Session::default();
    let mut ask = |bytes: &[u8]| match objects.answer(bytes, &mut session, 1) {
        Answer::Reply(reply, _, work) => (reply, work),
        Answer::Parked => panic!("parked"),
    };
    let (reply, _) = ask(&dumps_request(
        None,
        "create",
        &["list".into()],
        &[],
        &address,
    ));
    let created = loads_answer(&reply, &mut budget()).unwrap();
    let PyValue::Tuple(t) = created else {
        panic!("{created}")
    };
    let PyValue::Tuple(t) = &t[1] else {
        panic!("{t:?}")
    };
    let PyValue::Str(ident) = &t[0] else {
        panic!("{t:?}")
    };
    let ident = ident.clone();
    let append = dumps_request(Some(&ident), "append", &[PyValue::None], &[], &address);
    assert!(request_parts(&append).is_some());
    ask(&append);
    // The same call, read straight and decoded.
    let both = |n: i64| {
        let straight = dumps_request(Some(&ident), "__mul__", &[n.into()], &[], &address);
        assert!(request_parts(&straight).is_some());
        let mut decoded = straight.clone();
        decoded.push(op::NONE);
        assert_eq!(request_parts(&decoded), None);
        assert_eq!(
            dumps(&loads(&decoded, &mut budget()).unwrap(), &address),
            dumps(&loads(&straight, &mut budget()).unwrap(), &address)
        );
        (straight, decoded)
    };
    let returned = |reply: &[u8]| reply.windows(7).take(32).any(|w| w == b"#RETURN");
    // `[None] * n` for the most items the request's memory holds: the
    // request's nodes took some of it, read straight or decoded.
    let request_memory = 8 * super::super::objects::MAX_FRAME;
    let most = (request_memory / size_of::<PyValue>()) as i64;
    let (straight, decoded) = both(most);
    let (read, decoded) = (ask(&straight).0, ask(&decoded).0);
    assert!(!returned(&read), "[None] * {most} built");
    assert_eq!(read, decoded, "[None] * {most}");
    // The work the same request takes either way.
    let (straight, decoded) = both(3);
    let (a, work_straight) = ask(&straight);
    let (b, work_decoded) = ask(&decoded);
    assert_eq!(a, b);
    assert_eq!(work_straight, work_decoded, "work");
}

/// Plain calls of scalars written by hand in the forms no client writes
/// (every protocol from 2 to 5, framed or not, with or without memo, a
/// marked tuple of no arguments, ints in `LONG1`'s longest and empty
/// forms, `-0.0` and a NaN's payload, strs and bytes at 255 bytes, UTF-8
/// past ASCII): each is read straight, as the decoders read it; and the
/// same with a lying frame, trailing bytes or a surrogate is theirs.
#[test]
fn hand_written_plain_calls_read_as_the_decoders_read_them() {
    let address = PyValue::Str("/tmp/x.sock".into());
    let s = |s: &str| [&[op::SHORT_BINUNICODE, s.len() as u8][..], s.as_bytes()].concat();
    let long1 = |b: &[u8]| [&[op::LONG1, b.len() as u8][..], b].concat();
    let float = |f: u64| [&[op::BINFLOAT][..], &f.to_be_bytes()].concat();
    let args: Vec<Vec<u8>> = vec![
        long1(&[]),
        long1(&[1, 0, 0, 0, 0, 0, 0, 0]),
        long1(&[0xff; 8]),
        long1(&[0, 0, 0, 0, 0, 0, 0, 0x80]),
        long1(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
        long1(&[0x80]),
        long1(&[0xff, 0x00]),
        float((-0.0f64).to_bits()),
        float(0x7ff8_0000_dead_beef),
        float(0xfff0_0000_0000_0001),
        s(&"é".repeat(127)),
        s(&"x".repeat(255)),
        [&[op::SHORT_BINBYTES, 255][..], &[0xff; 255]].concat(),
        vec![op::BININT2, 0xff, 0xff],
        vec![op::BININT, 0, 0, 0, 0x80],
    ];
    let mut reqs: Vec<Vec<u8>> = Vec::new();
    for proto in 2..=5u8 {
        for framed in [false, true] {
            for memo in [false, true] {
                let m = |mut b: Vec<u8>| {
                    if memo {
                        b.push(op::MEMOIZE);
                    }
                    b
                };
                let mut calls: Vec<Vec<u8>> = vec![
                    // A marked tuple of no arguments.
                    [vec![op::MARK], m(vec![op::TUPLE])].concat(),
                    m(vec![op::EMPTY_TUPLE]),
                ];
                for a in &args {
                    calls.push([a.clone(), m(vec![op::TUPLE1])].concat());
                    let marked = [&[op::MARK][..], a, a, a].concat();
                    calls.push([marked, m(vec![op::TUPLE])].concat());
                }
                for call in calls {
                    let body = [
                        vec![op::MARK],
                        m(s("7f3a")),
                        m(s("m")),
                        call,
                        m(vec![op::EMPTY_DICT]),
                        m(vec![op::TUPLE]),
                        vec![op::STOP],
                    ]
                    .concat();
                    let mut bytes = vec![op::PROTO, proto];
                    if framed {
                        bytes.push(op::FRAME);
                        bytes.extend((body.len() as u64).to_le_bytes());
                    }
                    bytes.extend(body);
                    reqs.push(bytes);
                }
            }
        }
    }
    for bytes in &reqs {
        let parts = request_parts(bytes).unwrap_or_else(|| panic!("{bytes:?} not read"));
        read_alike(bytes, &address, parts);
        // Trailing bytes (which the decoders never read) and a frame
        // that says one byte more or less: the decoders'.
        for extra in [op::STOP, op::NONE] {
            let mut longer = bytes.clone();
            longer.push(extra);
            assert_eq!(request_parts(&longer), None);
        }
        if bytes[2] == op::FRAME {
            for lie in [-1i64, 1] {
                let mut b = bytes.clone();
                let n = u64::from_le_bytes(b[3..11].try_into().unwrap());
                b[3..11].copy_from_slice(&(n as i64 + lie).to_le_bytes());
                agree_on_request(&b, &address);
                assert_eq!(request_parts(&b), None);
            }
        }
    }
    // A lone surrogate in a str, as CPython writes it (`surrogatepass`).
    let mut b = reqs[0].clone();
    let at = b.windows(4).position(|w| w == b"7f3a").unwrap();
    b[at..at + 3].copy_from_slice(&[0xed, 0xa0, 0x80]);
    assert_eq!(request_parts(&b), None);
}
