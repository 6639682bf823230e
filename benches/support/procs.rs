//! What a process costs: CPU time and peak memory read from `/proc`, for the chaos program
//! and the distributed benchmark. A group is a process and, optionally, its descendants (the
//! PostgreSQL backends are children of the postmaster); a reaped child's time is in its
//! parent's `cutime`/`cstime`, so a group's total stays right as backends come and go.

use std::time::{Duration, Instant};

/// A process to measure, with its descendants or alone.
#[derive(Clone, Debug)]
pub struct Group {
    /// What the report calls it.
    pub name: String,
    /// The root process.
    pub pid: u32,
    /// Include every descendant of `pid` (listed again at each reading).
    pub tree: bool,
}

impl Group {
    /// `pid` alone.
    pub fn process(name: impl Into<String>, pid: u32) -> Self {
        Self {
            name: name.into(),
            pid,
            tree: false,
        }
    }

    /// `pid` and its descendants.
    pub fn tree(name: impl Into<String>, pid: u32) -> Self {
        Self {
            name: name.into(),
            pid,
            tree: true,
        }
    }

    fn pids(&self) -> Vec<u32> {
        if self.tree {
            descendants(self.pid)
        } else {
            vec![self.pid]
        }
    }
}

/// The fields of `/proc/PID/stat` after the command name, from `state` (field 3) on.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// `pid` and every process below it.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(fields) = stat_fields(child) {
                // Field 4 (ppid) is the second after the name.
                parents.push((child, fields.get(1).copied().unwrap_or(0) as u32));
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found
}

/// CPU time of `pid` and of its reaped children, in clock ticks (utime + stime + cutime +
/// cstime: fields 14 to 17).
fn ticks(pid: u32) -> u64 {
    stat_fields(pid).map_or(0, |f| f.get(11..15).map_or(0, |t| t.iter().sum()))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless it says otherwise).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Peak resident memory (`VmHWM`) of `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

/// What one group used over a phase.
#[derive(Clone, Debug)]
pub struct Usage {
    /// The group's name.
    pub name: String,
    /// CPU time over wall time, in percent of one core.
    pub cpu_percent: f64,
    /// Peak RSS of the root process, MiB.
    pub peak_rss_mib: f64,
    /// Peak RSS summed over the group's live processes, MiB (shared memory counted in each).
    pub peak_rss_sum_mib: f64,
    /// Processes in the group at the end.
    pub processes: usize,
}

/// CPU readings of some groups at the start of a phase.
pub struct Phase {
    groups: Vec<Group>,
    ticks: Vec<u64>,
    began: Instant,
}

impl Phase {
    /// Reads the groups' CPU time now.
    pub fn start(groups: &[Group]) -> Self {
        Self {
            ticks: groups.iter().map(group_ticks).collect(),
            groups: groups.to_vec(),
            began: Instant::now(),
        }
    }

    /// Each group's CPU share since [`Phase::start`] and its peak memory.
    pub fn finish(&self) -> (Duration, Vec<Usage>) {
        let wall = self.began.elapsed();
        let per_second = ticks_per_second();
        let usages = self
            .groups
            .iter()
            .zip(&self.ticks)
            .map(|(group, before)| {
                let used = group_ticks(group).saturating_sub(*before) as f64 / per_second;
                let pids = group.pids();
                Usage {
                    name: group.name.clone(),
                    cpu_percent: 100.0 * used / wall.as_secs_f64().max(1e-9),
                    peak_rss_mib: peak_rss_kib(group.pid) as f64 / 1024.0,
                    peak_rss_sum_mib: pids.iter().map(|p| peak_rss_kib(*p)).sum::<u64>() as f64
                        / 1024.0,
                    processes: pids.len(),
                }
            })
            .collect();
        (wall, usages)
    }
}

fn group_ticks(group: &Group) -> u64 {
    group.pids().into_iter().map(ticks).sum()
}

/// One line per group: `name  cpu%  peak RSS`.
pub fn report(usages: &[Usage]) -> String {
    let mut out = String::new();
    for u in usages {
        let sum = if u.processes > 1 {
            format!(
                " ({} processes, sum of their peaks {:.0} MiB)",
                u.processes, u.peak_rss_sum_mib
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "    {:<22} CPU {:>6.1}% of a core   peak RSS {:>7.1} MiB{sum}\n",
            u.name, u.cpu_percent, u.peak_rss_mib
        ));
    }
    out
}
