//! The managed layer as a Rust user uses it, across processes: proxies and
//! manager handles moved into forked children, values as large as the
//! server takes, a server killed while many threads and children call it.

mod common;

use std::time::Duration;

use common::watchdog;
use multiproc::manager::Manager;

const LIMIT: Duration = Duration::from_secs(120);

/// A value as large as the server takes in one request reads back whole,
/// and a `pop` of it gives it back rather than losing it. (The client
/// allowed an answer half the memory the server allows a request: a
/// million-item list was stored, could not be read, and `pop` took it out
/// of the list and failed to decode it.)
#[test]
fn the_largest_value_the_server_takes_reads_back_and_pops() {
    watchdog("large values", LIMIT, || {
        let m = Manager::start().unwrap();
        let l = m.list::<Vec<i64>>().unwrap();
        // The largest of these the server takes in one request.
        let n = [1_600_000usize, 1_400_000, 1_200_000, 1_000_000]
            .into_iter()
            .find(|&n| l.append(vec![7; n]).is_ok())
            .expect("the server takes a million-item list in one request");
        assert_eq!(l.get(0).expect("get").len(), n);
        assert_eq!(l.pop(-1).expect("pop").len(), n);
        assert_eq!(l.len().unwrap(), 0);
        let d = m.dict::<String, Vec<i64>>().unwrap();
        d.set("k".into(), vec![7; n]).unwrap();
        assert_eq!(
            d.remove(&"k".into()).expect("remove").map(|v| v.len()),
            Some(n)
        );
        assert!(d.is_empty().unwrap());
    });
}
