//! `multiproc bench --redis URL`: the Redis rows run only with a URL, give
//! figures beside the raw baseline, and leave no keys behind.

// The library's test helpers, shared rather than copied.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::redis::redis_url;
use common::watchdog;

#[test]
fn the_redis_rows_need_a_url_and_are_not_run_without_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(["bench", "--quick", "--only", "redis_dict_set_1client"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--redis URL"), "{stderr}");
}

#[test]
fn the_redis_rows_measure_beside_raw_round_trips_and_clean_up() {
    let Some(url) = redis_url("the_redis_rows_measure_beside_raw_round_trips_and_clean_up") else {
        return;
    };
    watchdog("bench --redis", Duration::from_secs(300), || {
        let child = Command::new(env!("CARGO_BIN_EXE_multiproc"))
            .args(["bench", "--quick", "--json", "--redis", &url, "--only"])
            .arg("redis_dict_set_1client,redis_dict_get_batched")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        for line in &lines {
            assert!(line["multiproc"].as_f64().unwrap() > 0.0, "{line}");
            let baseline = &line["baseline"];
            assert!(baseline["value"].as_f64().unwrap() > 0.0, "{line}");
            assert!(
                baseline["name"].as_str().unwrap().starts_with("raw "),
                "{line}"
            );
        }
        // The 1-client set row also shows raw PINGs.
        assert!(lines[0]["also"][0]["name"]
            .as_str()
            .unwrap()
            .contains("PING"));
        // Nothing of that run is left on the server.
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let left: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*multiproc-bench-*-{pid}-*"))
            .query(&mut conn)
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
    });
}
