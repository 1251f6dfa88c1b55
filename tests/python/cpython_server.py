"""CPython's own manager server, the reference the tests compare ours with.

    python cpython_server.py ADDRESS AUTHKEY_HEX

Serves SyncManager's typeids plus `get_dict` (one dict, for the remote
manager pattern: `BaseManager.register('get_dict')` clients) at ADDRESS
(`tcp:127.0.0.1:0`: any free port) and prints `serving on ADDRESS` with the
address it bound, as `multiproc manager serve` does. Runs until killed or
shut down by a client. It unpickles whatever a key-holder sends: loopback
tests only.
"""

import multiprocessing
import sys
from multiprocessing.managers import SyncManager

from manager_common import address, authkey, show


class ReferenceManager(SyncManager):
    pass


THE_DICT = {}
ReferenceManager.register("get_dict", callable=lambda: THE_DICT)

if __name__ == "__main__":
    key = authkey(sys.argv[2])
    multiprocessing.current_process().authkey = key
    server = ReferenceManager(address=address(sys.argv[1]), authkey=key).get_server()
    print("serving on", show(server.address), flush=True)
    server.serve_forever()
