//! Server process figures read from /proc: CPU time (user + system, all threads)
//! and resident memory, summed over the processes under test.

use procfs::process::Process;

/// CPU time and RSS of a set of processes at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// User + system CPU time, in seconds.
    pub cpu_s: f64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
}

/// Reads [`Sample`]s of fixed processes.
#[derive(Debug, Clone)]
pub struct ProcWatch {
    pids: Vec<i32>,
    ticks_per_s: f64,
    page_kib: u64,
}

impl ProcWatch {
    pub fn new(pids: Vec<u32>) -> Self {
        ProcWatch {
            pids: pids.into_iter().map(|p| p as i32).collect(),
            ticks_per_s: procfs::ticks_per_second() as f64,
            page_kib: procfs::page_size() / 1024,
        }
    }

    /// Sums the processes' CPU time and RSS. A process that is gone counts as zero.
    pub fn sample(&self) -> Sample {
        let mut sample = Sample::default();
        for &pid in &self.pids {
            let Ok(stat) = Process::new(pid).and_then(|p| p.stat()) else {
                continue;
            };
            sample.cpu_s += (stat.utime + stat.stime) as f64 / self.ticks_per_s;
            sample.rss_kib += stat.rss * self.page_kib;
        }
        sample
    }
}

/// CPU seconds the whole machine spent busy since boot (all cores, every
/// process): `/proc/stat` less idle and I/O wait. Set against the processes
/// under test, it shows how much else ran during a measurement.
pub fn machine_busy_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is within user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy as f64 / procfs::ticks_per_second() as f64
}

/// Connections this machine's kernel dropped because a listening socket's
/// accept queue was full (`ListenOverflows` in /proc/net/netstat, machine-wide):
/// the client's SYN goes unanswered and is retried after a second.
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

impl Sample {
    /// CPU seconds used between `earlier` and `self`.
    pub fn cpu_since(&self, earlier: &Sample) -> f64 {
        (self.cpu_s - earlier.cpu_s).max(0.0)
    }
}
