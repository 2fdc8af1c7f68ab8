//! Threshold rules added from the phone (`/watch <run> <metric> <op> <value>`): kept on the run itself
//! ([`RunState::watches`]), each fires once, as an `alert` of level `info` (as a configured threshold rule),
//! at the first epoch whose metric crosses the value, and then stays fired (it is listed until `/unwatch`). A
//! NaN or infinite value never fires one (that is the `nan` rule's), and an epoch without the metric leaves
//! it waiting.

use herald_event::{Alert, EpochEnded, Level};

use super::num;
use crate::config::Op;
use crate::runs::{RunState, epoch_values};

/// The alerts the run's phone rules make at this epoch (each rule at most once in the run's life).
pub(super) fn evaluate(st: &mut RunState, e: &EpochEnded) -> Vec<Alert> {
    let mut fired = Vec::new();
    if st.watches.iter().all(|w| w.fired.is_some()) {
        return fired;
    }
    let values = epoch_values(e);
    for w in st.watches.iter_mut().filter(|w| w.fired.is_none()) {
        let Some(op) = Op::parse(&w.op) else { continue };
        let Some(v) = values.iter().find(|(n, _)| *n == w.metric).map(|(_, v)| *v) else { continue };
        if !v.is_finite() || !op.holds(v, w.value) {
            continue;
        }
        w.fired = Some(e.epoch);
        let text = format!(
            "{} {} at epoch {}/{} (watched from the phone by {})",
            w.metric,
            num(v),
            u64::from(e.epoch) + 1,
            e.n_epochs,
            w.by
        );
        fired.push(Alert {
            rule: Some(w.name()),
            title: w.name(),
            text,
            level: Level::Info,
            epoch: Some(e.epoch),
        });
    }
    fired
}

#[cfg(test)]
mod tests {
    use herald_event::Metrics;

    use super::*;
    use crate::runs::Watch;

    fn epoch(epoch: u32, accuracy: f64) -> EpochEnded {
        EpochEnded {
            epoch,
            n_epochs: 5,
            train_loss: 0.5,
            valid_loss: Some(0.4),
            metrics: Metrics(vec![("accuracy".into(), accuracy)]),
            elapsed_s: 1.0,
        }
    }

    fn watch(metric: &str, op: &str, value: f64) -> Watch {
        Watch { metric: metric.into(), op: op.into(), value, by: "@me".into(), added_ms: 1, fired: None }
    }

    #[test]
    fn a_phone_rule_fires_once_at_the_first_crossing_and_never_again() {
        let mut st = RunState::new("r");
        st.watches =
            vec![watch("accuracy", ">=", 0.9), watch("valid_loss", "<", 0.1), watch("nope", ">", 0.0)];
        let fired: Vec<Vec<Option<String>>> = [0.5, f64::NAN, 0.92, 0.5, 0.95]
            .iter()
            .enumerate()
            .map(|(i, acc)| evaluate(&mut st, &epoch(i as u32, *acc)).into_iter().map(|a| a.rule).collect())
            .collect();
        let at_2 = vec![Some("watch accuracy >= 0.9".to_owned())];
        assert_eq!(fired, [vec![], vec![], at_2, vec![], vec![]]);
        assert_eq!(st.watches[0].fired, Some(2));
        assert_eq!((st.watches[1].fired, st.watches[2].fired), (None, None));
        let alert = evaluate(&mut st, &EpochEnded { valid_loss: Some(0.05), ..epoch(5, 0.1) });
        assert_eq!(alert.len(), 1);
        assert_eq!(alert[0].title, "watch valid_loss < 0.1");
        assert_eq!(alert[0].text, "valid_loss 0.05 at epoch 6/5 (watched from the phone by @me)");
        assert_eq!(alert[0].level, Level::Info);
    }
}
