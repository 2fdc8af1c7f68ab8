//! Distributed jobs: the ranks of one training job, each a run of its own, seen as one job.
//!
//! A run whose `run_started` names a `job` (and a world size other than 1) is a rank of that job; its
//! [`Member`] record (kept in the run's `RunState`) follows its progress. [`group`] builds the [`JobView`]s
//! from those records: ranks expected and seen, each rank's host, latest event, epoch and epoch times, with
//! late, duplicated and restarted ranks, world sizes that disagree and job ids reused after the job ended
//! each handled by a stated rule. [`decide`] says which job events (`rank_stalled`, `rank_lost`,
//! `rank_failed`, `rank_slow`, `ranks_missing`, and the job's own end) a look at a view calls for; the run
//! watch (`periodic.rs`) stores them on the job's anchor run (rank 0), whose stream is the job's stream for
//! notifiers (routing in `runs.rs` keeps the other ranks' events off the phone).
//!
//! Pure logic: no I/O, no clock (the caller passes the time), nothing of the rest of the daemon imported.

mod member;
mod view;
mod watch;

#[cfg(test)]
mod tests;

pub use member::{EPOCHS_KEPT, Member, Said};
pub use view::{JobView, RankFacts, group};
pub use watch::{Watch, decide, failures, job_end, stall_threshold};
