//! Who is training and which run it is: [`RunInfo`] (name, host, pid, rank, job, hyperparameters, read from
//! the environment as torchrun and Slurm set it), [`hostname`] and [`new_run_id`]. No I/O beyond reading the
//! host name.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Who is training: the fields of `run_started` that the state does not know.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// Human name of the run.
    pub name: String,
    /// Host the run trains on.
    pub host: String,
    /// Process id of the training process.
    pub pid: u32,
    /// Distributed rank; 0 for single-process runs.
    pub rank: u32,
    /// The job this run is one rank of (shared by every rank; None: a single process).
    pub job: Option<String>,
    /// Ranks in the job, when known.
    pub world_size: Option<u32>,
    /// Hyperparameters to report (lr, bs, model, ...).
    pub hyper: BTreeMap<String, serde_json::Value>,
}

impl RunInfo {
    /// A run named `name` on this host and process, no hyperparameters; rank, job and world size from the
    /// environment as [`RunInfo::from_env`] reads it.
    pub fn new(name: impl Into<String>) -> RunInfo {
        RunInfo::from_env(name, |var| std::env::var(var).ok())
    }

    /// A run named `name` with rank, job and world size from the variables `var` looks up: the rank is `RANK`
    /// (torchrun's), else `SLURM_PROCID`, else 0; the world size `WORLD_SIZE`, else `SLURM_NTASKS`; the job id,
    /// in the order the Python client documents, `HERALD_JOB`, else `SLURM_JOB_ID` with `SLURM_STEP_ID`
    /// (`4242.0`), else `TORCHELASTIC_RUN_ID` unless it is `none` (torchrun's default), else none (a Rust trainer
    /// has no process group to share one through: set `HERALD_JOB`).
    pub fn from_env(name: impl Into<String>, var: impl Fn(&str) -> Option<String>) -> RunInfo {
        let get = |k: &str| var(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let number = |keys: &[&str]| keys.iter().find_map(|k| get(k)).and_then(|v| v.parse::<u32>().ok());
        let job = get("HERALD_JOB")
            .or_else(|| {
                get("SLURM_JOB_ID").map(|j| match get("SLURM_STEP_ID") {
                    Some(step) => format!("{j}.{step}"),
                    None => j,
                })
            })
            .or_else(|| get("TORCHELASTIC_RUN_ID").filter(|id| id != "none"));
        RunInfo {
            name: name.into(),
            host: hostname(),
            pid: std::process::id(),
            rank: number(&["RANK", "SLURM_PROCID"]).unwrap_or(0),
            job,
            world_size: number(&["WORLD_SIZE", "SLURM_NTASKS"]),
            hyper: BTreeMap::new(),
        }
    }

    /// Sets the job this run is one rank of.
    pub fn job(mut self, job: impl Into<String>) -> RunInfo {
        self.job = Some(job.into());
        self
    }

    /// Sets the number of ranks in the job.
    pub fn world_size(mut self, world_size: u32) -> RunInfo {
        self.world_size = Some(world_size);
        self
    }

    /// Whether this process speaks for its job: rank 0, or any rank of a run that is no job (every event goes
    /// out; the daemon keeps a non-zero rank's progress off the phone).
    pub fn leads(&self) -> bool {
        self.rank == 0 || self.job.is_none()
    }

    /// Adds a hyperparameter.
    pub fn hyper(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> RunInfo {
        self.hyper.insert(key.into(), value.into());
        self
    }

    /// Sets the distributed rank.
    pub fn rank(mut self, rank: u32) -> RunInfo {
        self.rank = rank;
        self
    }
}

/// This machine's host name, from the kernel or the environment; `unknown` when none says.
pub fn hostname() -> String {
    let from_file = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned());
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A new run id: `<UTC yyyymmddThhmmss.mmmZ>-<pid>-<counter>-<8 random hex digits>`, unique per process by
/// the counter, across processes by pid and time, and across machines (where pids and clocks can meet, as in
/// cluster mode) by the random part, without asking the host anything. Older ids without the random part
/// are still valid: a run id is any string.
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // std's RandomState is seeded from the operating system's random source: no dependency needed.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(n);
    let random = hasher.finish() as u32;
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}.{:03}Z-{}-{n}-{random:08x}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        since.subsec_millis(),
        std::process::id()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn run_ids_are_unique() {
        let a = new_run_id();
        let b = new_run_id();
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
        assert!(a.len() > 20 && a.is_ascii(), "{a}");
        // The random part that keeps ids apart across machines.
        let random = a.rsplit('-').next().unwrap_or_default();
        assert!(random.len() == 8 && random.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    }
}
