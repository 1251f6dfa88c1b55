//! `multiproc bench --json`: one JSON object per scenario and line.

use anyhow::Result;
use serde::Serialize;

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
    python: Option<f64>,
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

/// The JSON object for one scenario's figures, on one line.
pub(super) fn json_line(s: &Scenario, m: &Measurement) -> Result<String> {
    let line = Line {
        scenario: s.name,
        unit: s.unit.name(),
        multiproc: finite(m.multiproc),
        baseline: m.baselines.first().map(|&(name, v)| Baseline {
            name,
            value: finite(v),
        }),
        python: m.python.and_then(finite),
    };
    Ok(serde_json::to_string(&line)?)
}
