//! The job view and the job watch, table-driven over hand-made ranks: late, duplicated and restarted ranks,
//! world sizes that disagree, a job id reused after the job ended, and each job event made once.

use std::time::Duration;

use herald_event::{EventKind, Payload, RunStatus};

use super::*;

/// A rank as a test describes it.
#[derive(Clone)]
struct R {
    run: String,
    host: String,
    first_ms: u64,
    last_ms: u64,
    ended: Option<RunStatus>,
    gone: bool,
    member: Member,
}

fn rank(job: &str, rank: u32, world: Option<u32>) -> R {
    R {
        run: format!("{job}-r{rank}"),
        host: format!("gpu-{rank}"),
        first_ms: 1_000 + u64::from(rank),
        last_ms: 1_000 + u64::from(rank),
        ended: None,
        gone: false,
        member: Member {
            job: job.into(),
            rank,
            world_size: world,
            progress_ms: 1_000,
            last: Some(EventKind::RunStarted),
            ..Member::default()
        },
    }
}

impl R {
    fn epochs(mut self, times: &[f64], at_ms: u64) -> R {
        for (e, t) in times.iter().enumerate() {
            self.member.epoch_s.push((e as u32, *t));
            self.member.epoch = Some(e as u32);
        }
        self.member.progress_ms = at_ms;
        self.member.last = Some(EventKind::EpochEnded);
        self.last_ms = at_ms;
        self
    }
    fn ended(mut self, status: RunStatus, at_ms: u64) -> R {
        self.ended = Some(status);
        self.last_ms = at_ms;
        self.member.progress_ms = at_ms;
        self
    }
    fn run(mut self, run: &str, first_ms: u64) -> R {
        self.run = run.into();
        self.first_ms = first_ms;
        self.last_ms = self.last_ms.max(first_ms);
        self.member.progress_ms = self.member.progress_ms.max(first_ms);
        self
    }
    fn facts(&self) -> RankFacts<'_> {
        RankFacts {
            run: &self.run,
            host: &self.host,
            pid: 100 + self.member.rank,
            first_ms: self.first_ms,
            last_ms: self.last_ms,
            ended: self.ended,
            gone: self.gone,
            member: &self.member,
        }
    }
}

fn views(ranks: &[R]) -> Vec<JobView<'_>> {
    group(ranks.iter().map(R::facts))
}

fn watch(now_ms: u64) -> Watch {
    Watch { stall_after: Duration::from_secs(10), slow_rank_factor: 1.5, now_ms, started_ms: 0 }
}

fn kinds(events: &[Payload]) -> Vec<EventKind> {
    events.iter().map(Payload::kind).collect()
}

#[test]
fn ranks_of_one_job_make_one_view_with_rank_zero_as_anchor() {
    let ranks =
        [rank("j", 2, Some(3)), rank("j", 0, Some(3)), rank("j", 1, Some(3)), rank("other", 0, Some(2))];
    let v = views(&ranks);
    assert_eq!(v.len(), 2);
    let j = &v[0];
    assert_eq!((j.job.as_str(), j.world_size, j.ranks.len()), ("j", Some(3), 3));
    assert_eq!(j.anchor().map(|a| a.run), Some("j-r0"));
    assert_eq!(j.health(), "3/3 ranks");
    assert!(j.duplicates.is_empty() && j.world_sizes.is_empty());
}

#[test]
fn a_late_rank_joins_and_ranks_missing_is_said_once_after_the_window() {
    // Both present ranks keep reporting; the third never starts.
    let mut ranks =
        vec![rank("j", 0, Some(3)).epochs(&[1.0], 11_000), rank("j", 1, Some(3)).epochs(&[1.0], 11_000)];
    assert_eq!(views(&ranks)[0].health(), "2/3 ranks · missing: 2 · ranks even");
    // Within the window: nothing yet.
    assert!(decide(&views(&ranks)[0], &watch(5_000)).is_empty());
    let events = decide(&views(&ranks)[0], &watch(12_000));
    assert_eq!(kinds(&events), vec![EventKind::RanksMissing]);
    let Payload::RanksMissing(m) = &events[0] else { unreachable!() };
    assert_eq!((m.seen.clone(), m.missing.clone(), m.world_size), (vec![0, 1], vec![2], 3));
    ranks[0].member.remember(&events[0], 12_000);
    assert!(ranks[0].member.said_already(&events[0]));
    assert!(decide(&views(&ranks)[0], &watch(13_000)).is_empty(), "said once");
    // The late rank arrives: counted, and not said missing again.
    ranks.push(rank("j", 2, Some(3)).run("j-late", 12_500));
    let v = views(&ranks);
    assert_eq!((v.len(), v[0].ranks.len()), (1, 3));
    assert_eq!(v[0].health(), "3/3 ranks · ranks even");
}

#[test]
fn a_duplicated_live_rank_is_kept_aside_and_a_restarted_rank_replaces_its_dead_run() {
    let ranks =
        [rank("j", 0, Some(2)), rank("j", 1, Some(2)), rank("j", 1, Some(2)).run("j-r1-again", 2_000)];
    let v = views(&ranks);
    assert_eq!(v[0].ranks[&1].run, "j-r1");
    assert_eq!(v[0].duplicates, vec![(1, "j-r1-again")]);
    assert_eq!(v[0].health(), "2/2 ranks · duplicated: 1");

    let mut dead = rank("j", 1, Some(2));
    dead.gone = true;
    let ranks = [rank("j", 0, Some(2)), dead, rank("j", 1, Some(2)).run("j-r1-restarted", 2_000)];
    let v = views(&ranks);
    assert_eq!((v.len(), v[0].ranks[&1].run, v[0].duplicates.len()), (1, "j-r1-restarted", 0));
}

#[test]
fn world_sizes_that_disagree_take_rank_zeros_and_say_so() {
    let ranks = [rank("j", 0, Some(4)), rank("j", 1, Some(3)), rank("j", 2, None)];
    let v = views(&ranks);
    assert_eq!(v[0].world_size, Some(4));
    assert_eq!(v[0].world_sizes.len(), 2);
    assert_eq!(v[0].health(), "3/4 ranks · missing: 3 · world sizes disagree (rank 0: 4, rank 1: 3)");
    // Without rank 0, the largest.
    let ranks = [rank("j", 1, Some(3)), rank("j", 2, Some(5))];
    assert_eq!(views(&ranks)[0].world_size, Some(5));
}

#[test]
fn a_job_id_reused_after_the_job_ended_is_a_new_instance() {
    let ranks = [
        rank("j", 0, Some(2)).ended(RunStatus::Completed, 5_000),
        rank("j", 1, Some(2)).ended(RunStatus::Completed, 5_100),
        rank("j", 0, Some(2)).run("j-again-r0", 9_000),
        rank("j", 1, Some(2)).run("j-again-r1", 9_001),
    ];
    let v = views(&ranks);
    assert_eq!(v.len(), 2);
    assert!(v[0].finished() && !v[1].finished());
    assert_eq!(v[1].anchor().map(|a| a.run), Some("j-again-r0"));
    assert_eq!(v[1].ranks.len(), 2);
    // A rank starting while the first instance still runs belongs to it (a duplicate there), not a new one.
    let ranks = [rank("j", 0, Some(2)), rank("j", 0, Some(2)).run("j-r0-b", 9_000)];
    assert_eq!(views(&ranks).len(), 1);
}

#[test]
fn one_rank_silent_makes_one_rank_stalled_naming_it_with_its_host_and_epoch() {
    let mut ranks = vec![
        rank("j", 0, Some(3)).epochs(&[1.0, 1.0], 30_000),
        rank("j", 1, Some(3)).epochs(&[1.0, 1.0], 30_000),
        rank("j", 2, Some(3)).epochs(&[1.0], 5_000),
    ];
    let events = decide(&views(&ranks)[0], &watch(31_000));
    assert_eq!(kinds(&events), vec![EventKind::RankStalled]);
    let Payload::RankStalled(s) = &events[0] else { unreachable!() };
    assert_eq!(s.ranks.len(), 1, "one event naming the silent rank, not one per rank");
    assert_eq!((s.ranks[0].rank, s.ranks[0].host.as_str(), s.ranks[0].epoch), (2, "gpu-2", Some(1)));
    assert_eq!(s.ranks[0].last, EventKind::EpochEnded);
    assert!(!s.all);
    assert!((s.ranks[0].silent_s - 26.0).abs() < 1e-9, "{}", s.ranks[0].silent_s);
    ranks[0].member.remember(&events[0], 31_000);
    assert!(decide(&views(&ranks)[0], &watch(40_000)).is_empty(), "said once while it stays silent");
    // It reports again (recovered), then falls silent again: said again.
    ranks[2] = rank("j", 2, Some(3)).epochs(&[1.0, 1.0], 35_000);
    assert!(decide(&views(&ranks)[0], &watch(36_000)).is_empty());
    assert_eq!(kinds(&decide(&views(&ranks)[0], &watch(60_000))), vec![EventKind::RankStalled]);
}

#[test]
fn every_rank_silent_is_a_hung_job() {
    let ranks = [rank("j", 0, Some(2)), rank("j", 1, Some(2))];
    let events = decide(&views(&ranks)[0], &watch(20_000));
    let [Payload::RankStalled(s)] = events.as_slice() else { panic!("{events:?}") };
    assert!(s.all);
    assert_eq!(s.ranks.iter().map(|r| r.rank).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(s.ranks[0].epoch, None, "no epoch begun yet");
}

#[test]
fn the_stall_window_grows_with_the_longest_epoch() {
    let ranks = [rank("j", 0, Some(2)).epochs(&[20.0], 1_000), rank("j", 1, Some(2)).epochs(&[20.0], 1_000)];
    assert_eq!(stall_threshold(&views(&ranks)[0], Duration::from_secs(10)), Duration::from_secs(60));
    assert!(decide(&views(&ranks)[0], &watch(50_000)).is_empty());
}

#[test]
fn a_rank_slow_two_epochs_running_is_said_once_and_again_after_it_recovers() {
    let fast = |r: u32, times: &[f64]| rank("j", r, Some(3)).epochs(times, 9_000);
    // One slow epoch: nothing.
    let ranks = [fast(0, &[1.0, 1.0]), fast(1, &[1.0, 1.0]), fast(2, &[1.0, 2.0])];
    assert!(decide(&views(&ranks)[0], &watch(9_500)).is_empty());
    // Two running: once.
    let mut ranks = vec![fast(0, &[1.0, 1.0, 1.0]), fast(1, &[1.0, 1.1, 1.0]), fast(2, &[1.0, 2.0, 2.0])];
    let events = decide(&views(&ranks)[0], &watch(9_500));
    let [Payload::RankSlow(s)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!((s.rank, s.epoch, s.elapsed_s, s.median_s, s.host.as_str()), (2, 2, 2.0, 1.0, "gpu-2"));
    assert_eq!(views(&ranks)[0].health(), "3/3 ranks · slowest: rank 2 on gpu-2, +100%");
    ranks[0].member.remember(&events[0], 9_500);
    ranks[2] = fast(2, &[1.0, 2.0, 2.0, 2.0]);
    ranks[0] = fast(0, &[1.0, 1.0, 1.0, 1.0]);
    ranks[1] = fast(1, &[1.0, 1.0, 1.0, 1.0]);
    ranks[0].member.remember(&events[0], 9_500);
    assert!(decide(&views(&ranks)[0], &watch(9_600)).is_empty(), "still the same slow spell");
    // Recovered at epoch 4, slow again at 5 and 6: said again.
    for (i, times) in [[1.0; 7], [1.0; 7]].iter().enumerate() {
        ranks[i] = fast(i as u32, times);
    }
    ranks[0].member.remember(&events[0], 9_500);
    ranks[2] = fast(2, &[1.0, 2.0, 2.0, 2.0, 1.0, 2.0, 2.0]);
    assert_eq!(kinds(&decide(&views(&ranks)[0], &watch(9_700))), vec![EventKind::RankSlow]);
}

#[test]
fn a_non_zero_rank_failing_makes_rank_failed_and_a_vanished_rank_rank_lost() {
    let mut failed = rank("j", 1, Some(3)).ended(RunStatus::Failed, 3_000);
    failed.member.failure = Some(("CUDA out of memory".into(), Some("Traceback ...".into())));
    let mut gone = rank("j", 2, Some(3));
    gone.gone = true;
    let mut zero_failed = rank("j", 0, Some(3)).ended(RunStatus::Failed, 3_000);
    zero_failed.member.failure = Some(("boom".into(), None));
    let mut ranks = vec![zero_failed, failed, gone];
    let events = decide(&views(&ranks)[0], &watch(4_000));
    assert_eq!(kinds(&events), vec![EventKind::RankFailed, EventKind::RankLost, EventKind::RunFinished]);
    let Payload::RankFailed(f) = &events[0] else { unreachable!() };
    assert_eq!((f.rank, f.host.as_str(), f.traceback.as_deref()), (1, "gpu-1", Some("Traceback ...")));
    let Payload::RankLost(l) = &events[1] else { unreachable!() };
    assert_eq!((l.rank, l.host.as_str(), l.pid), (2, "gpu-2", 102));
    let Payload::RunFinished(end) = &events[2] else { unreachable!() };
    assert_eq!(end.status, RunStatus::Failed, "the worst of the ranks'");
    assert!(end.reason.contains("2 failed, 1 lost"), "{}", end.reason);
    for e in &events {
        ranks[0].member.remember(e, 4_000);
    }
    assert!(events.iter().all(|e| ranks[0].member.said_already(e)));
    assert!(decide(&views(&ranks)[0], &watch(5_000)).is_empty(), "each said once");
}

#[test]
fn the_job_finishes_when_every_rank_has_with_the_worst_status() {
    let ranks = [
        rank("j", 0, Some(3)).ended(RunStatus::Completed, 5_000),
        rank("j", 1, Some(3)).ended(RunStatus::Stopped, 5_000),
        rank("j", 2, Some(3)),
    ];
    assert!(!views(&ranks)[0].finished());
    assert!(decide(&views(&ranks)[0], &watch(5_500)).is_empty());
    let ranks = [
        rank("j", 0, Some(3)).ended(RunStatus::Completed, 5_000),
        rank("j", 1, Some(3)).ended(RunStatus::Stopped, 5_000),
        rank("j", 2, Some(3)).ended(RunStatus::Completed, 6_000),
    ];
    let events = decide(&views(&ranks)[0], &watch(6_100));
    let [Payload::RunFinished(end)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(end.status, RunStatus::Stopped);
    assert!((end.duration_s - 5.0).abs() < 1e-9, "{}", end.duration_s);
}

#[test]
fn a_member_follows_progress_but_not_heartbeats() {
    use herald_event::{EpochEnded, Event, Heartbeat, RunFailed, RunStarted};
    let started = RunStarted {
        name: "n".into(),
        host: "h".into(),
        pid: 1,
        rank: 1,
        job: Some("j".into()),
        world_size: Some(2),
        n_epochs: 2,
        batches_per_epoch: 1,
        metric_names: vec![],
        hyper: Default::default(),
    };
    let mut m = Member::from_started(&started, 10).expect("a rank of a job");
    assert!(Member::from_started(&RunStarted { world_size: Some(1), ..started.clone() }, 10).is_none());
    assert!(Member::from_started(&RunStarted { job: Some(" ".into()), ..started.clone() }, 10).is_none());
    let epoch = EpochEnded {
        epoch: 0,
        n_epochs: 2,
        train_loss: 1.0,
        valid_loss: None,
        metrics: Default::default(),
        elapsed_s: 2.5,
    };
    m.observe(&Event::now("r", 1, epoch.clone()), 20);
    m.observe(&Event::now("r", 2, epoch), 21);
    m.observe(&Event::now("r", 3, Heartbeat {}), 99);
    assert_eq!(
        (m.progress_ms, m.last, m.epoch, m.epoch_s.clone()),
        (21, Some(EventKind::EpochEnded), Some(0), vec![(0, 2.5)])
    );
    m.observe(&Event::now("r", 4, RunFailed { error: "e".into(), traceback: None }), 100);
    assert_eq!(m.failure, Some(("e".into(), None)));
}

#[test]
fn a_rank_its_edge_said_lost_is_gone_at_the_leader_and_not_said_again() {
    // Cluster mode: rank 1's edge forwards its rank_lost on rank 1's own run; the leader counts it gone.
    let lost = herald_event::RankLost {
        job: "j".into(),
        rank: 1,
        host: "gpu-1".into(),
        pid: 101,
        reason: "gone".into(),
    };
    let mut one = rank("j", 1, Some(2)).epochs(&[1.0], 5_000);
    let mut other = one.member.clone();
    other.observe(
        &herald_event::Event::now("j-r1", 1 << 48, herald_event::RankLost { rank: 0, ..lost.clone() }),
        9_000,
    );
    assert!(!other.gone_elsewhere, "another rank's loss says nothing of this one");
    one.member.observe(&herald_event::Event::now("j-r1", 1 << 48, lost), 9_000);
    assert!(one.member.gone_elsewhere);
    assert_eq!(one.member.progress_ms, 5_000, "not a sign of progress");
    // The caller (RunState::rank_facts) counts it gone; the leader makes no rank_lost of its own, and the
    // job ends when rank 0 does, with the rank counted lost.
    one.gone = true;
    let ranks = [rank("j", 0, Some(2)).epochs(&[1.0], 5_000).ended(RunStatus::Completed, 10_000), one];
    let v = &views(&ranks)[0];
    assert!(failures(v).is_empty(), "{:?}", failures(v));
    let end = job_end(v, 10_000).expect("the job's end");
    assert_eq!(end.status, RunStatus::Failed);
    assert!(end.reason.ends_with("1 completed, 1 lost"), "{}", end.reason);
}
