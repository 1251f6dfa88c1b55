//! Unchanged Python programs on a multiproc Manager: this program starts
//! the server, and a Python program (Python's own `multiprocessing`, which
//! only connects to the server instead of starting its own) runs the
//! tutorials' pattern with four worker processes: a task queue, a results
//! dict, an `Event` that starts them all at once, and a counter (`Value`)
//! updated under a `Condition` over a `Lock`, which the main process
//! waits on until every task is counted. The Rust side then checks that
//! the server got every object back.
//!
//! Run: `cargo run --example python_clients` (needs a `python3` of 3.8 or
//! later on `PATH`, or the one named by `PYTHON`). Its last two lines are
//! `counter: 100` and `objects left on the server: 0`.

use std::process::Command;

use multiproc::conn::Address;
use multiproc::manager::Manager;

/// The Python program: what a Python user writes, but for the two lines
/// that connect to a running server.
const PROGRAM: &str = r#"
import os
from multiprocessing import Process
from multiprocessing.managers import SyncManager

def worker(tasks, results, done, counter, start):
    start.wait()
    while True:
        x = tasks.get()
        if x is None:
            break
        results[x] = (os.getpid(), x * x)
        with done:
            counter.value += 1
            done.notify_all()

if __name__ == '__main__':
    m = SyncManager(address=os.environ['MULTIPROC_ADDRESS'],
                    authkey=bytes.fromhex(os.environ['MULTIPROC_AUTHKEY']))
    m.connect()
    tasks, results = m.Queue(), m.dict()
    counter, start = m.Value('i', 0), m.Event()
    # A condition over a lock of the server's: `with done` takes that lock.
    done = m.Condition(m.Lock())
    workers = [Process(target=worker, args=(tasks, results, done, counter, start))
               for _ in range(4)]
    for w in workers:
        w.start()
    for x in range(100):
        tasks.put(x)
    for _ in workers:
        tasks.put(None)
    start.set()
    with done:
        print('all counted:', done.wait_for(lambda: counter.value == 100, timeout=60))
    for w in workers:
        w.join()
    by = {}
    for pid, _ in results.values():
        by[pid] = by.get(pid, 0) + 1
    print('squares:', len(results), 'summing to', sum(sq for _, sq in results.values()))
    print('tasks per worker:', sorted(by.values(), reverse=True))
    print('counter:', counter.value)
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manager = Manager::start()?;
    let Address::Unix(path) = manager.address() else {
        unreachable!("Manager::start listens on a Unix socket");
    };
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    // A file rather than `-c`: Python's spawn and forkserver start methods
    // (forkserver is 3.14's default) import the main module in each child.
    let script = std::env::temp_dir().join(format!(
        "multiproc-example-python-clients-{}.py",
        std::process::id()
    ));
    std::fs::write(&script, PROGRAM)?;
    let authkey: String = manager
        .authkey()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let status = Command::new(&python)
        .arg(&script)
        .env("MULTIPROC_ADDRESS", path)
        .env("MULTIPROC_AUTHKEY", authkey)
        .status();
    std::fs::remove_file(&script)?;
    let status = status.map_err(|e| format!("cannot run {python}: {e}"))?;
    if !status.success() {
        return Err(format!("{python} failed: {status}").into());
    }
    // Every proxy the Python processes made was released when they ended.
    println!(
        "objects left on the server: {}",
        manager.number_of_objects()?
    );
    Ok(())
}
