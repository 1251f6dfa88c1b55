//! `multiproc bench --plot FILE`: a bar chart of every scenario's cost per
//! operation, multiproc beside the OS baseline and Python.

use multiproc_cli::baseline::PAYLOAD_LEN;

use super::scenarios::Scenario;
use super::{Measurement, Unit};

/// Nanoseconds per operation, whatever the unit; for the payload rows
/// (bytes per second), per 1 MiB message, their operation.
fn ns_per_op(unit: Unit, v: f64) -> f64 {
    match unit {
        Unit::BytesPerSec => 1e9 * PAYLOAD_LEN as f64 / v,
        _ => 1e9 / unit.speed(v),
    }
}

/// A row's label: its name, and what its operation is when that is not
/// plain from the name.
fn label(s: &Scenario) -> String {
    match s.unit {
        Unit::BytesPerSec => format!("{} (per MiB)", s.name),
        _ => s.name.to_string(),
    }
}

/// A horizontal bar chart, one group of bars per scenario, on a log scale of
/// nanoseconds per operation (shorter is faster).
pub(super) fn plot_svg(results: &[(&Scenario, Measurement)]) -> String {
    const LEFT: f64 = 230.0;
    const WIDTH: f64 = 620.0;
    const ROW: f64 = 50.0;
    const TOP: f64 = 50.0;
    let series = |m: &Measurement| -> [(Option<f64>, &'static str, &'static str); 4] {
        [
            (Some(m.multiproc), "multiproc", "#2b6cb0"),
            (m.baselines.first().map(|b| b.1), "OS baseline", "#718096"),
            (
                m.python.map(|p| p.value),
                "Python multiprocessing",
                "#dd6b20",
            ),
            (
                m.python_client_our_server.map(|p| p.value),
                "Python client, multiproc server",
                "#38a169",
            ),
        ]
    };
    let costs: Vec<f64> = results
        .iter()
        .flat_map(|(s, m)| {
            series(m)
                .into_iter()
                .filter_map(|(v, ..)| v.map(|v| ns_per_op(s.unit, v)))
        })
        .filter(|c| c.is_finite() && *c > 0.0)
        .collect();
    let lo = costs
        .iter()
        .copied()
        .fold(f64::MAX, f64::min)
        .log10()
        .floor();
    let hi = costs
        .iter()
        .copied()
        .fold(1.0, f64::max)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let x = |ns: f64| LEFT + (ns.log10() - lo) / (hi - lo) * WIDTH;
    let height = TOP + ROW * results.len() as f64 + 60.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"15\">multiproc bench: cost per operation (log scale, shorter is faster)</text>\n",
        w = LEFT + WIDTH + 30.0
    );
    for decade in lo as i32..=hi as i32 {
        let px = x(10f64.powi(decade));
        let label = match decade {
            d if d < 3 => format!("{} ns", 10f64.powi(d)),
            d if d < 6 => format!("{} us", 10f64.powi(d - 3)),
            d if d < 9 => format!("{} ms", 10f64.powi(d - 6)),
            d => format!("{} s", 10f64.powi(d - 9)),
        };
        svg += &format!(
            "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{y2:.1}\" stroke=\"#e2e8f0\"/>\n\
             <text x=\"{px:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\" fill=\"#4a5568\">{label}</text>\n",
            y2 = height - 50.0,
            ty = height - 35.0
        );
    }
    for (row, (s, m)) in results.iter().enumerate() {
        let y = TOP + ROW * row as f64;
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LEFT - 8.0,
            y + 28.0,
            label(s)
        );
        for (i, (v, _, color)) in series(m).into_iter().enumerate() {
            let Some(v) = v else { continue };
            let ns = ns_per_op(s.unit, v);
            if !ns.is_finite() || ns <= 0.0 {
                continue;
            }
            svg += &format!(
                "<rect x=\"{LEFT}\" y=\"{:.1}\" width=\"{:.1}\" height=\"10\" fill=\"{color}\"><title>{}</title></rect>\n",
                y + 4.0 + 11.0 * i as f64,
                (x(ns) - LEFT).max(1.0),
                s.unit.format(v)
            );
        }
    }
    for (i, (_, name, color)) in series(&results[0].1).into_iter().enumerate() {
        let lx = 10.0 + 210.0 * i as f64;
        svg += &format!(
            "<rect x=\"{lx}\" y=\"{ly:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\n\
             <text x=\"{tx}\" y=\"{ty:.1}\">{name}</text>\n",
            ly = height - 22.0,
            tx = lx + 18.0,
            ty = height - 12.0
        );
    }
    svg + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_per_operation_of_each_unit() {
        assert_eq!(ns_per_op(Unit::Ns, 9.5), 9.5);
        assert_eq!(ns_per_op(Unit::Us, 2.0), 2_000.0);
        assert_eq!(ns_per_op(Unit::Ms, 0.5), 500_000.0);
        assert_eq!(ns_per_op(Unit::OpsPerSec, 1e6), 1_000.0);
        // A 1 MiB message at 1 GiB/s takes 1/1024 s, not 1 ns per byte.
        let gib = (1u64 << 30) as f64;
        assert_eq!(ns_per_op(Unit::BytesPerSec, gib), 1e9 / 1024.0);
    }
}
