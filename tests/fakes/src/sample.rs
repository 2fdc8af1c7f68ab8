//! Sample training events and a run that renders them, for the notifier crates' tests.
//!
//! [`started`] and [`epoch`] build the events of a small run (3 epochs of 938 batches, one `accuracy`
//! metric); a test that needs other values overrides fields with struct update syntax
//! (`RunStarted { n_epochs: 300, ..sample::started("digits") }`). [`Run`] renders notifications event by
//! event with the previous receipt, as the daemon does. This module does not fake any service and does not
//! decide what a notifier's output must look like: the assertions stay in each crate's tests.

use herald_event::{EpochEnded, Event, Metrics, Payload, RunStarted};
use herald_plugin::{Image, Notification, Notifier, Receipt, RunContext, render};

/// A run named `name` starting on `gpu-box` (pid 4242): 3 epochs of 938 batches, metric `accuracy`.
pub fn started(name: &str) -> RunStarted {
    RunStarted {
        name: name.into(),
        host: "gpu-box".into(),
        pid: 4242,
        rank: 0,
        job: None,
        world_size: None,
        n_epochs: 3,
        batches_per_epoch: 938,
        metric_names: vec!["accuracy".into()],
        hyper: Default::default(),
    }
}

/// Epoch `n` of 3 ending: train loss `0.5 / (n + 1)`, valid loss 0.4, accuracy 0.9, 5 s.
pub fn epoch(n: u32) -> EpochEnded {
    EpochEnded {
        epoch: n,
        n_epochs: 3,
        train_loss: 0.5 / f64::from(n + 1),
        valid_loss: Some(0.4),
        metrics: Metrics(vec![("accuracy".into(), 0.9)]),
        elapsed_s: 5.0,
    }
}

/// A `loss.png` image: the PNG signature's first bytes followed by `tail`.
pub fn png(tail: &[u8]) -> Image {
    let mut bytes = vec![0x89, b'P', b'N', b'G'];
    bytes.extend_from_slice(tail);
    Image { filename: "loss.png".into(), mime: "image/png".into(), bytes }
}

/// A run rendered event by event with the previous receipt, as the daemon does.
pub struct Run {
    id: String,
    ctx: RunContext,
    previous: Option<Receipt>,
    seq: u64,
}

impl Run {
    /// A run with id `id` and no events yet.
    pub fn new(id: &str) -> Run {
        Run { id: id.into(), ctx: RunContext::new(id), previous: None, seq: 0 }
    }

    /// The run's context, for a test that sets up a state no short event sequence reaches.
    pub fn context(&mut self) -> &mut RunContext {
        &mut self.ctx
    }

    /// The notification for the run's next event, `payload`, with the previous delivery's receipt.
    pub fn note(&mut self, payload: impl Into<Payload>, image: Option<Image>) -> Notification {
        let event = Event::now(self.id.clone(), self.seq, payload);
        self.seq += 1;
        let n = render::notification(&self.ctx, &event, self.previous.clone(), image, 1);
        self.ctx.apply(&event);
        n
    }

    /// Render the next event and deliver it with `n`, keeping the receipt for the next one.
    ///
    /// # Panics
    ///
    /// When the delivery fails: the tests that use this expect it to succeed.
    pub async fn deliver(
        &mut self,
        n: &dyn Notifier,
        payload: impl Into<Payload>,
        image: Option<Image>,
    ) -> Receipt {
        let note = self.note(payload, image);
        let receipt = n.deliver(&note).await.expect("the test's delivery succeeds");
        self.previous = Some(receipt.clone());
        receipt
    }
}
