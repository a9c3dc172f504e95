//! What the system benchmarks (`tests/benches/*.rs`, run by `cargo xtask bench`) share: their
//! command line, percentiles, figures of a process read from `/proc`, and the JSON they write.

use std::path::PathBuf;
use std::time::Duration;

/// A benchmark's command line: `--name value` pairs. cargo adds a bare `--bench`, which is
/// ignored like any other flag without a value.
#[derive(Debug, Default)]
pub struct BenchArgs {
    pairs: Vec<(String, String)>,
}

impl BenchArgs {
    /// The arguments of this process.
    pub fn from_env() -> Self {
        Self::parse(std::env::args().skip(1))
    }

    /// Parses `--name value` pairs out of `args`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Self {
        let mut pairs = Vec::new();
        let mut args = args.into_iter().peekable();
        while let Some(arg) = args.next() {
            let Some(name) = arg.strip_prefix("--") else { continue };
            if let Some(value) = args.next_if(|next| !next.starts_with("--")) {
                pairs.push((name.to_owned(), value));
            }
        }
        Self { pairs }
    }

    /// `--name`'s value, parsed, or `default`; a value that does not parse is an error naming
    /// the flag.
    pub fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.pairs.iter().rev().find(|(n, _)| n == name) {
            None => Ok(default),
            Some((_, value)) => value.parse().map_err(|_| format!("--{name}: {value:?} is not valid")),
        }
    }

    /// `--name`'s value as a count of at least one, or `default`.
    pub fn count(&self, name: &str, default: usize) -> Result<usize, String> {
        match self.get(name, default)? {
            0 => Err(format!("--{name} must be at least 1")),
            count => Ok(count),
        }
    }

    /// `--json PATH`: where the section's figures go.
    pub fn json_path(&self) -> Option<PathBuf> {
        self.pairs.iter().rev().find(|(n, _)| n == "json").map(|(_, v)| PathBuf::from(v))
    }

    /// Writes `report` to `--json PATH` when given, and prints it otherwise.
    pub fn write_report(&self, report: &serde_json::Value) -> Result<(), String> {
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        match self.json_path() {
            Some(path) => std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display())),
            None => {
                println!("{text}");
                Ok(())
            }
        }
    }
}

/// `program` in a directory of `PATH` or in `/usr/sbin` (where Debian puts daemons such as
/// certmonger), if it is there.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The `q` quantile (0..=1) of `samples`, nearest rank; 0 when there are none.
pub fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = (q * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// Milliseconds as a float, for reports.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// A number field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, `Threads`, …; kB for sizes).
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&text, field)
}

fn status_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// Context switches, voluntary and not, of every thread of `pid` so far: how often the process
/// was woken up or preempted.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .map(|status| {
            status_field(&status, "voluntary_ctxt_switches").unwrap_or(0)
                + status_field(&status, "nonvoluntary_ctxt_switches").unwrap_or(0)
        })
        .sum()
}

/// CPU time (user + system) used by `pid` so far, from `/proc/<pid>/stat` (clock ticks of 10 ms,
/// the kernel's `USER_HZ` on Linux).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time (user + system) of this process so far: the benchmark's clients.
pub fn own_cpu_time() -> Duration {
    cpu_time(std::process::id()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_pair_names_with_values_and_skip_bare_flags() {
        let args = BenchArgs::parse(["--storm", "100", "--bench", "--json", "/tmp/x.json"].map(String::from));
        assert_eq!(args.get("storm", 5000), Ok(100));
        assert_eq!(args.get("absent", 7), Ok(7));
        assert_eq!(args.json_path(), Some(PathBuf::from("/tmp/x.json")));
        let bad = BenchArgs::parse(["--storm", "many"].map(String::from));
        assert_eq!(bad.get("storm", 1u32), Err("--storm: \"many\" is not valid".to_owned()));
        assert_eq!(args.count("storm", 5000), Ok(100));
        let none = BenchArgs::parse(["--restarts", "0"].map(String::from));
        assert_eq!(none.count("restarts", 20), Err("--restarts must be at least 1".to_owned()));
    }

    #[test]
    fn programs_are_found_on_path_or_not_at_all() {
        assert!(find_program("sh").is_some_and(|sh| sh.is_file()));
        assert_eq!(find_program("kubecert-no-such-program"), None);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut samples, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&mut samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&mut samples, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&mut [], 0.5), Duration::ZERO);
    }

    #[test]
    fn this_process_has_figures_in_proc() {
        let pid = std::process::id();
        assert!(proc_status(pid, "VmRSS").is_some_and(|kb| kb > 0));
        assert!(proc_status(pid, "Threads").is_some_and(|n| n >= 1));
        assert!(context_switches(pid) > 0);
        assert!(cpu_time(pid).is_some());
    }
}
