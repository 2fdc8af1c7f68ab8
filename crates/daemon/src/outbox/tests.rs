//! The [`Outbox`] contract, checked against both implementations, and what only the file outbox does
//! (failing whole, reopening, refusing a second opener).

use herald_event::{BatchEnded, EpochEnded, Message, Metrics};

use super::*;

fn message(run: &str, seq: u64) -> Event {
    Event::now(run, seq, Message { title: "t".into(), text: "x".into(), level: Default::default() })
}

fn job(e: &Event) -> JobRecord {
    JobRecord {
        event: e.clone(),
        attempt: 0,
        not_before_ms: 0,
        created_ms: 1,
        last_error: None,
        digest: false,
    }
}

fn put(notifier: &str, id: u64, e: &Event) -> PutJob {
    PutJob { notifier: notifier.into(), id, job: job(e) }
}

fn done(notifier: &str, id: u64) -> DoneJob {
    DoneJob { notifier: notifier.into(), id }
}

/// Each implementation, freshly made (the file one in its own temp folder).
fn outboxes() -> Vec<(&'static str, Box<dyn Outbox>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = RedbOutbox::open(&dir.path().join("state")).expect("open");
    vec![("redb", Box::new(file), Some(dir)), ("memory", Box::new(MemoryOutbox::new()), None)]
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

#[test]
fn events_are_deduplicated_by_run_and_seq() {
    block_on(async {
        for (name, store, _dir) in outboxes() {
            let mut batch = Event::now(
                "r",
                2,
                BatchEnded { epoch: 0, batch: 1, n_batches: 3, loss: 1.0, smooth_loss: 0.5, lr: 0.1 },
            );
            batch.time = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("a time");
            let keys = vec![("r".to_owned(), 1), ("r".to_owned(), 2), ("q".to_owned(), 1)];
            let firsts: Vec<bool> =
                store.known(keys.clone()).await.expect("read").iter().map(|k| !k).collect();
            assert_eq!(firsts, vec![true, true, true], "{name}");
            let events = vec![message("r", 1), batch, message("q", 1)];
            store.commit(WriteBatch { events, ..WriteBatch::default() }).await.expect("write");
            let again: Vec<bool> =
                store.known(keys[..2].to_vec()).await.expect("read").iter().map(|k| !k).collect();
            assert_eq!(again, vec![false, false], "{name}");
            assert_eq!(store.events("r").await.expect("read").len(), 1, "{name}");
            assert_eq!(
                store.loss_history("r").await.expect("read"),
                vec![LossPoint {
                    seq: 2,
                    epoch: 0,
                    batch: 1,
                    smooth_loss: 0.5,
                    lr: 0.1,
                    wall_ms: 1_800_000_000_000
                }],
                "{name}"
            );
        }
    });
}

#[test]
fn jobs_load_in_id_order_per_notifier_and_vanish_when_done() {
    block_on(async {
        for (name, store, _dir) in outboxes() {
            let mut jobs: Vec<PutJob> = (1..=5).map(|id| put("hook", id, &message("r", id))).collect();
            jobs.push(put("other", 3, &message("r", 3)));
            store
                .commit(WriteBatch { jobs, next_job_id: Some(6), ..WriteBatch::default() })
                .await
                .expect("write");
            let ids = |after, limit| {
                let store = &store;
                async move {
                    let jobs = store.jobs("hook", after, limit).await.expect("read");
                    jobs.into_iter().map(|(id, _)| id).collect::<Vec<u64>>()
                }
            };
            assert_eq!(ids(0, 100).await, vec![1, 2, 3, 4, 5], "{name}");
            assert_eq!(ids(2, 2).await, vec![3, 4], "{name}");
            assert_eq!(ids(u64::MAX, 2).await, Vec::<u64>::new(), "{name}");
            assert_eq!(store.next_job_id().await.expect("read"), 6, "{name}");
            let receipt = ReceiptRecord {
                notifier: "hook".into(),
                run: "r".into(),
                seq: 2,
                receipt: Receipt(serde_json::json!({"id": 7})),
            };
            let committed = store
                .commit(WriteBatch {
                    done: vec![done("hook", 2), done("hook", 2)],
                    receipts: vec![receipt],
                    ..WriteBatch::default()
                })
                .await
                .expect("write");
            assert_eq!(committed.removed, vec![true, false], "{name}");
            assert_eq!(ids(0, 100).await, vec![1, 3, 4, 5], "{name}");
            assert_eq!(store.job_counts().await.expect("read").get("hook"), Some(&4), "{name}");
            assert_eq!(
                store.latest_receipt("hook", "r").await.expect("read"),
                Some(Receipt(serde_json::json!({"id": 7}))),
                "{name}"
            );
            assert_eq!(store.latest_receipt("other", "r").await.expect("read"), None, "{name}");
        }
    });
}

#[test]
fn the_latest_receipt_is_the_highest_sequence_number_and_forgetting_a_run_clears_it() {
    block_on(async {
        for (name, store, _dir) in outboxes() {
            let receipt = |run: &str, seq: u64| ReceiptRecord {
                notifier: "tg".into(),
                run: run.into(),
                seq,
                receipt: Receipt(serde_json::json!({ "seq": seq })),
            };
            let receipts = vec![receipt("r", 5), receipt("r", 12), receipt("r", 9), receipt("q", 1)];
            let runs = vec![("r".to_owned(), RunState::new("r"))];
            store.commit(WriteBatch { receipts, runs, ..WriteBatch::default() }).await.expect("write");
            let latest = store.latest_receipt("tg", "r").await.expect("read");
            assert_eq!(latest, Some(Receipt(serde_json::json!({ "seq": 12 }))), "{name}");
            let forget = vec!["r".to_owned()];
            store.commit(WriteBatch { forget, ..WriteBatch::default() }).await.expect("write");
            assert_eq!(store.latest_receipt("tg", "r").await.expect("read"), None, "{name}");
            assert!(store.latest_receipt("tg", "q").await.expect("read").is_some(), "{name}");
            assert!(store.runs().await.expect("read").is_empty(), "{name}");
        }
    });
}

#[test]
fn give_ups_keep_the_latest() {
    block_on(async {
        for (name, store, _dir) in outboxes() {
            let give_ups = (0..GIVE_UPS_KEPT as u64 + 5)
                .map(|id| {
                    let g = GiveUp {
                        notifier: "hook".into(),
                        run: "r".into(),
                        seq: id,
                        kind: "message".into(),
                        error: "no".into(),
                        attempts: 1,
                        at_ms: id,
                    };
                    (id, g)
                })
                .collect();
            store.commit(WriteBatch { give_ups, ..WriteBatch::default() }).await.expect("write");
            let kept = store.give_ups().await.expect("read");
            assert_eq!(kept.len(), GIVE_UPS_KEPT, "{name}");
            assert_eq!(kept.first().map(|g| g.seq), Some(5), "{name}");
        }
    });
}

#[test]
fn a_failed_write_keeps_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RedbOutbox::open(dir.path()).expect("open");
    // An epoch time must be a finite number on the wire: this event cannot be encoded.
    let bad = Event::now(
        "r",
        2,
        EpochEnded {
            epoch: 0,
            n_epochs: 1,
            train_loss: 1.0,
            valid_loss: None,
            metrics: Metrics::default(),
            elapsed_s: f64::NAN,
        },
    );
    // The first job is written before the second fails to encode: the transaction keeps neither.
    let jobs = vec![put("hook", 1, &message("r", 1)), put("hook", 2, &bad)];
    let batch = WriteBatch { jobs, ..WriteBatch::default() };
    assert!(matches!(store.apply(batch), Err(StoreError::Encode(_))));
    assert!(store.load_jobs("hook", 0, 10).expect("read").is_empty());
}

#[test]
fn the_outbox_survives_reopening_and_refuses_a_second_opener() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    {
        let store = RedbOutbox::open(&state).expect("open");
        let batch = WriteBatch { jobs: vec![put("hook", 1, &message("r", 1))], ..WriteBatch::default() };
        store.apply(batch).expect("write");
        assert!(matches!(RedbOutbox::open(&state), Err(StoreError::InUse { .. })));
    }
    let store = RedbOutbox::open(&state).expect("reopen");
    assert_eq!(store.load_jobs("hook", 0, 10).expect("read").len(), 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&state).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn an_outbox_from_before_lr_was_kept_still_reads_its_loss_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    {
        let db = redb::Database::create(state.join("outbox.redb")).expect("create");
        let txn = db.begin_write().expect("write");
        {
            let legacy: redb::TableDefinition<(&str, u64), (u32, u64, f64)> =
                redb::TableDefinition::new("loss");
            let mut t = txn.open_table(legacy).expect("table");
            t.insert(("r", 1), (0, 0, 0.9)).expect("insert");
            t.insert(("r", 3), (0, 2, 0.7)).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = RedbOutbox::open(&state).expect("open");
    let mut batch = Event::now(
        "r",
        2,
        BatchEnded { epoch: 0, batch: 1, n_batches: 3, loss: 1.0, smooth_loss: 0.8, lr: 0.1 },
    );
    batch.time = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("a time");
    block_on(async {
        store.commit(WriteBatch { events: vec![batch], ..WriteBatch::default() }).await.expect("write");
        let known = store.known(vec![("r".to_owned(), 1), ("r".to_owned(), 4)]).await.expect("read");
        assert_eq!(known, vec![true, false], "old points still count as stored");
        let h = store.loss_history("r").await.expect("read");
        assert_eq!(
            h.iter().map(|p| (p.seq, p.smooth_loss)).collect::<Vec<_>>(),
            [(1, 0.9), (2, 0.8), (3, 0.7)]
        );
        assert!(h[0].lr.is_nan() && h[0].wall_ms == 0, "no lr or time for old points");
        assert_eq!((h[1].lr, h[1].wall_ms), (0.1, 1_800_000_000_000));
        store.commit(WriteBatch { forget: vec!["r".into()], ..WriteBatch::default() }).await.expect("forget");
        assert!(store.loss_history("r").await.expect("read").is_empty(), "forgetting clears both tables");
    });
}
