//! Dict and list operations on a real manager, checked against a local
//! HashMap and Vec doing the same: every result and the final contents agree.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use multiproc::Manager;

#[derive(Arbitrary, Debug)]
enum Step {
    Set(u8, i16),
    Get(u8),
    Remove(u8),
    Increment(u8, i16),
    Contains(u8),
    Append(i16),
    Insert(i8, i16),
    Pop(i8),
    SetAt(i8, i16),
    Sort,
    Reverse,
}

fn manager() -> &'static Manager {
    static M: OnceLock<Manager> = OnceLock::new();
    M.get_or_init(|| Manager::start().expect("start the manager"))
}

/// Python's index rule: negative from the end; `None` if out of range.
fn index(i: i8, len: usize) -> Option<usize> {
    let i = i as i64;
    let at = if i < 0 { i + len as i64 } else { i };
    (0..len as i64).contains(&at).then_some(at as usize)
}

fuzz_target!(|steps: Vec<Step>| {
    let m = manager();
    let d = m.dict::<u8, i64>().unwrap();
    let l = m.list::<i64>().unwrap();
    let mut model_d: HashMap<u8, i64> = HashMap::new();
    let mut model_l: Vec<i64> = Vec::new();
    for step in steps.into_iter().take(64) {
        match step {
            Step::Set(k, v) => {
                d.set(k, v.into()).unwrap();
                model_d.insert(k, v.into());
            }
            Step::Get(k) => assert_eq!(d.get(&k).unwrap(), model_d.get(&k).copied()),
            Step::Remove(k) => assert_eq!(d.remove(&k).unwrap(), model_d.remove(&k)),
            Step::Increment(k, by) => {
                let want = model_d.get(&k).copied().unwrap_or(0) + i64::from(by);
                assert_eq!(d.increment(&k, by.into()).unwrap(), want);
                model_d.insert(k, want);
            }
            Step::Contains(k) => assert_eq!(d.contains(&k).unwrap(), model_d.contains_key(&k)),
            Step::Append(v) => {
                l.append(v.into()).unwrap();
                model_l.push(v.into());
            }
            Step::Insert(i, v) => {
                l.insert(i.into(), v.into()).unwrap();
                let len = model_l.len() as i64;
                let at = if (i as i64) < 0 {
                    (i as i64 + len).max(0)
                } else {
                    (i as i64).min(len)
                };
                model_l.insert(at as usize, v.into());
            }
            Step::Pop(i) => match index(i, model_l.len()) {
                Some(at) => assert_eq!(l.pop(i.into()).unwrap(), model_l.remove(at)),
                None => assert!(l.pop(i.into()).is_err()),
            },
            Step::SetAt(i, v) => match index(i, model_l.len()) {
                Some(at) => {
                    l.set(i.into(), v.into()).unwrap();
                    model_l[at] = v.into();
                }
                None => assert!(l.set(i.into(), v.into()).is_err()),
            },
            Step::Sort => {
                l.sort().unwrap();
                model_l.sort();
            }
            Step::Reverse => {
                l.reverse().unwrap();
                model_l.reverse();
            }
        }
    }
    assert_eq!(d.to_hash_map().unwrap(), model_d);
    assert_eq!(l.to_vec().unwrap(), model_l);
});
