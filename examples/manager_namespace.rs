//! A managed `Namespace` (Python's `Manager().Namespace()`): the parent
//! sets the run's settings as attributes, each child reads them and sets an
//! attribute of its own with its result, and the parent reads those back.
//! An attribute never set is Python's `AttributeError`.
//!
//! Run: `cargo run --example manager_namespace`

use multiproc::manager::Manager;
use multiproc::Error;

fn main() -> multiproc::Result<()> {
    let manager = Manager::start()?;
    let ns = manager.namespace()?;
    ns.set("scale", &2.5f64)?;
    ns.set("label", "area")?;

    multiproc::scope(|s| {
        for side in 1..=3u32 {
            let ns = &ns;
            s.fallible(move || -> multiproc::Result<()> {
                let scale: f64 = ns.get("scale")?;
                let label: String = ns.get("label")?;
                let value = scale * f64::from(side * side);
                ns.set(&format!("{label}_{side}"), &value)
            })
            .start()?;
        }
        Ok::<_, Error>(())
    })?;

    for side in 1..=3 {
        let area: f64 = ns.get(&format!("area_{side}"))?;
        println!("area_{side} = {area}");
    }
    match ns.get::<f64>("area_4") {
        Err(Error::Remote { kind, message }) => println!("area_4: {kind}: {message}"),
        other => panic!("expected an AttributeError, got {other:?}"),
    }
    Ok(())
}
