"""Runs CPython's own manager tests, unchanged, against a running server.

    python run_cpython_tests.py ADDRESS AUTHKEY_HEX [TestClass ...]

Imports `test._test_multiprocessing` from the interpreter running this
script (nothing of CPython's is copied here) and runs the named test classes
(default `_TestContainers`) with only the mixin that provides `self.manager`
replaced: it connects to the server at ADDRESS instead of starting one, and
never shuts it down. Exit status 0 when every test passed.
"""

import multiprocessing
import sys
import unittest
from multiprocessing.managers import SyncManager

import test._test_multiprocessing as cpython_tests

from manager_common import address, authkey


class ConnectedManagerMixin(cpython_tests.ManagerMixin):
    """CPython's ManagerMixin, connected to a server that runs elsewhere."""

    @classmethod
    def setUpClass(cls):
        super(cpython_tests.ManagerMixin, cls).setUpClass()
        # CPython bug #78740: a nested proxy read back increfs with the
        # process's authkey, not the manager's.
        multiprocessing.current_process().authkey = KEY
        cls.manager = SyncManager(address=ADDRESS, authkey=KEY)
        cls.manager.connect()

    @classmethod
    def tearDownClass(cls):
        cls.manager = None  # the server is not ours to shut down
        super(cpython_tests.ManagerMixin, cls).tearDownClass()


def suite(names):
    tests = unittest.TestSuite()
    for name in names:
        base = getattr(cpython_tests, name)
        if "manager" not in base.ALLOWED_TYPES:
            sys.exit("%s does not run with a manager" % name)
        case = type("WithManager" + name[1:],
                    (base, ConnectedManagerMixin, unittest.TestCase), {})
        tests.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    return tests


if __name__ == "__main__":
    ADDRESS, KEY = address(sys.argv[1]), authkey(sys.argv[2])
    result = unittest.TextTestRunner(verbosity=2).run(
        suite(sys.argv[3:] or ["_TestContainers"]))
    print("%s: ran %d, failures %d, errors %d, skipped %d" % (
        sys.version.split()[0], result.testsRun, len(result.failures),
        len(result.errors), len(result.skipped)))
    sys.exit(0 if result.wasSuccessful() and result.testsRun else 1)
