//! `multiproc bench`'s table: every scenario beside its OS baseline and
//! Python, by layer, and the headline ratio.

use std::fmt::Write as _;

use super::scenarios::Scenario;
use super::{Layer, Measurement};

pub(super) fn print_table(results: &[(&Scenario, Measurement)], python: bool) {
    let header = [
        "scenario",
        "multiproc",
        "OS baseline",
        "of OS speed",
        "python",
        "vs python",
    ];
    let mut rows: Vec<(Layer, [String; 6])> = Vec::new();
    for (s, m) in results {
        let speed = s.unit.speed(m.multiproc);
        let baseline = m.baselines.first().map_or("n/a".into(), |&(name, v)| {
            format!("{} ({name})", s.unit.format(v))
        });
        let of_os = m.baselines.first().map_or("n/a".into(), |&(_, v)| {
            format!("{:.0}%", 100.0 * speed / s.unit.speed(v))
        });
        let py = m.python.map_or("n/a".into(), |v| s.unit.format(v));
        let vs_py = m.python.map_or("n/a".into(), |v| {
            format!("{:.1}x faster", speed / s.unit.speed(v))
        });
        rows.push((
            s.layer,
            [
                s.name.into(),
                s.unit.format(m.multiproc),
                baseline,
                of_os,
                py,
                vs_py,
            ],
        ));
    }
    let mut widths = header.map(str::len);
    for (_, r) in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (c, w) in cells.iter().zip(widths) {
            let _ = write!(out, "{c:<w$}  ");
        }
        println!("{}", out.trim_end());
    };
    println!();
    line(&header.map(String::from));
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
    if !python {
        println!("(python3 with multiprocessing not found: Python columns are n/a)");
    }
    println!(
        "\"of OS speed\": multiproc's speed as a share of the raw OS primitive's, measured \
         alternately in this run (100% = no overhead)."
    );
}

/// The classic advice with numbers: how many shared-layer updates one
/// managed-layer update costs.
fn print_headline(results: &[(&Scenario, Measurement)]) {
    let find = |name: &str| results.iter().find(|(s, _)| s.name == name);
    match (find("manager_dict_set_1client"), find("lock_uncontended")) {
        (Some((ms, m)), Some((ls, l))) => {
            let managed_ns = 1e9 / ms.unit.speed(m.multiproc);
            let shared_ns = 1e9 / ls.unit.speed(l.multiproc);
            println!(
                "headline: a managed dict set costs {:.1} us, a shared locked update {:.1} ns: {:.0}x. \
                 Value/Array are fast; a Manager is flexible.",
                managed_ns / 1e3,
                shared_ns,
                managed_ns / shared_ns
            );
        }
        _ => println!("headline: run manager_dict_set_1client and lock_uncontended for the managed/shared ratio"),
    }
}
