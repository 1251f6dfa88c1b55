//! What each hostile-client attack of issue 12 costs a real manager server:
//! the server's CPU time for the attack (the longest it keeps others
//! waiting) and its peak memory. A measurement, run by hand:
//!
//! ```sh
//! cargo test --release --test manager_attacks -- --ignored --nocapture
//! ```

mod common;

use std::time::{Duration, Instant};

use common::watchdog;
use multiproc::conn::{connect, Connection};
use multiproc::manager::Manager;

/// The server's CPU time so far, and its peak resident memory (VmHWM), in kB.
fn usage(pid: u32) -> (Duration, u64) {
    let ticks = common::procfs::cpu_ticks(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap();
    (Duration::from_millis(ticks * 10), hwm)
}

/// A varint, as postcard encodes lengths and ids.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Sends one raw request and waits for its answer: the answer's first
/// byte (0 a value, 1 a new object, 3 an error) and the round trip's time.
fn send(conn: &mut Connection, frame: &[u8]) -> (u8, Vec<u8>, Duration) {
    let t = Instant::now();
    conn.send_bytes(frame).unwrap();
    let answer = conn.recv_bytes().unwrap();
    (answer[0], answer[1..].to_vec(), t.elapsed())
}

/// Sends one attack and prints what it cost the server.
fn report(conn: &mut Connection, pid: u32, what: &str, frame: Vec<u8>) {
    let (cpu, _) = usage(pid);
    let (tag, answer, took) = send(conn, &frame);
    let (after, hwm) = usage(pid);
    let kind = if tag == 3 {
        String::from_utf8_lossy(&answer[1..answer[0] as usize + 1]).into_owned()
    } else {
        "answered".into()
    };
    println!(
        "{what:<48} {kind:<15} round trip {:>7.1} ms, server CPU {:>5} ms, peak RSS {:>5} MB",
        took.as_secs_f64() * 1e3,
        (after - cpu).as_millis(),
        hwm / 1024
    );
}

fn create(conn: &mut Connection, kind: u8) -> Vec<u8> {
    let (tag, id, _) = send(conn, &[0, kind]);
    assert_eq!(tag, 1);
    id
}

fn call(id: &[u8], op: u8) -> Vec<u8> {
    let mut frame = vec![3];
    frame.extend(id);
    frame.push(op);
    frame
}

#[test]
#[ignore = "a measurement, run by hand in release mode"]
fn attack_costs() {
    watchdog("attacks", Duration::from_secs(300), || {
        let m = Manager::start().unwrap();
        let pid = m.server_pid().unwrap();
        let mut conn = connect(m.address(), Some(m.authkey())).unwrap();
        let list = create(&mut conn, 1);
        let dict = create(&mut conn, 0);
        // Issue 12.2: deep nesting.
        let mut deep = call(&list, 17);
        for _ in 0..35_000 {
            deep.extend([6, 1]);
        }
        deep.extend([2, 2]);
        report(
            &mut conn,
            pid,
            "append of a list nested 35,000 deep (70 KB)",
            deep,
        );
        // Issue 12.5: 25,000 int keys that collided under the old hasher,
        // then 25,000 random ones.
        for (name, keys) in [
            ("update of 25,000 keys crafted for the old Fx hash", {
                let h = 2u64.wrapping_mul(0x51_7c_c1_b7_27_22_0a_95).rotate_left(5);
                (0..25_000u64)
                    .map(|m| (h ^ (m << 49)) as i64)
                    .collect::<Vec<_>>()
            }),
            ("update of 25,000 random int keys", {
                let mut x = 0x2545_f491_4f6c_dd1du64;
                (0..25_000)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as i64
                    })
                    .collect()
            }),
        ] {
            let mut frame = call(&dict, 14); // Op::Update
            varint(keys.len() as u64, &mut frame);
            for k in keys {
                frame.push(2); // Value::Int
                varint(((k << 1) ^ (k >> 63)) as u64, &mut frame);
                frame.push(0); // Value::None
            }
            report(&mut conn, pid, name, frame);
            send(&mut conn, &call(&dict, 1)); // clear
        }
        // Issue 12.6: an extend of 16 Mi Nones (a 16 MiB frame).
        let n = (16 << 20) - 16;
        let mut frame = call(&list, 18);
        varint(n as u64, &mut frame);
        frame.resize(frame.len() + n, 0);
        report(&mut conn, pid, "extend of 16 Mi Nones (16 MiB)", frame);
        // ... 40,000 snapshots of a 1000-item list in one batch.
        let mut frame = call(&list, 18);
        varint(1000, &mut frame);
        for i in 0..1000u64 {
            frame.push(2);
            varint(i << 1, &mut frame);
        }
        send(&mut conn, &frame);
        let mut batch = vec![4]; // Request::Batch
        varint(40_000, &mut batch);
        for _ in 0..40_000 {
            batch.extend(&list);
            batch.push(2); // Op::Snapshot
        }
        report(
            &mut conn,
            pid,
            "40,000 snapshots of a 1000-item list (batch)",
            batch,
        );
        // Work: a million-item list scanned many times in one batch.
        let mut frame = call(&list, 18);
        varint(1 << 20, &mut frame);
        frame.resize(frame.len() + 2 * (1 << 20), 2);
        send(&mut conn, &frame);
        for scans in [30, 1000] {
            let mut batch = vec![4];
            varint(scans, &mut batch);
            for _ in 0..scans {
                batch.extend(&list);
                batch.extend([22, 2, 2]); // Op::Count(Value::Int(1))
            }
            report(
                &mut conn,
                pid,
                &format!("{scans} counts over a 1 Mi-item list (batch)"),
                batch,
            );
        }
        let mut batch = vec![4];
        varint(10_000, &mut batch);
        for _ in 0..10_000 {
            batch.extend(&list);
            batch.extend([19, 0, 0]); // Op::Insert(0, None)
        }
        report(
            &mut conn,
            pid,
            "10,000 inserts at the front of it (batch)",
            batch,
        );
        report(
            &mut conn,
            pid,
            "sort of it (ints and a None)",
            call(&list, 24),
        );
    });
}
