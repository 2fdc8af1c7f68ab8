//! Packs: consecutive events of one run that the edge publishes as one JetStream message.
//!
//! JetStream stores, replicates and acknowledges each message, so one message per event made NATS itself
//! the edge's limit (about 37,000 events/s through three servers on a 2-core machine, with the servers
//! using more CPU than the edge). The forwarder therefore puts consecutive events of one run into one
//! message: newline-delimited JSON, up to [`PACK_EVENTS`] events and [`PACK_BYTES`] bytes. A message of one
//! event is that event's JSON, as before. Its `Nats-Msg-Id` is `<run>/<seq>` for one event and
//! `<run>/<first>-<last>` for a pack ([`msg_id`]).
//!
//! A pack whose acknowledgement did not come may still be stored; published again with other bounds, its
//! events would be stored twice. So the forwarder remembers, per run, the bounds of every pack whose outcome
//! it does not know, and [`plan`] publishes those again with the same bounds, before anything new: the
//! stream's duplicate window drops the copy. Only an edge that restarts in between packs afresh; then the
//! leader's high-water mark per run drops the events it applied already. This module does no I/O.

use std::collections::HashMap;
use std::ops::Range;

/// The stream sequence numbers of a pack's first and last event.
pub type Bounds = (u64, u64);

/// Events in one message at most.
pub const PACK_EVENTS: usize = 500;
/// Bytes of one message at most, well under NATS's default `max_payload` of 1 MiB (an event larger than
/// this goes alone).
pub const PACK_BYTES: usize = 256 << 10;

/// The `Nats-Msg-Id` of the events `first..=last` of `run`: `<run>/<seq>` for one event,
/// `<run>/<first>-<last>` for a pack.
pub fn msg_id(run: &str, first: u64, last: u64) -> String {
    match first == last {
        true => format!("{run}/{first}"),
        false => format!("{run}/{first}-{last}"),
    }
}

/// How one run's events in a delivery go out.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The messages, as ranges of the run's events, in order.
    pub packs: Vec<Range<usize>>,
    /// The run's events from this index on wait for the next attempt: a remembered pack is not whole in
    /// this delivery, and must not be published with other bounds.
    pub deferred: usize,
    /// The remembered packs not published this time (from the first deferred one on), to remember still.
    pub kept: Vec<Bounds>,
}

/// Plan the messages for a run's events, given as (stream sequence number, encoded length) in order, and
/// the bounds of its packs of unknown outcome (`replay`, in order): those first, with the same bounds, then
/// the rest in packs of at most [`PACK_EVENTS`] events and [`PACK_BYTES`] bytes.
pub fn plan(events: &[(u64, usize)], replay: &[Bounds]) -> Plan {
    let mut packs = Vec::new();
    let mut at = 0;
    for (i, &(first, last)) in replay.iter().enumerate() {
        // Remembered bounds that do not start where the run's events now start are not this delivery's
        // (the events were settled some other way): pack afresh.
        if events.get(at).map(|e| e.0) != Some(first) {
            break;
        }
        match events[at..].iter().position(|e| e.0 == last) {
            Some(end) => {
                packs.push(at..at + end + 1);
                at += end + 1;
            }
            None => return Plan { packs, deferred: at, kept: replay[i..].to_vec() },
        }
    }
    while at < events.len() {
        let start = at;
        let mut bytes = 0;
        while at < events.len() && at - start < PACK_EVENTS {
            let len = events[at].1 + 1;
            if at > start && bytes + len > PACK_BYTES {
                break;
            }
            bytes += len;
            at += 1;
        }
        packs.push(start..at);
    }
    Plan { packs, deferred: events.len(), kept: Vec::new() }
}

/// Per run, the bounds of the packs published whose outcome is not known, in order: they go again as they
/// were ([`plan`]).
#[derive(Debug, Default)]
pub struct Replay(HashMap<String, Vec<Bounds>>);

impl Replay {
    /// The remembered bounds of `run`'s packs.
    pub fn remembered(&self, run: &str) -> &[Bounds] {
        self.0.get(run).map_or(&[], Vec::as_slice)
    }

    /// Settle an attempt at `run`'s packs, given in order as (bounds, acknowledged), with the remembered
    /// packs the plan did not publish (`kept`). A pack counts as stored only when it and every earlier pack
    /// of the run were acknowledged; from the first that was not, every pack's outcome is unknown and its
    /// bounds are remembered, with `kept` after them. Returns whether each pack counts as stored.
    pub fn settle(&mut self, run: &str, packs: &[(Bounds, bool)], kept: Vec<Bounds>) -> Vec<bool> {
        let stored = packs.iter().take_while(|(_, acked)| *acked).count();
        let mut unknown: Vec<Bounds> = packs[stored..].iter().map(|(bounds, _)| *bounds).collect();
        unknown.extend(kept);
        if unknown.is_empty() {
            self.0.remove(run);
        } else {
            self.0.insert(run.to_owned(), unknown);
        }
        (0..packs.len()).map(|i| i < stored).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seqs: Range<u64>) -> Vec<(u64, usize)> {
        seqs.map(|s| (s, 200)).collect()
    }

    #[test]
    fn events_go_in_packs_bounded_by_count_and_bytes() {
        let plan = plan(&small(0..1200), &[]);
        assert_eq!(plan.packs, vec![0..500, 500..1000, 1000..1200]);
        assert_eq!((plan.deferred, plan.kept.len()), (1200, 0));
        // 100 KiB events: two fit under 256 KiB, a third does not.
        let big: Vec<(u64, usize)> = (0..5).map(|s| (s, 100 << 10)).collect();
        assert_eq!(super::plan(&big, &[]).packs, vec![0..2, 2..4, 4..5]);
        // An event over the limit goes alone.
        let huge = vec![(0, 10), (1, 300 << 10), (2, 10)];
        assert_eq!(super::plan(&huge, &[]).packs, vec![0..1, 1..2, 2..3]);
        assert_eq!(super::plan(&[], &[]).packs, Vec::<Range<usize>>::new());
    }

    #[test]
    fn packs_of_unknown_outcome_go_again_with_the_same_bounds_first() {
        // Packs 10..=14 and 15..=19 were published, not acknowledged; 20..=29 came since.
        let plan = plan(&small(10..30), &[(10, 14), (15, 19)]);
        assert_eq!(plan.packs, vec![0..5, 5..10, 10..20]);
        assert_eq!((plan.deferred, plan.kept.len()), (20, 0));
    }

    #[test]
    fn a_remembered_pack_not_whole_here_waits_with_what_follows() {
        // The delivery holds 10..=16 only: 10..=14 goes again, 15..=19 is not whole and waits.
        let plan = plan(&small(10..17), &[(10, 14), (15, 19)]);
        assert_eq!(plan.packs, vec![0..5]);
        assert_eq!(plan.deferred, 5);
        assert_eq!(plan.kept, vec![(15, 19)]);
        assert_eq!(super::plan(&small(10..12), &[(10, 14)]).packs, Vec::<Range<usize>>::new());
    }

    #[test]
    fn remembered_bounds_that_do_not_fit_are_dropped() {
        let plan = plan(&small(20..25), &[(10, 14)]);
        assert_eq!(plan.packs, vec![0..5]);
        assert_eq!((plan.deferred, plan.kept.len()), (5, 0));
    }

    #[test]
    fn from_a_runs_first_unacknowledged_pack_on_every_pack_is_remembered() {
        let mut replay = Replay::default();
        let stored = replay.settle("r", &[((1, 5), true), ((6, 9), false), ((10, 12), true)], vec![(13, 14)]);
        assert_eq!(stored, vec![true, false, false], "a pack after a failed one is not counted stored");
        assert_eq!(replay.remembered("r"), &[(6, 9), (10, 12), (13, 14)]);
        assert_eq!(replay.remembered("other"), &[] as &[(u64, u64)]);
        // The next attempt publishes them with the same bounds first; all acknowledged, nothing is left.
        let plan = plan(&small(6..20), replay.remembered("r"));
        assert_eq!(plan.packs[..3], [0..4, 4..7, 7..9]);
        let acked: Vec<((u64, u64), bool)> = vec![((6, 9), true), ((10, 12), true), ((13, 14), true)];
        assert_eq!(replay.settle("r", &acked, plan.kept), vec![true; 3]);
        assert_eq!(replay.remembered("r"), &[] as &[(u64, u64)]);
        // A run whose packs all wait keeps what it remembered.
        replay.settle("w", &[], vec![(3, 4)]);
        assert_eq!(replay.remembered("w"), &[(3, 4)]);
    }

    #[test]
    fn ids_name_the_event_or_the_packs_bounds() {
        assert_eq!(msg_id("r/1", 7, 7), "r/1/7");
        assert_eq!(msg_id("r/1", 7, 9), "r/1/7-9");
    }
}
