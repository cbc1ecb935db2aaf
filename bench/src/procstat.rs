//! CPU and memory figures from /proc and getrusage: the server's, Postgres's, the
//! machine's and the load client's own.

use std::collections::HashMap;
use std::time::Instant;

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// user+system CPU seconds of a process, from /proc/<pid>/stat.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu_seconds(&stat)
}

fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name may contain spaces; fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of stat(5), 0-based 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// CPU seconds of every process named `postgres` (the server and all its backends; on a
/// shared machine that includes other users' backends), by pid.
pub fn postgres_cpu_seconds() -> HashMap<u32, f64> {
    let mut all = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && stat.contains("(postgres)")
        {
            all.insert(pid, stat_cpu_seconds(&stat).unwrap_or(0.0));
        }
    }
    all
}

/// CPU used by `postgres` processes between two snapshots: backends that started in
/// between count whole, backends that ended in between are lost (never negative).
fn postgres_delta(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, cpu)| (cpu - before.get(pid).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
pub fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return (0, 0);
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().sum();
    // idle + iowait are not busy.
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The bench process's own user+system CPU seconds (getrusage).
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A `Vm*` line of /proc/<pid>/status, in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resets the peak RSS (VmHWM) of a process to its current RSS (clear_refs 5).
pub fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// The current soft limit of open files.
pub fn nofile_limit() -> u64 {
    // SAFETY: getrlimit writes into the zeroed struct we pass.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1_024;
        }
        limit.rlim_cur
    }
}

/// Raises the open-files limit to at least `wanted` (soft and hard, which needs
/// CAP_SYS_RESOURCE when above the hard limit), else the soft limit to the hard one; the
/// servers the harness spawns inherit it. Returns the new soft limit.
pub fn raise_nofile_limit(wanted: u64) -> u64 {
    // SAFETY: plain syscalls on structs we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur >= wanted {
            return limit.rlim_cur;
        }
        if wanted > limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: wanted,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return wanted;
            }
        }
        let soft = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return soft.rlim_cur;
        }
        limit.rlim_cur
    }
}

/// user+system CPU seconds of all `pids` together; `None` for no pid.
fn processes_cpu_seconds(pids: &[u32]) -> Option<f64> {
    (!pids.is_empty()).then(|| pids.iter().filter_map(|&p| process_cpu_seconds(p)).sum())
}

/// Current RSS of all `pids` together, in KiB.
pub fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| status_kib(p, "VmRSS:")).sum()
}

/// CPU figures over a measurement window. Several server pids (instances side by side)
/// are added up.
pub struct Window {
    started: Instant,
    server_pids: Vec<u32>,
    server_cpu: f64,
    postgres_cpu: HashMap<u32, f64>,
    client_cpu: f64,
    machine: (u64, u64),
}

#[derive(Debug, Clone, Default)]
pub struct WindowFigures {
    pub seconds: f64,
    /// Share of one core, in percent.
    pub server_cpu_pct: Option<f64>,
    /// CPU seconds the server(s) used in the window.
    pub server_cpu_seconds: Option<f64>,
    pub postgres_cpu_pct: f64,
    pub client_cpu_pct: f64,
    /// Share of the whole machine that was busy, in percent.
    pub machine_busy_pct: f64,
    pub server_peak_rss_kib: Option<u64>,
}

impl Window {
    pub fn begin(server_pids: &[u32]) -> Self {
        for &pid in server_pids {
            reset_peak_rss(pid);
        }
        Self {
            started: Instant::now(),
            server_pids: server_pids.to_vec(),
            server_cpu: processes_cpu_seconds(server_pids).unwrap_or(0.0),
            postgres_cpu: postgres_cpu_seconds(),
            client_cpu: self_cpu_seconds(),
            machine: machine_jiffies(),
        }
    }

    pub fn end(self) -> WindowFigures {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let (busy, total) = machine_jiffies();
        let (busy0, total0) = self.machine;
        let server_cpu_seconds =
            processes_cpu_seconds(&self.server_pids).map(|c| (c - self.server_cpu).max(0.0));
        WindowFigures {
            seconds,
            server_cpu_pct: server_cpu_seconds.map(|c| c / seconds * 100.0),
            server_cpu_seconds,
            postgres_cpu_pct: postgres_delta(&self.postgres_cpu, &postgres_cpu_seconds()) / seconds
                * 100.0,
            client_cpu_pct: (self_cpu_seconds() - self.client_cpu) / seconds * 100.0,
            machine_busy_pct: if total > total0 {
                (busy - busy0) as f64 / (total - total0) as f64 * 100.0
            } else {
                0.0
            },
            server_peak_rss_kib: (!self.server_pids.is_empty()).then(|| {
                self.server_pids
                    .iter()
                    .filter_map(|&pid| status_kib(pid, "VmHWM:"))
                    .sum()
            }),
        }
    }
}
