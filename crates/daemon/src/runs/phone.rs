//! What is set on a run from the phone: threshold rules ([`Watch`], `/watch`) and a [`Mute`] (`/mute`),
//! changed by a [`RunChange`] that the writer applies with [`RunState::change`].

use serde::{Deserialize, Serialize};

use super::RunState;

/// Phone rules a run keeps at most (a `/watch` beyond them is refused).
pub const MAX_WATCHES: usize = 32;

/// A threshold rule added from the phone for one run: it fires once, when the metric crosses the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watch {
    /// `train_loss`, `valid_loss` or a metric name.
    pub metric: String,
    /// `>`, `>=`, `<` or `<=` (`config::Op`).
    pub op: String,
    /// The value compared with.
    pub value: f64,
    /// Who added it (`@user`).
    pub by: String,
    /// When, milliseconds since the Unix epoch.
    pub added_ms: u64,
    /// The epoch it fired at; it fires no more after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired: Option<u32>,
}

impl Watch {
    /// The rule's name, in its alerts and lists: `watch accuracy >= 0.98`.
    pub fn name(&self) -> String {
        format!("watch {}", self.condition())
    }

    /// `accuracy >= 0.98`.
    pub fn condition(&self) -> String {
        format!("{} {} {}", self.metric, self.op, self.value)
    }
}

/// A run's routine updates held back (`/mute`): epochs, batches, heartbeats, so no live edits either.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mute {
    /// When it ends, milliseconds since the Unix epoch (`None`: until `/unmute`).
    pub until_ms: Option<u64>,
    /// Who muted the run.
    pub by: String,
}

impl Mute {
    /// Whether the mute holds at `now_ms`.
    pub fn active(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|until| now_ms < until)
    }
}

/// A change to a run made from the phone, applied by the writer with [`RunState::change`].
#[derive(Debug, Clone, PartialEq)]
pub enum RunChange {
    /// Add a threshold rule (one with the same metric, operator and value replaces it).
    Watch(Watch),
    /// Remove the phone rules, all or those on one metric.
    Unwatch {
        /// Only the rules on this metric.
        metric: Option<String>,
    },
    /// Mute the run (replacing an earlier mute).
    Mute(Mute),
    /// End the mute.
    Unmute,
}

impl RunState {
    /// Apply a change from the phone; answers how many rules or mutes were added or removed.
    pub fn change(&mut self, change: RunChange) -> usize {
        match change {
            RunChange::Watch(w) => {
                self.watches.retain(|old| (&old.metric, &old.op, old.value) != (&w.metric, &w.op, w.value));
                if self.watches.len() >= MAX_WATCHES {
                    return 0;
                }
                self.watches.push(w);
                1
            }
            RunChange::Unwatch { metric } => {
                let before = self.watches.len();
                self.watches.retain(|w| metric.as_ref().is_some_and(|m| *m != w.metric));
                before - self.watches.len()
            }
            RunChange::Mute(m) => {
                self.mute = Some(m);
                1
            }
            RunChange::Unmute => usize::from(self.mute.take().is_some()),
        }
    }
}
