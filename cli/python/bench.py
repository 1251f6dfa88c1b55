"""The Python side of `multiproc bench`: the same work with `multiprocessing`.

Usage: python3 bench.py SCENARIO N [ADDRESS AUTHKEY_HEX SERVER_PID]
Prints one number in the scenario's unit (see `multiproc bench --json`);
the manager scenarios add the server's CPU time per operation in us.
With ADDRESS (a Unix socket path), AUTHKEY_HEX and SERVER_PID, a manager
scenario runs the same client work against that server (multiproc's, which
`multiproc bench` starts) instead of a `Manager()` of Python's own. With
AUTHKEY_HEX `raw`, ADDRESS is a raw socket echo's (which `multiproc bench`
starts too): each client sends the requests its proxy would (the same
pickles, framed as `Connection.send_bytes` frames them) and unpickles each
answer, and the figures are that echo's (set, get and append only).
"""
import os
import sys
import time
import multiprocessing as mp
from multiprocessing.connection import Client
from multiprocessing.managers import SyncManager

ctx = mp.get_context("fork")  # the start method multiproc's Process uses


def lock_uncontended(n):
    lock = ctx.Lock()
    t = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - t) / n * 1e9  # ns


def semaphore_uncontended(n):
    sem = ctx.Semaphore(1)
    t = time.perf_counter()
    for _ in range(n):
        sem.acquire()
        sem.release()
    return (time.perf_counter() - t) / n * 1e9  # ns


def _answer(ping, pong, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def event_pingpong(n):
    ping, pong = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_answer, args=(ping, pong, n + 100))
    p.start()
    for _ in range(100):  # warm-up, as on the Rust side
        ping.set()
        pong.wait()
        pong.clear()
    t = time.perf_counter()
    for _ in range(n):
        ping.set()
        pong.wait()
        pong.clear()
    elapsed = time.perf_counter() - t
    p.join()
    return elapsed / n * 1e6  # us


def _produce(q, n):
    for i in range(n):
        q.put(i)


def queue_items_2proc(n):
    q = ctx.Queue()
    p = ctx.Process(target=_produce, args=(q, n))
    t = time.perf_counter()
    p.start()
    for i in range(n):
        assert q.get() == i
    rate = n / (time.perf_counter() - t)
    p.join()
    return rate  # ops/s


def _echo(conn, n):
    for _ in range(n):
        conn.send(conn.recv())


def pipe_pingpong(n):
    a, b = ctx.Pipe()
    p = ctx.Process(target=_echo, args=(b, n + 100))
    p.start()
    for _ in range(100):
        a.send(7)
        a.recv()
    t = time.perf_counter()
    for _ in range(n):
        a.send(7)
        a.recv()
    elapsed = time.perf_counter() - t
    p.join()
    return elapsed / n * 1e6  # us


def _locked_incr(v, go, n):
    go.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def value_locked_incr_2proc(n):
    v = ctx.Value("q", 0, lock=True)
    go = ctx.Event()
    procs = [ctx.Process(target=_locked_incr, args=(v, go, n)) for _ in range(2)]
    for p in procs:
        p.start()
    t = time.perf_counter()
    go.set()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t
    assert v.value == 2 * n, (v.value, 2 * n)
    return 2 * n / elapsed  # ops/s


def array_sum_locked(n):
    a = ctx.Array("d", [float(i) for i in range(1024)], lock=True)
    t = time.perf_counter()
    for _ in range(n):
        with a.get_lock():
            sum(a.get_obj())
    return n / (time.perf_counter() - t)  # ops/s


def _tiny(x):
    return (x * 2654435761) & 0xFFFFFFFF


def pool_map_10k(rounds):
    items = list(range(10_000))
    with ctx.Pool(2) as pool:
        pool.map(_tiny, items)  # warm-up, as the Rust side's pool is running
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            pool.map(_tiny, items)
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]  # ms, median


def _server_cpu(pid):
    """CPU seconds of the server process so far (exited threads included),
    to the nanosecond: Linux's CPU clock of process `pid` (clock id
    `MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)`, what C's
    `clock_getcpuclockid` gives; `/proc/<pid>/stat` counts 10 ms ticks)."""
    return time.clock_gettime((~pid << 3) | 2)


def _server_split(pid):
    """User and system CPU seconds of the server process so far: the
    kernel's split of the clock above (`/proc/<pid>/stat`'s utime and
    stime, charged a 10 ms tick at a time to whichever the process was in
    when the tick came)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _server_usage(pid, ops, elapsed, before):
    """The figures the managed scenarios print: ops/s, then the server's
    CPU time per op in microseconds, then its user and system parts."""
    cpu0, (user0, sys0) = before
    cpu = _server_cpu(pid) - cpu0
    user, sys_ = _server_split(pid)
    us = [seconds / ops * 1e6 for seconds in (cpu, user - user0, sys_ - sys0)]
    return " ".join(str(f) for f in [ops / elapsed, *us])


# The server the manager scenarios use: None for a `Manager()` of Python's
# own, else (address, authkey hex, pid) of a running one (multiproc's).
SERVER = None


def _clients(work, clients, args, n):
    """Runs `work(*args, c, n)` in `clients` clients: this process for one,
    forked children for more."""
    if clients == 1:
        work(*args, 0, n)
        return
    ps = [ctx.Process(target=work, args=(*args, c, n)) for c in range(clients)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
        assert p.exitcode == 0, p.exitcode


def _manager_clients(op, clients, n):
    if SERVER is not None and SERVER[1] == "raw":
        return _raw_clients(op, clients, n)
    if SERVER is None:
        m = ctx.Manager()
        pid = m._process.pid
    else:
        address, key, pid = SERVER
        m = SyncManager(address=address, authkey=bytes.fromhex(key))
        m.connect()
        pid = int(pid)
    try:
        d, l = m.dict(), m.list()
        if op == "get":
            d.update({i: i for i in range(n)})
        elif op == "copy":  # the 1000 values each batch reads
            d.update({i: i for i in range(1000)})
        before = (_server_cpu(pid), _server_split(pid))
        t = time.perf_counter()
        _clients(_manager_work, clients, (op, d, l), n)
        elapsed = time.perf_counter() - t
        usage = _server_usage(pid, clients * n, elapsed, before)
        expected = {
            "set": clients * n,
            "get": n,
            "update": clients * n // 1000 * 1000,
            "copy": 1000,
        }
        if op == "append":
            assert len(l) == clients * n, (len(l), clients * n)
        else:
            assert len(d) == expected[op], (len(d), expected[op])
        del d, l
    finally:
        if SERVER is None:
            m.shutdown()
    return usage


def _manager_work(op, d, l, client, n):
    base = client * n
    if op == "set":
        for i in range(n):
            d[base + i] = i
    elif op == "get":
        for i in range(n):
            d.get(i)
    elif op == "append":
        for i in range(n):
            l.append(i)
    elif op == "update":  # Python's way to batch: one update() per 1000 items
        for b in range(n // 1000):
            d.update({base + b * 1000 + i: i for i in range(1000)})
    elif op == "copy":  # Python's closest to a batched lookup: 1000 values
        for b in range(n // 1000):
            assert len(d.copy()) == 1000


def _raw_clients(op, clients, n):
    address, _, pid = SERVER
    pid = int(pid)
    before = (_server_cpu(pid), _server_split(pid))
    t = time.perf_counter()
    _clients(_raw_work, clients, (op, address), n)
    elapsed = time.perf_counter() - t
    return _server_usage(pid, clients * n, elapsed, before)


def _raw_work(op, address, client, n):
    """The calls `_manager_work` makes for `op`, as a proxy sends them (its
    id, method, args and kwargs, through `Connection.send`), to the raw
    echo, whose every answer is `('#RETURN', None)`."""
    conn = Client(address)
    ident = "7f" + "0" * 10  # as long as an id the server gives
    base = client * n
    for i in range(n):
        if op == "set":
            call = (ident, "__setitem__", (base + i, i), {})
        elif op == "get":
            call = (ident, "get", (i,), {})
        elif op == "append":
            call = (ident, "append", (i,), {})
        else:
            raise ValueError(f"no raw calls for {op}")
        conn.send(call)
        kind, _ = conn.recv()
        assert kind == "#RETURN", kind
    conn.close()


def manager_dict_set_1client(n):
    return _manager_clients("set", 1, n)


def manager_dict_get_1client(n):
    return _manager_clients("get", 1, n)


def manager_dict_set_2client(n):
    return _manager_clients("set", 2, n)


def manager_list_append_1client(n):
    return _manager_clients("append", 1, n)


def manager_dict_set_batched(n):
    return _manager_clients("update", 1, n)


def manager_dict_set_4client(n):
    return _manager_clients("set", 4, n)


def manager_dict_set_1client_socket(n):
    # Python's manager has only its socket: the same as manager_dict_set_1client.
    return _manager_clients("set", 1, n)


def manager_dict_set_4client_socket(n):
    # The same as manager_dict_set_4client, as for the 1-client socket row.
    return _manager_clients("set", 4, n)


def manager_dict_get_batched(n):
    return _manager_clients("copy", 1, n)


def _noop():
    pass


def process_start_join(n):
    t = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=_noop)
        p.start()
        p.join()
    return (time.perf_counter() - t) / n * 1e3  # ms


if __name__ == "__main__":
    scenario, n = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) == 6:
        SERVER = tuple(sys.argv[3:6])
    print(globals()[scenario](n))
