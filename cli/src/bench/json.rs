//! `multiproc bench --json`: one JSON object per scenario and line.

use anyhow::Result;
use serde::Serialize;

use super::python::PythonFigure;
use super::scenarios::Scenario;
use super::Measurement;

/// One line of `--json` output. Figures that are not finite are `null`.
#[derive(Serialize)]
struct Line<'a> {
    scenario: &'a str,
    unit: &'a str,
    multiproc: Option<f64>,
    /// The first (main) OS baseline.
    baseline: Option<Baseline<'a>>,
    /// The other baselines and peer crates, as the table's "also" lines
    /// (added after the fields above; empty if there are none).
    also: Vec<Baseline<'a>>,
    /// Python's `multiprocessing` (managed scenarios: its client and server).
    python: Option<f64>,
    /// Managed scenarios: the server's CPU time per operation in
    /// microseconds, Python's client against Python's server.
    python_server_cpu_us: Option<f64>,
    /// Managed scenarios: Python's client, the same work, against
    /// multiproc's server.
    python_client_multiproc_server: Option<f64>,
    /// Managed scenarios: multiproc's server's CPU time per operation in
    /// microseconds with Python's client.
    python_client_multiproc_server_cpu_us: Option<f64>,
    /// Managed scenarios but the batched ones: a raw socket echo's CPU
    /// time per call, answering the same Python client's calls.
    python_client_raw_echo_cpu_us: Option<f64>,
    /// The same, answered by a raw socket echo of one thread for every
    /// connection, woken by epoll (an event loop, as multiproc's server).
    python_client_loop_echo_cpu_us: Option<f64>,
    /// The user and system parts of the four CPU times above (as the
    /// kernel splits them, sampling at its ticks), in the same order.
    python_server_user_us: Option<f64>,
    python_server_system_us: Option<f64>,
    python_client_multiproc_server_user_us: Option<f64>,
    python_client_multiproc_server_system_us: Option<f64>,
    python_client_raw_echo_user_us: Option<f64>,
    python_client_raw_echo_system_us: Option<f64>,
    python_client_loop_echo_user_us: Option<f64>,
    python_client_loop_echo_system_us: Option<f64>,
}

#[derive(Serialize)]
struct Baseline<'a> {
    name: &'a str,
    value: Option<f64>,
}

/// A figure as JSON can hold it: JSON has no NaN or infinity.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// The user and system parts of a figure's server CPU time.
fn user_system(f: Option<PythonFigure>) -> (Option<f64>, Option<f64>) {
    match f.and_then(|f| f.server_user_system_us) {
        Some((user, system)) => (finite(user), finite(system)),
        None => (None, None),
    }
}

/// The JSON object for one scenario's figures, on one line.
pub(super) fn json_line(s: &Scenario, m: &Measurement) -> Result<String> {
    let python = user_system(m.python);
    let ours = user_system(m.python_client_our_server);
    let echo = user_system(m.python_client_raw_echo);
    let loop_echo = user_system(m.python_client_loop_echo);
    let line = Line {
        scenario: s.name,
        unit: s.unit.name(),
        multiproc: finite(m.multiproc),
        baseline: m.baselines.first().map(|&(name, v)| Baseline {
            name,
            value: finite(v),
        }),
        also: m
            .baselines
            .iter()
            .skip(1)
            .map(|&(name, v)| Baseline {
                name,
                value: finite(v),
            })
            .collect(),
        python: m.python.and_then(|p| finite(p.value)),
        python_server_cpu_us: m.python.and_then(|p| p.server_cpu_us.and_then(finite)),
        python_client_multiproc_server: m.python_client_our_server.and_then(|p| finite(p.value)),
        python_client_multiproc_server_cpu_us: m
            .python_client_our_server
            .and_then(|p| p.server_cpu_us.and_then(finite)),
        python_client_raw_echo_cpu_us: m
            .python_client_raw_echo
            .and_then(|p| p.server_cpu_us.and_then(finite)),
        python_client_loop_echo_cpu_us: m
            .python_client_loop_echo
            .and_then(|p| p.server_cpu_us.and_then(finite)),
        python_server_user_us: python.0,
        python_server_system_us: python.1,
        python_client_multiproc_server_user_us: ours.0,
        python_client_multiproc_server_system_us: ours.1,
        python_client_raw_echo_user_us: echo.0,
        python_client_raw_echo_system_us: echo.1,
        python_client_loop_echo_user_us: loop_echo.0,
        python_client_loop_echo_system_us: loop_echo.1,
    };
    Ok(serde_json::to_string(&line)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::scenarios::SCENARIOS;

    fn scenario(name: &str) -> &'static Scenario {
        SCENARIOS.iter().find(|s| s.name == name).expect("scenario")
    }

    #[test]
    fn managed_line_has_both_python_servers_and_the_echoes() {
        let m = Measurement {
            multiproc: 11900.0,
            baselines: vec![("raw Unix socket round trips", 12600.0)],
            python: Some(PythonFigure {
                value: 7600.0,
                server_cpu_us: Some(80.0),
                server_user_system_us: Some((30.0, 50.0)),
            }),
            python_client_our_server: Some(PythonFigure {
                value: 9000.0,
                server_cpu_us: Some(30.0),
                server_user_system_us: Some((10.0, 20.0)),
            }),
            python_client_raw_echo: Some(PythonFigure {
                value: 20000.0,
                server_cpu_us: Some(25.0),
                server_user_system_us: None,
            }),
            python_client_loop_echo: Some(PythonFigure {
                value: 18000.0,
                server_cpu_us: Some(27.0),
                server_user_system_us: Some((1.0, 26.0)),
            }),
        };
        let line = json_line(scenario("manager_dict_set_1client"), &m).expect("json");
        let v: serde_json::Value = serde_json::from_str(&line).expect("parses");
        assert_eq!(v["python"], 7600.0);
        assert_eq!(v["python_server_cpu_us"], 80.0);
        assert_eq!(v["python_client_multiproc_server"], 9000.0);
        assert_eq!(v["python_client_multiproc_server_cpu_us"], 30.0);
        assert_eq!(v["python_client_raw_echo_cpu_us"], 25.0);
        assert_eq!(v["python_server_user_us"], 30.0);
        assert_eq!(v["python_server_system_us"], 50.0);
        assert_eq!(v["python_client_multiproc_server_user_us"], 10.0);
        assert_eq!(v["python_client_multiproc_server_system_us"], 20.0);
        assert!(v["python_client_raw_echo_user_us"].is_null());
        assert_eq!(v["python_client_loop_echo_cpu_us"], 27.0);
        assert_eq!(v["python_client_loop_echo_system_us"], 26.0);
        assert_eq!(v["baseline"]["value"], 12600.0);
        assert_eq!(v["also"], serde_json::json!([]));
    }

    #[test]
    fn second_baselines_are_listed_after_the_first() {
        let m = Measurement {
            multiproc: 0.4,
            baselines: vec![("futex word, same spin", 0.6), ("peer", f64::NAN)],
            python: None,
            python_client_our_server: None,
            python_client_raw_echo: None,
            python_client_loop_echo: None,
        };
        let line = json_line(scenario("event_pingpong"), &m).expect("json");
        let v: serde_json::Value = serde_json::from_str(&line).expect("parses");
        assert_eq!(v["baseline"]["name"], "futex word, same spin");
        assert_eq!(v["also"][0]["name"], "peer");
        assert!(v["also"][0]["value"].is_null());
    }

    #[test]
    fn unmanaged_line_has_nulls_and_no_nan() {
        let m = Measurement {
            multiproc: f64::NAN,
            baselines: Vec::new(),
            python: Some(PythonFigure {
                value: 156.2,
                server_cpu_us: None,
                server_user_system_us: None,
            }),
            python_client_our_server: None,
            python_client_raw_echo: None,
            python_client_loop_echo: None,
        };
        let line = json_line(scenario("lock_uncontended"), &m).expect("json");
        let v: serde_json::Value = serde_json::from_str(&line).expect("parses");
        assert!(v["multiproc"].is_null());
        assert_eq!(v["python"], 156.2);
        assert!(v["python_server_cpu_us"].is_null());
        assert!(v["python_client_multiproc_server"].is_null());
        assert!(v["python_client_raw_echo_cpu_us"].is_null());
        assert!(v["python_client_loop_echo_cpu_us"].is_null());
    }
}
