//! CPU time of processes, from `/proc`: the server's, the simulated devices', and
//! PostgreSQL's (the postmaster and every child), for benchmarks that split the machine's
//! CPU between the parts they run.

use std::time::Duration;

/// CPU time a process has used: the run time of each of its threads
/// (`se.sum_exec_runtime` in `/proc/PID/task/TID/sched`, in milliseconds with nanosecond
/// digits; `stat`'s clock ticks are too coarse for short work spread over many
/// PostgreSQL backends).
pub fn cpu_time(pid: u32) -> Duration {
    let mut total = 0.0f64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("sched")).unwrap_or_default();
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("se.sum_exec_runtime"))
            .and_then(|v| v.trim().trim_start_matches(':').trim().parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    Duration::from_secs_f64(total / 1000.0)
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces).
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect()
}

/// The postmaster and its children (the backends, the WAL writer, the checkpointer).
pub fn postgres_cpu(postmaster: u32) -> Duration {
    let mut total = cpu_time(postmaster);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The parent is field 4: 1 after the name.
        if stat_fields(&stat)
            .get(1)
            .and_then(|p| p.parse::<u32>().ok())
            == Some(postmaster)
        {
            total += cpu_time(pid);
        }
    }
    total
}

/// CPU time a process has used, from `/proc/PID/stat` (user + system, clock ticks):
/// coarser than [`cpu_time`], but it keeps the time of threads that have ended (a
/// Tokio runtime's blocking threads come and go), so it never runs backwards.
pub fn process_cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields = stat_fields(&stat);
    // utime and stime are fields 14 and 15: 12 and 13 after the name.
    let ticks: u64 = [12, 13]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / per_second)
}
