//! The classic Manager example: a child writes into a managed dict and
//! reverses a managed list; the parent prints both. Then nested proxies: a
//! list stored in a dict, which a child reads back and appends to.
//!
//! Run: `cargo run --example manager_dict_list`

use multiproc::manager::{ListProxy, Manager};

fn main() -> multiproc::Result<()> {
    let manager = Manager::start()?;
    let d = manager.dict::<String, f64>()?;
    let l = manager.list::<i32>()?;
    l.extend(0..10)?;

    // Each child runs in a scope: it borrows the proxies, and is joined
    // when the scope ends.
    multiproc::scope(|s| {
        s.fallible(|| -> multiproc::Result<()> {
            d.set("1".into(), 1.0)?;
            d.set("2".into(), 2.0)?;
            d.set("0.25".into(), 0.25)?;
            l.reverse()
        })
        .start()
    })?;

    println!("{:?}", d.items()?);
    println!("{:?}", l.to_vec()?);

    // A dict of lists: each value is a proxy of a list of the same manager.
    let groups = manager.dict::<String, ListProxy<i32>>()?;
    groups.set("evens".into(), manager.list()?)?;
    multiproc::scope(|s| {
        s.fallible(|| -> multiproc::Result<()> {
            let evens = groups.get(&"evens".into())?.expect("stored above");
            evens.extend((0..10).filter(|n| n % 2 == 0))
        })
        .start()
    })?;
    let evens = groups.get(&"evens".into())?.expect("stored above");
    println!("evens: {:?}", evens.to_vec()?);
    Ok(())
}
