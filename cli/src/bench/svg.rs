//! `multiproc bench --plot FILE`: a bar chart of every scenario's cost per
//! operation, multiproc beside the OS baseline and Python.

use super::scenarios::Scenario;
use super::{Measurement, Unit};

/// Nanoseconds per operation, whatever the unit.
fn ns_per_op(unit: Unit, v: f64) -> f64 {
    1e9 / unit.speed(v)
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
            s.name
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
