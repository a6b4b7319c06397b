//! What the load generator reads from and asks of the operating system:
//! a process's CPU time and memory from `/proc`, CPU affinity (as
//! `taskset -a -p` sets it), the open-files limit, and its own usage.

use anyhow::{Context, bail};
use std::path::PathBuf;

/// Clock ticks per second of `/proc/PID/stat` times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// A process watched through `/proc/PID`.
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u32,
    dir: PathBuf,
    ticks: f64,
}

impl Process {
    /// # Errors
    /// When `/proc/PID` does not exist (no such process, or not Linux).
    pub fn new(pid: u32) -> anyhow::Result<Process> {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let process = Process { pid, dir, ticks: ticks_per_second() };
        process.cpu_seconds().with_context(|| format!("cannot read the CPU time of process {pid}"))?;
        Ok(process)
    }

    /// User + system CPU time of all its threads so far, in seconds.
    ///
    /// # Errors
    /// When the process is gone or its stat line is unreadable.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(self.dir.join("stat"))?;
        cpu_ticks(&stat).map(|ticks| ticks as f64 / self.ticks)
    }

    /// `VmHWM` (peak resident set, for the process's whole life) and
    /// `VmRSS` (now) from `/proc/PID/status`, in bytes.
    ///
    /// # Errors
    /// When the process is gone.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let status = std::fs::read_to_string(self.dir.join("status"))?;
        Ok(Memory { peak_rss_bytes: status_kib(&status, "VmHWM:"), rss_bytes: status_kib(&status, "VmRSS:") })
    }

    /// Pins every thread of the process to `cpu`.
    ///
    /// # Errors
    /// When the CPU does not exist or the kernel refuses.
    pub fn pin(&self, cpu: usize) -> anyhow::Result<usize> {
        pin_threads(&self.dir, cpu)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub peak_rss_bytes: Option<u64>,
    pub rss_bytes: Option<u64>,
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from the last `)`.
fn cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed /proc stat line")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    let field = |n: usize| -> anyhow::Result<u64> {
        fields.get(n - 3).and_then(|f| f.parse().ok()).with_context(|| format!("no field {n} in /proc stat line"))
    };
    Ok(field(14)? + field(15)?)
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// Pins the bench process itself (all its threads, present and, since new
/// threads inherit their creator's mask, future) to `cpu`.
///
/// # Errors
/// When the CPU does not exist or the kernel refuses.
pub fn pin_self(cpu: usize) -> anyhow::Result<usize> {
    pin_threads(&PathBuf::from("/proc/self"), cpu)
}

/// `sched_setaffinity` for every thread in `/proc/PID/task`: the system call
/// acts on one thread only, and a server's worker threads already exist.
fn pin_threads(proc_dir: &std::path::Path, cpu: usize) -> anyhow::Result<usize> {
    let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // SAFETY: sysconf has no preconditions.
    let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(online as libc::c_long) as usize;
    if cpu >= configured.min(libc::CPU_SETSIZE as usize) {
        bail!("CPU {cpu} does not exist (this machine has CPUs 0..{})", configured - 1);
    }
    // SAFETY: an all-zero cpu_set_t is a valid empty set; CPU_SET writes in bounds (checked above).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let tasks = proc_dir.join("task");
    let entries = std::fs::read_dir(&tasks).with_context(|| format!("cannot list {}", tasks.display()))?;
    let mut pinned = 0;
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry.file_name().to_str().and_then(|name| name.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let result = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if result != 0 {
            let error = std::io::Error::last_os_error();
            // A thread that ended since the listing is not an error.
            if error.raw_os_error() == Some(libc::ESRCH) {
                continue;
            }
            bail!("cannot pin thread {tid} to CPU {cpu}: {error}");
        }
        pinned += 1;
    }
    if pinned == 0 {
        bail!("no thread of {} could be pinned", proc_dir.display());
    }
    Ok(pinned)
}

/// The bench's own CPU time (user + system, all threads) and peak RSS.
#[derive(Debug, Clone, Copy)]
pub struct SelfUsage {
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
}

pub fn self_usage() -> SelfUsage {
    // SAFETY: getrusage fills the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    SelfUsage {
        cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        // ru_maxrss is in KiB on Linux.
        peak_rss_bytes: (usage.ru_maxrss.max(0) as u64) * 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 9 0 100 0 0";
        assert_eq!(cpu_ticks(line).unwrap(), 267);
        assert!(cpu_ticks("garbage").is_err());
    }

    #[test]
    fn status_values_are_kib() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(2 << 20));
        assert_eq!(status_kib(status, "VmRSS:"), Some(1 << 20));
        assert_eq!(status_kib(status, "VmPeak:"), None);
    }

    #[test]
    fn this_process_is_readable() {
        let me = Process::new(std::process::id()).unwrap();
        assert!(me.cpu_seconds().unwrap() >= 0.0);
        assert!(me.memory().unwrap().peak_rss_bytes.unwrap() > 0);
    }
}
