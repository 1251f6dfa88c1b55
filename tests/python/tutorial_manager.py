# The tutorials' Manager program (../shared/seeds/, "manager共享方法"), with
# `Manager()` replaced by a `connect()` to the server at ADDRESS and nothing
# else changed:  python tutorial_manager.py ADDRESS AUTHKEY_HEX
import sys
from multiprocessing.managers import SyncManager
from manager_common import address, authkey

from multiprocessing import Process, Manager

def f(d, l):
    d[1] = '1'
    d['2'] = 2
    d[0.25] = None
    l.reverse()

if __name__ == '__main__':
    manager = SyncManager(address=address(sys.argv[1]), authkey=authkey(sys.argv[2]))
    manager.connect()

    d = manager.dict()
    l = manager.list(range(10))

    p = Process(target=f, args=(d, l))
    p.start()
    p.join()

    print(d)
    print(l)
