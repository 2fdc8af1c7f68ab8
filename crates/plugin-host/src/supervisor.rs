//! The supervisor of one plugin notifier: runs the child's lives one after another (`child.rs`), waits with
//! exponential backoff between them, and while the child is down answers deliveries at once as retryable.
//!
//! It knows nothing of the protocol; it ends at shutdown or when the notifier is dropped, and then answers
//! what is still queued.

use std::sync::Arc;
use std::time::Duration;

use herald_plugin::DeliveryError;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::child::{self, End};
use crate::shared::{PluginState, Request, Shared, shutting_down};

/// Restart backoff: the first delay, doubled per consecutive failure up to the cap.
const RESTART_BASE: Duration = Duration::from_millis(250);
const RESTART_CAP: Duration = Duration::from_secs(30);

/// Restart delay after `failures` consecutive failures.
fn restart_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    RESTART_BASE.saturating_mul(1u32 << exp).min(RESTART_CAP)
}

/// Run the child, restarting it after each failure, until the notifier stops.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<Request>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    let mut first = true;
    loop {
        if *stop.borrow() {
            break;
        }
        if !first {
            shared.stats().restarts += 1;
        }
        first = false;
        match child::run(&shared, &mut requests, &mut stop).await {
            End::Stopped => break,
            End::Failed { error, delivered } => {
                if delivered {
                    failures = 0;
                }
                failures += 1;
                let delay = restart_delay(failures);
                tracing::warn!(
                    notifier = %shared.name, error = %error, restart_in_ms = delay.as_millis() as u64,
                    "plugin failed; restarting it"
                );
                shared.stats().last_error = Some(error.clone());
                shared.set_state(PluginState::Down);
                let until = Instant::now() + delay;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        request = requests.recv() => match request {
                            Some(r) => {
                                let _ = r.reply.send(Err(DeliveryError::retryable(format!(
                                    "the plugin is down ({error}); restart {} in {:.1} s, and the delivery will be retried",
                                    shared.stats().restarts + 1,
                                    until.saturating_duration_since(Instant::now()).as_secs_f64()
                                )).with_code("plugin_down")));
                            }
                            None => return,
                        },
                        _ = stop.changed() => break,
                    }
                }
            }
        }
    }
    shared.set_state(PluginState::Stopped);
    // Answer what is still queued, so no caller waits for a child that will not come.
    requests.close();
    while let Ok(r) = requests.try_recv() {
        let _ = r.reply.send(Err(shutting_down()));
    }
}
