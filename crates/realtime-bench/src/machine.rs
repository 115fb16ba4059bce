//! A description of the machine a run happens on, for the record.

use procfs::Current;

use crate::record::Machine;

/// Reads the CPU model, core count, memory, kernel and open-files limit.
pub fn describe() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let memory_gib = procfs::Meminfo::current()
        .map(|m| m.mem_total as f64 / (1024.0 * 1024.0 * 1024.0))
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Machine {
        cpu_model,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: (memory_gib * 10.0).round() / 10.0,
        kernel,
        open_files_limit: open_files_limit(),
    }
}

/// The soft limit on open files of this process.
pub fn open_files_limit() -> u64 {
    procfs::process::Process::myself()
        .and_then(|p| p.limits())
        .ok()
        .map(|l| match l.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(v) => v,
            procfs::process::LimitValue::Unlimited => u64::MAX,
        })
        .unwrap_or(1024)
}
