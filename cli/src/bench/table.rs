//! `multiproc bench`'s table: every scenario beside its OS baseline and
//! Python, by layer, and the headline ratio.

use std::fmt::Write as _;

use super::scenarios::Scenario;
use super::{Layer, Measurement};

pub(super) fn print_table(results: &[(&Scenario, Measurement)], python: bool) {
    // The managed rows' Python client against multiproc's server, beside
    // the same client against Python's server: a column of its own.
    let peer = results
        .iter()
        .any(|(_, m)| m.python_client_our_server.is_some());
    let mut header = vec![
        "scenario",
        "multiproc",
        "OS baseline",
        "of OS speed",
        "python",
        "vs python",
    ];
    if peer {
        header.push(PEER_HEADER);
    }
    let mut rows: Vec<(Layer, Vec<String>)> = Vec::new();
    for (s, m) in results {
        let speed = s.unit.speed(m.multiproc);
        let baseline = m.baselines.first().map_or("n/a".into(), |&(name, v)| {
            format!("{} ({name})", s.unit.format(v))
        });
        let of_os = m.baselines.first().map_or("n/a".into(), |&(_, v)| {
            format!("{:.0}%", 100.0 * speed / s.unit.speed(v))
        });
        let py = m.python.map_or("n/a".into(), |p| s.unit.format(p.value));
        let vs_py = m
            .python
            .map_or("n/a".into(), |p| faster(speed / s.unit.speed(p.value)));
        let mut row = vec![
            s.name.into(),
            s.unit.format(m.multiproc),
            baseline,
            of_os,
            py,
            vs_py,
        ];
        if peer {
            row.push(peer_cell(s, m));
        }
        rows.push((s.layer, row));
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for (_, r) in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (c, &w) in cells.iter().zip(&widths) {
            let _ = write!(out, "{c:<w$}  ");
        }
        println!("{}", out.trim_end());
    };
    println!();
    line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for layer in Layer::ALL {
        if rows.iter().any(|(l, _)| *l == layer) {
            println!("{}", layer.title());
            for (_, r) in rows.iter().filter(|(l, _)| *l == layer) {
                line(r);
            }
        }
    }
    for (s, m) in results {
        for &(name, v) in m.baselines.iter().skip(1) {
            println!("   {}: also {} ({name})", s.name, s.unit.format(v));
        }
    }
    print_headline(results);
    print_redis_headline(results);
    if !python {
        println!("(python3 with multiprocessing not found: Python columns are n/a)");
    }
    if peer {
        println!(
            "\"{PEER_HEADER}\": Python's multiprocessing client, the same work as the \
             python column, against multiproc's manager server instead of Python's; in \
             brackets, its speed over the python column's."
        );
    }
    println!(
        "\"of OS speed\": multiproc's speed as a share of the raw OS primitive's, measured \
         alternately in this run (100% = no overhead; above 100% where the baseline is the \
         kernel's way (a socket) and multiproc's path is shared memory)."
    );
}

/// A speed ratio in words: "2.0x faster" above 1, "2.0x slower" below.
fn faster(ratio: f64) -> String {
    if ratio >= 1.0 {
        format!("{ratio:.1}x faster")
    } else {
        format!("{:.1}x slower", 1.0 / ratio)
    }
}

const PEER_HEADER: &str = "python client, our server";

/// The figure of Python's client against multiproc's server, and its speed
/// over the same client against Python's own server.
fn peer_cell(s: &Scenario, m: &Measurement) -> String {
    match (m.python_client_our_server, m.python) {
        (Some(ours), Some(theirs)) => format!(
            "{} ({:.1}x)",
            s.unit.format(ours.value),
            s.unit.speed(ours.value) / s.unit.speed(theirs.value)
        ),
        (Some(ours), None) => s.unit.format(ours.value),
        (None, _) => "n/a".into(),
    }
}

/// The classic advice with numbers: how many uncontended shared-layer
/// lock-and-unlocks (`lock_uncontended`) one managed-layer update costs, through the fast path (shared memory, the
/// default for a Rust client on this machine) and, when its row ran, over
/// the socket (every remote or Python client's path).
fn print_headline(results: &[(&Scenario, Measurement)]) {
    let find = |name: &str| results.iter().find(|(s, _)| s.name == name);
    let ns = |(s, m): &&(&Scenario, Measurement)| 1e9 / s.unit.speed(m.multiproc);
    match (find("manager_dict_set_1client"), find("lock_uncontended")) {
        (Some(managed), Some(shared)) => {
            let managed_ns = ns(&managed);
            let shared_ns = ns(&shared);
            let socket = find("manager_dict_set_1client_socket").map_or(String::new(), |s| {
                let socket_ns = ns(&s);
                format!(
                    " (over the socket, as for remote and Python clients: {:.1} us, {:.0}x)",
                    socket_ns / 1e3,
                    socket_ns / shared_ns
                )
            });
            println!(
                "headline: a managed dict set costs {:.1} us through shared memory, an uncontended \
                 shared lock and unlock {:.1} ns: {:.0}x{socket}. Value/Array are fast; a Manager is flexible.",
                managed_ns / 1e3,
                shared_ns,
                managed_ns / shared_ns
            );
        }
        _ if results.iter().all(|(s, _)| s.layer == Layer::Redis) => {}
        _ => println!("headline: run manager_dict_set_1client and lock_uncontended for the managed/shared ratio"),
    }
}

/// The Redis rows' headline, when they ran: a managed dict set on Redis
/// beside a raw round trip to the same server, and beside the local
/// manager's when its row ran too.
fn print_redis_headline(results: &[(&Scenario, Measurement)]) {
    let find = |name: &str| results.iter().find(|(s, _)| s.name == name);
    let Some((s, m)) = find("redis_dict_set_1client") else {
        return;
    };
    let us = |s: &Scenario, v: f64| 1e6 / s.unit.speed(v);
    let ours = us(s, m.multiproc);
    let raw = m.baselines.first().map_or(String::new(), |&(name, v)| {
        format!(", a raw round trip {:.1} us ({name})", us(s, v))
    });
    let local = find("manager_dict_set_1client_socket").map_or(String::new(), |(l, lm)| {
        format!(
            "; the local manager over its socket: {:.1} us",
            us(l, lm.multiproc)
        )
    });
    println!("headline (Redis): a managed dict set on Redis costs {ours:.1} us{raw}{local}.");
    println!(
        "Redis rows: their \"OS baseline\" is the same work in raw Redis commands on the same \
         server (the redis crate, a connection per client, no pipelining), measured alternately \
         in this run."
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Unit;

    #[test]
    fn slower_is_not_called_faster() {
        assert_eq!(faster(2.0), "2.0x faster");
        assert_eq!(faster(1.0), "1.0x faster");
        assert_eq!(faster(0.5), "2.0x slower");
        // Times: 10 ns against 20 ns is twice as fast; rates the other way.
        assert_eq!(
            faster(Unit::Ns.speed(10.0) / Unit::Ns.speed(20.0)),
            "2.0x faster"
        );
        assert_eq!(
            faster(Unit::OpsPerSec.speed(10.0) / Unit::OpsPerSec.speed(20.0)),
            "2.0x slower"
        );
    }
}
