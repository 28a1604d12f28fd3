//! Which CPU runs each core and which core owns each disk. This is the one part of the config
//! that needs the machine: `cores = "all"` means the CPUs of the process's affinity mask,
//! which the daemon reads at startup and passes in. Checks that depend on the number of cores
//! (shard ports, pinned disks) run again here with the real count.

use crate::check;
use crate::error::{ConfigErrors, Problem, ProblemKind};
use crate::schema::{Config, Cores};

/// Cores and disk ownership, resolved for this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    cpus: Vec<usize>,
    disk_cores: Vec<usize>,
}

impl Placement {
    /// The CPU of each core: core `i` runs pinned on `cpus()[i]`.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Number of cores.
    pub fn core_count(&self) -> usize {
        self.cpus.len()
    }

    /// The core that owns the disk at `disk_index` in [`Config::disks`].
    pub fn disk_core(&self, disk_index: usize) -> usize {
        self.disk_cores[disk_index]
    }

    /// Indexes (in [`Config::disks`]) of the disks owned by `core`, in config order.
    pub fn disks_of(&self, core: usize) -> impl Iterator<Item = usize> + '_ {
        self.disk_cores.iter().enumerate().filter(move |&(_, &c)| c == core).map(|(i, _)| i)
    }
}

impl Config {
    /// Resolves the cores against `allowed_cpus` (the process's affinity mask, ascending) and
    /// gives every disk its core: a disk with `core` set goes there; the others go, in config
    /// order, each to the core that owns the fewest disks so far (the lowest index on a tie),
    /// which is round-robin when no disk is pinned. Fails, naming the field, when a listed CPU
    /// is not allowed, a disk names a core that does not exist, or the shard ports do not fit.
    pub fn placement(&self, allowed_cpus: &[usize]) -> Result<Placement, ConfigErrors> {
        let mut problems = Vec::new();
        let cpus = match &self.runtime.cores {
            Cores::All => allowed_cpus.to_vec(),
            Cores::List(cpus) => {
                for (i, cpu) in cpus.iter().enumerate() {
                    if !allowed_cpus.contains(cpu) {
                        let message = format!(
                            "CPU {cpu} is not in this process's CPU affinity mask ({}); list only \
                             those CPUs, or use \"all\"",
                            cpu_ranges(allowed_cpus)
                        );
                        problems.push(invalid(format!("runtime.cores[{i}]"), cpu, message));
                    }
                }
                cpus.clone()
            }
        };
        if cpus.is_empty() {
            let message = "no CPU to run on: the process's CPU affinity mask is empty".to_owned();
            problems.push(invalid("runtime.cores".to_owned(), &"\"all\"", message));
        }
        if problems.is_empty() {
            problems.extend(check::check_core_count(self, Some(cpus.len())));
        }
        if !problems.is_empty() {
            return Err(ConfigErrors::new(problems));
        }
        let mut load = vec![0usize; cpus.len()];
        for core in self.disks.iter().filter_map(|d| d.core) {
            load[core] += 1;
        }
        let disk_cores = self
            .disks
            .iter()
            .map(|disk| match disk.core {
                Some(core) => core,
                None => {
                    let (core, _) = load
                        .iter()
                        .enumerate()
                        .min_by_key(|&(i, &n)| (n, i))
                        .expect("at least one core");
                    load[core] += 1;
                    core
                }
            })
            .collect();
        Ok(Placement { cpus, disk_cores })
    }
}

fn invalid(field: String, value: &dyn std::fmt::Display, message: String) -> Problem {
    Problem {
        field,
        value: Some(value.to_string()),
        line: None,
        kind: ProblemKind::Invalid(message),
    }
}

/// `0-3,8,10-11`.
fn cpu_ranges(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { cpus[i].to_string() } else { format!("{}-{}", cpus[i], cpus[j]) });
        i = j + 1;
    }
    if parts.is_empty() { "empty".to_owned() } else { parts.join(",") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ranges_are_compact() {
        assert_eq!(cpu_ranges(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(cpu_ranges(&[5]), "5");
        assert_eq!(cpu_ranges(&[]), "empty");
    }
}
