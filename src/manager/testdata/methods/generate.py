"""The cases of apply.rs's `python_answers_every_case_alike` test, and CPython's answers.

Each case is (kind, initial contents, method, args, kwds): the call a proxy sends.
Run with CPython 3.13 from this directory's parent's parent's parent (or anywhere):

    python3.13 src/manager/testdata/methods/generate.py

It writes cases.pickle (protocol 4, as clients send) and expected.txt: for each
case, `ok <repr of the answer> | <repr of the object after>` or
`err <class>: <str of the exception> | <repr of the object after>`, from a real
list, dict and multiprocessing.managers.Namespace. (`__imul__`, `__ior__` and
`__iadd__` answers are taken as None: the manager answers None, the proxies
ignore the answer.) With 3.8 the answers differ only where 3.8's messages do
(no `dict.` prefixes, `can only assign an iterable`, `AttributeError: zz` for a
Namespace) and in lacking 3.9's dict `|`.

Not among the cases: a sort of mixed types in lists longer than two, whose
TypeError names the first pair compared that Python cannot order; which pair
that is depends on the order of comparisons, which CPython changed in 3.13
(the manager's sort names a pair of its own, e.g. 'int' and 'str' for
[3, 1, 'a', 2], where 3.13 says 'str' and 'int').
"""
import os
import pickle
import sys
from multiprocessing.managers import Namespace

HERE = os.path.dirname(os.path.abspath(__file__))
N = None
L5 = [0, 1, 2, 3, 4]
cases = []
def c(kind, init, method, *args, **kwds):
    cases.append((kind, init, method, args, kwds))
big = 10**30
# list
for m, a in [
    ('__getitem__', (9,)), ('__getitem__', (-5,)), ('__getitem__', (True,)), ('__getitem__', ('a',)),
    ('__getitem__', (big,)), ('__getitem__', (-big,)), ('__getitem__', (None,)),
    ('__getitem__', (slice(1, 3),)), ('__getitem__', (slice(None, None, -2),)), ('__getitem__', (slice(-big, big, big),)),
    ('__getitem__', (slice(big, -big, -big),)), ('__getitem__', (slice(None, None, 0),)), ('__getitem__', (slice('a', None),)),
    ('__getitem__', (slice(4, 1, -1),)), ('__getitem__', (slice(-2, None),)), ('__getitem__', (slice(True, None, 2),)),
    ('__setitem__', (9, 1)), ('__setitem__', (-1, 'x')), ('__setitem__', (slice(1, 3), 'abc')),
    ('__setitem__', (slice(None, None, 2), [1, 2])), ('__setitem__', (slice(None, None, 2), 'abc')),
    ('__setitem__', (slice(1, 2), 1)), ('__setitem__', (slice(3, 1), [7])), ('__setitem__', (slice(None, None, -1), 'abcde')),
    ('__setitem__', (slice(4, 1, -1), 'xyz')), ('__setitem__', (slice(-1, None), range(3))), ('__setitem__', (slice(0, 2), {'k': 1})),
    ('__setitem__', (slice(9, None, 2), [])), ('__setitem__', (slice(None, None, 3), {7, 8})), ('__setitem__', (big, 1)),
    ('__delitem__', (9,)), ('__delitem__', (-1,)), ('__delitem__', (slice(None, None, 2),)), ('__delitem__', (slice(4, 0, -2),)),
    ('__delitem__', (slice(1, -1),)), ('__delitem__', (slice(None, None, -1),)), ('__delitem__', ('a',)), ('__delitem__', (slice(None, None, 0),)),
    ('pop', ()), ('pop', (0,)), ('pop', (9,)), ('pop', (-5,)), ('pop', (-6,)), ('pop', ('a',)), ('pop', (big,)), ('pop', (True,)),
    ('insert', (2, 'x')), ('insert', (-100, 'x')), ('insert', (100, 'x')), ('insert', (-1, 'x')), ('insert', (big, 'x')),
    ('insert', (1.0, 'x')), ('insert', (1,)),
    ('index', (3,)), ('index', (9,)), ('index', ('x',)), ('index', (3, 4)), ('index', (3, -2)), ('index', (3, 0, 3)), ('index', (3, 0, -1)),
    ('index', (3, -big, big)), ('index', (3, 'a')), ('index', (3, None)), ('index', (1.0,)), ('index', (True,)),
    ('count', (1,)), ('count', (True,)), ('count', (9,)),
    ('remove', (9,)), ('remove', (2,)), ('remove', (2.0,)),
    ('append', ([1],)), ('extend', ('ab',)), ('extend', (b'ab',)), ('extend', ({'k': 1, 'j': 2},)), ('extend', (range(10, 4, -3),)),
    ('extend', (1,)), ('extend', ((5, 6),)), ('extend', (bytearray(b'\x01'),)), ('extend', (frozenset([9]),)),
    ('__iadd__', ('xy',)), ('__iadd__', (1,)),
    ('__add__', ([9],)), ('__add__', ((9,),)), ('__add__', ('a',)),
    ('__mul__', (2,)), ('__mul__', (0,)), ('__mul__', (-1,)), ('__mul__', (True,)), ('__mul__', ('a',)), ('__mul__', (2.0,)), ('__mul__', (2**63,)),
    ('__rmul__', (3,)), ('__imul__', (2,)), ('__imul__', (0,)), ('__imul__', ('a',)),
    ('__contains__', (4,)), ('__contains__', (4.0,)), ('__contains__', ('4',)),
    ('__len__', ()), ('__reversed__', ()), ('reverse', ()), ('sort', ()), ('clear', ()), ('copy', ()),
    ('__repr__', ()), ('__str__', ()),
]:
    c('list', L5, m, *a)
c('list', [3, 1, 2], 'sort', reverse=True)
c('list', [3, 1, 2], 'sort', reverse=0)
c('list', [1, 'a'], 'sort')
c('list', ['a', 1], 'sort')
c('list', ['b', 'a', 'c'], 'sort')
c('list', [(1, 'b'), (1, 'a'), (0, 'z')], 'sort')
c('list', [[1, 2], [1], []], 'sort', reverse=True)
c('list', [None], 'sort')
c('list', [None, None], 'sort')
c('list', [1.5, 1, True, 0.0, -3], 'sort')
c('list', [b'b', b'a'], 'sort')
c('list', [], 'pop')
c('list', ['x', 1.5, None], 'sort')
c('list', [(1, 'a'), (1, 2)], 'sort')
c('list', [[1, 'a'], [1, 2]], 'sort', reverse=True)
c('list', [2, 1, 3, 'b', 'a'], 'sort', reverse=True)
c('list', [1, 10**30, -10**30, 2.5], 'sort')
c('list', [{1}, {2}], 'sort')
c('list', [], 'pop', 3)
c('list', [], '__mul__', 2**63)
c('list', [1, 'a', None, 2.5, (1,), b'x', {'k': [1]}, frozenset([1]), 1e16, -0.0, 10**30, complex(1, 2), "it's"], '__repr__')
# dict
D = {'a': 1, 'b': 2}
for m, a, k in [
    ('__getitem__', ('a',), {}), ('__getitem__', ('x',), {}), ('__getitem__', (1.0,), {}),
    ('__setitem__', ('c', 3), {}), ('__setitem__', ('a', 9), {}), ('__delitem__', ('a',), {}), ('__delitem__', ('x',), {}),
    ('__contains__', ('a',), {}), ('__len__', (), {}), ('clear', (), {}), ('copy', (), {}),
    ('get', ('a',), {}), ('get', ('x',), {}), ('get', ('x', 0), {}), ('get', (), {}), ('get', (1, 2, 3), {}),
    ('items', (), {}), ('keys', (), {}), ('values', (), {}),
    ('pop', ('a',), {}), ('pop', ('x',), {}), ('pop', ('x', 7), {}), ('pop', (), {}),
    ('popitem', (), {}), ('setdefault', ('a', 5), {}), ('setdefault', ('z',), {}), ('setdefault', ('z', 5), {}),
    ('update', ({'c': 3},), {'d': 4}), ('update', ([('c', 3), ['d', 4], 'ef'],), {}), ('update', (1,), {}),
    ('update', ([1],), {}), ('update', ([(1, 2, 3)],), {}), ('update', ('ab',), {}), ('update', ((),), {'a': 0}),
    ('update', ([frozenset()],), {}), ('update', ([{'p': 1, 'q': 2}],), {}),
    ('__ior__', ({'z': 0},), {}), ('__ior__', ([(1, 2)],), {}), ('__ior__', (1,), {}),
    ('__or__', ({'a': 9, 'c': 3},), {}), ('__ror__', ({'z': 0, 'a': 5},), {}),
    ('fromkeys', ('aba', 0), {}), ('fromkeys', ([1, 2],), {}), ('fromkeys', (1,), {}),
    ('__reversed__', (), {}), ('__repr__', (), {}), ('__str__', (), {}),
]:
    c('dict', D, m, *a, **k)
c('dict', {}, 'popitem')
c('dict', {1: 'one', 2.5: [None], 'k': {'n': (1,)}, (1, 2): b'x'}, '__repr__')
# namespace
NS = {'b': 'x', 'a': 1, '_h': 2, 'C': 3}
for m, a in [
    ('__getattribute__', ('a',)), ('__getattribute__', ('zz',)), ('__getattribute__', (1,)),
    ('__setattr__', ('d', [1])), ('__setattr__', (1, 2)), ('__delattr__', ('a',)), ('__delattr__', ('zz',)),
    ('__repr__', ()), ('__str__', ()),
]:
    c('Namespace', NS, m, *a)
c('Namespace', {'a=': 2, 'a': 3, 'B': 0, 'b': 1}, '__repr__')

# wrong arguments (the server calls the method itself: these are its messages)
for m, a, k in [
    ('pop', (1, 2, 3), {}), ('pop', (), {'index': 1}), ('index', (), {}), ('index', (1, 2, 3, 4), {}), ('index', (1,), {'start': 0}),
    ('insert', (1,), {}), ('append', (), {}), ('append', (1, 2), {}), ('append', (), {'x': 1}), ('count', (), {}),
    ('remove', (), {}), ('extend', (), {}), ('reverse', (1,), {}), ('copy', (1,), {}), ('clear', (1,), {}),
    ('__reversed__', (1,), {}), ('sort', (1,), {}), ('sort', (), {'foo': 2}), ('sort', (), {'key': None, 'reverse': True, 'x': 1}),
    ('sort', (), {'key': None}), ('sort', (), {'reverse': 'x'}), ('sort', (), {'reverse': None}),
    ('__mul__', (), {}), ('__imul__', (), {}), ('__iadd__', (), {}), ('__add__', (), {}), ('__contains__', (), {}),
    ('__getitem__', (), {}), ('__getitem__', (1,), {'x': 2}), ('__setitem__', (1,), {}), ('__setitem__', (1, 2, 3), {}),
    ('__delitem__', (), {}), ('__len__', (1,), {}), ('__len__', (), {'x': 1}), ('__rmul__', (1.5,), {}), ('__imul__', ('a',), {}),
]:
    c('list', L5, m, *a, **k)
for m, a, k in [
    ('pop', (1, 2, 3), {}), ('pop', (), {}), ('pop', (), {'key': 1}), ('get', (), {}), ('get', (1, 2, 3), {}), ('get', (), {'key': 1}),
    ('setdefault', (), {}), ('setdefault', (1, 2, 3), {}), ('popitem', (1,), {}), ('keys', (1,), {}), ('keys', (), {'x': 1}),
    ('values', (1,), {}), ('items', (1,), {}), ('clear', (1,), {}), ('copy', (1,), {}), ('update', (1, 2), {}),
    ('__getitem__', (), {}), ('__getitem__', (1, 2), {}), ('__setitem__', (1,), {}), ('__setitem__', (1, 2), {'x': 1}),
    ('__delitem__', (), {}), ('__contains__', (), {}), ('__len__', (1,), {}), ('fromkeys', (), {}), ('fromkeys', (1, 2, 3), {}),
    ('__reversed__', (1,), {}), ('__ior__', (), {}),
]:
    c('dict', D, m, *a, **k)
for m, a, k in [
    ('__setattr__', ('a',), {}), ('__getattribute__', (), {}), ('__getattribute__', ('a', 2), {}), ('__delattr__', (), {}),
    ('__setattr__', ('a', 1), {'x': 1}),
]:
    c('Namespace', NS, m, *a, **k)

def show(v):
    if type(v).__name__ in ('list_iterator', 'list_reverseiterator', 'dict_reversekeyiterator', 'dict_keyiterator'):
        v = list(v)
    if type(v).__name__ in ('dict_items', 'dict_keys', 'dict_values'):
        v = list(v)
    return repr(v)

out = []
for kind, init, method, args, kwds in cases:
    if kind == 'list':
        obj = list(init)
    elif kind == 'dict':
        obj = dict(init)
    else:
        obj = Namespace(**init)
    try:
        if method == 'fromkeys':
            r = dict.fromkeys(*args, **kwds)
        else:
            r = getattr(obj, method)(*args, **kwds)
        if method in ('__imul__', '__ior__', '__iadd__'):
            r = None
        line = 'ok %s | %s' % (show(r), repr(obj))
    except Exception as e:
        line = 'err %s: %s | %s' % (type(e).__name__, str(e), repr(obj))
    out.append(line)
if sys.version_info[:2] != (3, 13):
    sys.exit('expected.txt holds CPython 3.13\'s answers: run this with python3.13')
with open(os.path.join(HERE, 'cases.pickle'), 'wb') as f:
    items = lambda i: list(i.items()) if isinstance(i, dict) else i
    pickle.dump([(k, items(i), m, a, kw) for k, i, m, a, kw in cases], f, protocol=4)
with open(os.path.join(HERE, 'expected.txt'), 'w') as f:
    f.write('\n'.join(out) + '\n')
print(len(cases), 'cases')
