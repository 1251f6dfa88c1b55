//! What `/proc` says about another process or thread: how a test sees the
//! state of a party that cannot tell it (blocked, stopped, a zombie, gone).

/// The fields of a `stat` file after the command name (which may hold
/// spaces): `[0]` the state, `[1]` the parent's pid, `[11]` and `[12]` the
/// user and system CPU time in clock ticks. `None` if there is no such file.
fn stat_fields(path: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(path).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    Some(after.split(' ').map(str::to_owned).collect())
}

/// The state letter of process `pid` (`R`, `S`, `T`, `Z`, …), if it exists.
pub fn state(pid: u32) -> Option<char> {
    stat_fields(&format!("/proc/{pid}/stat"))?[0].chars().next()
}

/// Whether a process `pid` exists, zombie or not.
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// Whether `pid` is gone, or a zombie (which its parent or init reaps).
pub fn gone(pid: u32) -> bool {
    !alive(pid)
}

/// Whether process `pid` is stopped (state `T`).
pub fn stopped(pid: u32) -> bool {
    state(pid) == Some('T')
}

/// The parent pid of `pid`.
pub fn ppid(pid: u32) -> Option<u32> {
    stat_fields(&format!("/proc/{pid}/stat"))?[1].parse().ok()
}

/// The CPU time (user + system, in clock ticks) process `pid` has used.
pub fn cpu_ticks(pid: u32) -> u64 {
    let fields = stat_fields(&format!("/proc/{pid}/stat")).expect("a stat file");
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The pids of this process's zombie children (any thread's).
pub fn zombie_children() -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|&pid| state(pid) == Some('Z'))
        .collect()
}

/// The threads of process `pid` whose name (as the kernel keeps it: the
/// first 15 bytes) is `name`.
pub fn threads_named(pid: u32, name: &str) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

/// One line per thread of process `pid`: its id, name, state and wait
/// channel (what a hung test prints before it aborts).
pub fn threads_report(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return String::new();
    };
    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(path).map_or_else(|_| "?".into(), |s| s.trim().to_owned())
    };
    tasks
        .flatten()
        .map(|t| {
            let state = stat_fields(&t.path().join("stat").to_string_lossy())
                .map_or_else(|| "?".into(), |f| f[0].clone());
            format!(
                "  thread {} {:?}: state {state}, wchan {}\n",
                t.file_name().to_string_lossy(),
                read(t.path().join("comm")),
                read(t.path().join("wchan")),
            )
        })
        .collect()
}

/// The calling thread's id, for [`thread_blocked_in_futex`] in another
/// thread or process.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Whether thread `tid` of process `pid` is asleep in the kernel in a futex
/// wait: its state is `S` and its wait channel (or, where the kernel hides
/// wait channels, its current system call) is a futex wait.
pub fn thread_blocked_in_futex(pid: u32, tid: u32) -> bool {
    let task = format!("/proc/{pid}/task/{tid}");
    let sleeping = stat_fields(&format!("{task}/stat")).is_some_and(|f| f[0] == "S");
    let in_futex = || {
        std::fs::read_to_string(format!("{task}/wchan")).is_ok_and(|w| w.contains("futex"))
            || std::fs::read_to_string(format!("{task}/syscall")).is_ok_and(|s| {
                let nr = s.split(' ').next().and_then(|n| n.parse::<i64>().ok());
                nr == Some(libc::SYS_futex) || nr == Some(libc::SYS_futex_waitv)
            })
    };
    sleeping && in_futex()
}

/// Whether process `pid` (its first thread) is asleep in a futex wait.
pub fn blocked_in_futex(pid: u32) -> bool {
    thread_blocked_in_futex(pid, pid)
}
