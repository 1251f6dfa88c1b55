//! The Redis backend's connection: URLs, timeouts, a server that is not
//! there, killed or restarted (clear errors, never a hang, recovery on
//! the next call).
#![cfg(feature = "redis")]

mod common;

use std::time::{Duration, Instant};

use common::redis::{redis_url, unique};
use multiproc::{Error, Manager};

#[test]
fn bad_urls_and_timeouts_are_invalid_arguments() {
    for url in ["", "http://127.0.0.1:1/", "redis://[::1", "not a url"] {
        assert!(
            matches!(Manager::connect_redis(url), Err(Error::InvalidArgument(_))),
            "{url:?}"
        );
    }
    let zero = Manager::connect_redis_with_timeout("redis://127.0.0.1:1/", Duration::ZERO);
    assert!(matches!(zero, Err(Error::InvalidArgument(_))));
}

#[test]
fn an_unreachable_server_is_manager_gone_within_the_timeout() {
    // A port nothing listens on: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = Instant::now();
    let r = Manager::connect_redis(&format!("redis://127.0.0.1:{port}/"));
    assert!(matches!(r, Err(Error::ManagerGone(_))), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // A listener that never answers: the timeout bounds the wait, and a
    // huge one is accepted.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/", silent.local_addr().unwrap());
    let start = Instant::now();
    let r = Manager::connect_redis_with_timeout(&url, Duration::from_millis(300));
    assert!(matches!(r, Err(Error::ManagerGone(_))), "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let huge = std::thread::spawn(move || Manager::connect_redis_with_timeout(&url, Duration::MAX));
    drop(silent);
    let r = common::watchdog(
        "a connection with Duration::MAX",
        Duration::from_secs(20),
        || huge.join().unwrap(),
    );
    assert!(r.is_err());
}

#[test]
fn named_objects_need_redis() {
    let local = Manager::start().unwrap();
    assert!(matches!(
        local.dict_named::<String, i64>("x"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(local.dict::<String, i64>().unwrap().redis_name().is_none());
    let Some(url) = redis_url("named_objects_need_redis") else {
        return;
    };
    let m = Manager::connect_redis(&url).unwrap();
    for bad in [String::new(), "x".repeat(513)] {
        assert!(matches!(
            m.dict_named::<String, i64>(&bad),
            Err(Error::InvalidArgument(_))
        ));
    }
    let d = m.dict::<String, i64>().unwrap();
    assert_eq!(d.redis_name().map(str::len), Some(32));
    assert!(matches!(
        m.number_of_objects(),
        Err(Error::InvalidArgument(_))
    ));
}

/// A Redis object's proxy sent through a pipe or a queue to a forked child,
/// and stored inside another Redis object, still reaches the same object.
#[test]
fn redis_proxies_travel_through_pipes_queues_and_values() {
    let Some(url) = redis_url("redis_proxies_travel_through_pipes_queues_and_values") else {
        return;
    };
    let m = Manager::connect_redis(&url).unwrap();
    let (dname, lname) = (unique("travel-d"), unique("travel-l"));
    let d = m.dict_named::<String, i64>(&dname).unwrap();
    let holder = m
        .dict_named::<String, multiproc::manager::DictProxy<String, i64>>(&lname)
        .unwrap();
    // Stored in a value, read back as a proxy of the same dict.
    holder.set("inner".into(), d.clone()).unwrap();
    let back = holder.get(&"inner".into()).unwrap().expect("stored");
    back.set("via value".into(), 1).unwrap();
    assert_eq!(d.get(&"via value".into()).unwrap(), Some(1));

    let (mut parent, mut child_end) = multiproc::Pipe(true).unwrap();
    let q = multiproc::Queue::<multiproc::manager::DictProxy<String, i64>>::new().unwrap();
    let q2 = q.clone();
    let child = common::static_child(move || {
        let by_pipe: multiproc::manager::DictProxy<String, i64> = child_end.recv().unwrap();
        by_pipe.increment(&"n".into(), 1).unwrap();
        let by_queue = q2.get().unwrap();
        by_queue.increment(&"n".into(), 10).unwrap();
        child_end.send(&()).unwrap();
    });
    parent.send(&d).unwrap();
    q.put(d.clone()).unwrap();
    common::watchdog("the child's reply", Duration::from_secs(30), || {
        parent.recv::<()>().unwrap()
    });
    assert_eq!(common::join(&child, Duration::from_secs(30)), 0);
    assert_eq!(d.get(&"n".into()).unwrap(), Some(11));
    // A local manager's proxy cannot be stored in Redis.
    let local = Manager::start().unwrap();
    let theirs = local.dict::<String, i64>().unwrap();
    assert!(matches!(
        holder.set("local".into(), theirs),
        Err(Error::Serialize(_))
    ));
    m.remove_named(&dname).unwrap();
    m.remove_named(&lname).unwrap();
}

/// Proxies decoded from a peer's messages name servers this process never
/// connected to: each is refused, and the process connects nowhere and
/// keeps nothing for them.
#[test]
fn proxies_of_servers_this_process_did_not_choose_are_refused() {
    let (mut tx, mut rx) = multiproc::Pipe(true).unwrap();
    let child = common::static_child(move || {
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..100 {
            match rx.recv::<multiproc::manager::DictProxy<String, i64>>() {
                Ok(d) => {
                    assert!(d.redis_name().is_some());
                    ok += 1;
                }
                Err(Error::Deserialize(_)) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(ok == 0 && refused == 100, "{ok} {refused}");
        // A hostile kind, name or URL is an error too.
        for _ in 0..3 {
            assert!(rx
                .recv::<multiproc::manager::DictProxy<String, i64>>()
                .is_err());
        }
    });
    // What a Redis dict's proxy is on the wire: its URL, kind (0: dict)
    // and name.
    for port in 1..=100u32 {
        tx.send(&(format!("redis://127.0.0.1:{port}/"), 0u32, "x"))
            .unwrap();
    }
    tx.send(&("redis://127.0.0.1:1/", 1u32, "x")).unwrap();
    tx.send(&("redis://127.0.0.1:1/", 0u32, "")).unwrap();
    tx.send(&("http://127.0.0.1:1/", 0u32, "x")).unwrap();
    assert_eq!(common::join(&child, Duration::from_secs(60)), 0);
}
