//! What a set of results was measured on: the machine, its load, and the commit.

use std::fmt;
use std::process::Command;

use crate::programs::workspace_root;

/// The facts printed above a results table.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Logical CPUs this process may use.
    pub cpus: usize,
    /// The CPU's model name, from /proc/cpuinfo.
    pub cpu_model: String,
    /// Total memory in KiB, from /proc/meminfo.
    pub memory_kb: Option<u64>,
    /// The kernel release.
    pub kernel: String,
    /// The 1, 5 and 15 minute load averages when the suite started (the machine may be shared).
    pub load: String,
    /// The checkout's commit, with `+dirty` when it has uncommitted changes.
    pub commit: String,
}

impl Machine {
    /// Reads the facts of this machine and checkout; what cannot be read is shown as "unknown".
    pub fn current() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let unknown = |s: Option<String>| s.unwrap_or_else(|| "unknown".to_owned());
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: unknown(cpu_model(&read("/proc/cpuinfo"))),
            memory_kb: mem_total_kb(&read("/proc/meminfo")),
            kernel: unknown(
                Some(read("/proc/sys/kernel/osrelease").trim().to_owned())
                    .filter(|s| !s.is_empty()),
            ),
            load: unknown(
                Some(
                    read("/proc/loadavg")
                        .split_whitespace()
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" "),
                )
                .filter(|s| !s.is_empty()),
            ),
            commit: unknown(commit()),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let memory = self.memory_kb.map_or("unknown".to_owned(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
        });
        writeln!(
            f,
            "- machine: {} CPUs, {}, {memory} memory, Linux {}",
            self.cpus, self.cpu_model, self.kernel
        )?;
        writeln!(f, "- load average at start: {}", self.load)?;
        write!(f, "- commit: {}", self.commit)
    }
}

/// The first `model name` in /proc/cpuinfo.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// `MemTotal` in /proc/meminfo, in KiB.
pub fn mem_total_kb(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let value = line.strip_prefix("MemTotal:")?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

fn commit() -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(workspace_root())
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}+dirty") } else { head })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cpu_model_and_total_memory() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
        let meminfo = "MemTotal:        8148032 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_kb(meminfo), Some(8_148_032));
        assert_eq!(mem_total_kb("MemFree: 1 kB\n"), None);
    }
}
