//! The live messages `docs/notifiers/telegram.md` shows, one per `table` layout, are what the notifier sends:
//! the same run is delivered through the fake Bot API and the message, as Telegram shows its HTML, is
//! compared with the page's block.

use herald_event::{EpochEnded, Metrics, RunStarted};
use herald_fakes::sample::{self, Run};
use herald_fakes::telegram::FakeTelegram;

use super::{CHAT, notifier, token};

/// The page's block after `<!-- live message, table = "LAYOUT" -->`.
fn documented(layout: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/notifiers/telegram.md");
    let page = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let marker = format!("<!-- live message, table = \"{layout}\" -->\n```text\n");
    let start = page.find(&marker).unwrap_or_else(|| panic!("{path} has no {marker:?}")) + marker.len();
    let block = &page[start..];
    block[..block.find("```").unwrap_or_else(|| panic!("an unclosed block in {path}"))].to_owned()
}

/// The run the page shows: `herald train`'s digits-mlp, three epochs of ten done.
async fn live_message(layout: &str) -> String {
    let fake = FakeTelegram::start(&token()).await;
    let n = notifier(&fake, &format!("table = '{layout}'"));
    let mut run = Run::new("run-doc");
    let started = RunStarted { n_epochs: 10, batches_per_epoch: 45, ..sample::started("digits-mlp") };
    run.deliver(n.as_ref(), started, None).await;
    let rows =
        [(1.028127, 0.453114, 0.877778), (0.412702, 0.214977, 0.938889), (0.214331, 0.160219, 0.955556)];
    for (i, (train, valid, accuracy)) in (0..).zip(rows) {
        let epoch = EpochEnded {
            epoch: i,
            n_epochs: 10,
            train_loss: train,
            valid_loss: Some(valid),
            metrics: Metrics(vec![("accuracy".into(), accuracy)]),
            elapsed_s: 1.2,
        };
        run.deliver(n.as_ref(), epoch, None).await;
    }
    let messages = fake.bot_messages(CHAT);
    assert_eq!(messages.len(), 1, "one live message: {messages:?}");
    format!("{}\n", messages[0].text)
}

#[tokio::test]
async fn the_pages_live_messages_are_what_is_sent() {
    for layout in ["compact", "full"] {
        assert_eq!(live_message(layout).await, documented(layout), "table = {layout:?}");
    }
    let compact = documented("compact");
    let table = compact.lines().skip_while(|l| !l.starts_with("ep ")).collect::<Vec<_>>();
    assert_eq!(table.len(), 4, "{compact}");
    assert!(table.iter().all(|l| l.chars().count() <= herald_plugin::render::COMPACT_WIDTH), "{compact}");
}
