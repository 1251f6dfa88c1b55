//! A re-entrant lock across processes: `transfer` holds the `RLock` and
//! calls `withdraw` and `deposit`, which take it again (a plain `Lock` would
//! deadlock there). Four processes move money between two accounts while an
//! auditor checks, under the same lock, that the total never changes.
//!
//! Run: `cargo run --example rlock`

use multiproc::{Process, RLock, RawValue};

const TOTAL: i64 = 2000;
const TRANSFERS: i64 = 250;

/// Two balances, read and written only under `lock`.
#[derive(Clone)]
struct Bank {
    lock: RLock,
    accounts: [RawValue<i64>; 2],
}

impl Bank {
    fn withdraw(&self, from: usize, amount: i64) {
        let _g = self.lock.lock().expect("lock");
        let a = &self.accounts[from];
        a.set(a.get() - amount);
    }

    fn deposit(&self, to: usize, amount: i64) {
        let _g = self.lock.lock().expect("lock");
        let a = &self.accounts[to];
        a.set(a.get() + amount);
    }

    /// Both steps as one: no one sees the money in neither account.
    fn transfer(&self, from: usize, amount: i64) {
        let _g = self.lock.lock().expect("lock");
        self.withdraw(from, amount); // takes the lock again: fine, it is ours
        self.deposit(1 - from, amount);
    }

    fn total(&self) -> i64 {
        let _g = self.lock.lock().expect("lock");
        self.accounts[0].get() + self.accounts[1].get()
    }
}

fn main() -> multiproc::Result<()> {
    let bank = Bank {
        lock: RLock::new()?,
        accounts: [RawValue::new(TOTAL / 2)?, RawValue::new(TOTAL / 2)?],
    };
    let mut clerks: Vec<Process> = (0..4)
        .map(|i| {
            let bank = bank.clone();
            Process::new(move || {
                for _ in 0..TRANSFERS {
                    bank.transfer(i % 2, i as i64 + 1);
                }
            })
        })
        .collect();
    let b = bank.clone();
    let mut auditor = Process::new(move || {
        for _ in 0..1000 {
            assert_eq!(b.total(), TOTAL, "money appeared or vanished");
        }
        println!("auditor: the total was {TOTAL} at each of 1000 checks");
    });
    auditor.start()?;
    for c in &mut clerks {
        c.start()?;
    }
    for p in clerks.iter().chain([&auditor]) {
        p.join()?;
    }
    assert_eq!(auditor.exitcode(), Some(0));
    let (a, b) = (bank.accounts[0].get(), bank.accounts[1].get());
    println!("accounts: {a} and {b}");
    println!("total still {} after {} transfers", a + b, 4 * TRANSFERS);
    Ok(())
}
