//! The renderings checked over every event type: the same facts in the title, text, HTML and Markdown,
//! hostile strings escaped, long tables and tracebacks cut from the top, extreme numbers without a panic.

use herald_event::{
    Alert, BatchEnded, Best, EpochEnded, EpochStarted, Heartbeat, Message, Metrics, RunFailed, RunFinished,
    RunLost, RunStalled, RunStarted,
};

use super::*;

fn started(name: &str) -> RunStarted {
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
        hyper: [("lr".to_owned(), serde_json::json!(0.001)), ("model".to_owned(), serde_json::json!("mlp"))]
            .into_iter()
            .collect(),
    }
}

fn epoch(n: u32, train: f64, valid: f64, acc: f64) -> EpochEnded {
    EpochEnded {
        epoch: n,
        n_epochs: 3,
        train_loss: train,
        valid_loss: Some(valid),
        metrics: Metrics(vec![("accuracy".into(), acc)]),
        elapsed_s: 5.2,
    }
}

/// A run that started and finished two epochs, as the daemon's context holds it.
fn ctx(name: &str) -> RunContext {
    let mut ctx = RunContext::from_started("run-1", &started(name));
    ctx.apply(&Event::now("run-1", 1, epoch(0, 0.100888, 0.058969, 0.978901)));
    ctx.apply(&Event::now("run-1", 2, epoch(1, 0.05, 0.04, 0.985)));
    ctx
}

const TABLE: &str = "epoch     train_loss  valid_loss  accuracy  time\n\
                     0         0.100888    0.058969    0.978901  00:05\n\
                     1         0.050000    0.040000    0.985000  00:05";

struct Case {
    payload: Payload,
    title: &'static str,
    text: String,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            payload: started("digits").into(),
            title: "digits: started",
            text: "digits on gpu-box started (pid 4242)\n3 epochs × 938 batches\nmetrics: accuracy\n\
                   lr=0.001 · model=mlp"
                .into(),
        },
        Case {
            payload: EpochStarted { epoch: 2 }.into(),
            title: "digits: epoch 3/3 started",
            text: "digits on gpu-box: epoch 3/3 started".into(),
        },
        Case {
            payload: BatchEnded { epoch: 0, batch: 9, n_batches: 938, loss: 0.5, smooth_loss: 0.6, lr: 0.001 }
                .into(),
            title: "digits: epoch 1 batch 10/938",
            text: "epoch 1 · batch 10/938 · loss 0.500000 · smooth 0.600000 · lr 0.001\ndigits on gpu-box".into(),
        },
        Case {
            // Replays epoch 1: the table keeps one row for it.
            payload: epoch(1, 0.05, 0.04, 0.985).into(),
            title: "digits: epoch 2/3",
            text: format!(
                "epoch 2/3 · train 0.050000 · valid 0.040000 · accuracy 0.985000 · 00:05\n\
                 digits on gpu-box\n\n{TABLE}"
            ),
        },
        Case {
            payload: RunFinished {
                status: RunStatus::Completed,
                reason: "all epochs done".into(),
                duration_s: 3723.0,
                best: Some(Best { name: "accuracy".into(), value: 0.985, epoch: 1 }),
            }
            .into(),
            title: "digits: completed",
            text: format!(
                "digits on gpu-box completed after 1:02:03 (epoch 2/3): all epochs done\n\
                 best accuracy 0.985000 at epoch 2\n\n{TABLE}"
            ),
        },
        Case {
            payload: RunFinished { status: RunStatus::Stopped, reason: "stop requested".into(), duration_s: 65.0, best: None }
                .into(),
            title: "digits: stopped",
            text: format!("digits on gpu-box stopped after 01:05 (epoch 2/3): stop requested\n\n{TABLE}"),
        },
        Case {
            payload: RunFailed {
                error: "CUDA out of memory".into(),
                traceback: Some("Traceback (most recent call last):\n  File \"train.py\", line 3\nRuntimeError: CUDA out of memory\n".into()),
            }
            .into(),
            title: "digits: failed",
            text: format!(
                "digits on gpu-box failed after epoch 2/3\nCUDA out of memory\n\n{TABLE}\n\n\
                 traceback:\nTraceback (most recent call last):\n  File \"train.py\", line 3\n\
                 RuntimeError: CUDA out of memory"
            ),
        },
        Case {
            payload: Message { title: "checkpoint".into(), text: "saved to /ckpt/3.pt".into(), level: Level::Info }.into(),
            title: "checkpoint",
            text: "saved to /ckpt/3.pt\n(digits on gpu-box)".into(),
        },
        Case {
            payload: Message { title: "disk".into(), text: "90% full".into(), level: Level::Warning }.into(),
            title: "warning: disk",
            text: "90% full\n(digits on gpu-box)".into(),
        },
        Case {
            payload: Heartbeat {}.into(),
            title: "digits: alive",
            text: "digits on gpu-box is alive".into(),
        },
        Case {
            payload: RunStalled { silent_s: 1023.4, stall_after_s: 900.0 }.into(),
            title: "digits: stalled",
            text: format!(
                "no event from digits on gpu-box for 17m3s (stall_after 15m)\n\
                 last: epoch 2/3 · train 0.050000 · valid 0.040000 · accuracy 0.985000 · 00:05\n\n{TABLE}"
            ),
        },
        Case {
            payload: RunLost { pid: 4242, reason: "the process exited without reporting".into() }.into(),
            title: "digits: lost",
            text: format!(
                "digits on gpu-box lost at epoch 2/3 (pid 4242): the process exited without reporting\n\n{TABLE}"
            ),
        },
        Case {
            payload: Alert {
                rule: Some("diverged".into()),
                title: "NaN loss".into(),
                text: "batch 2 of epoch 2 has a NaN loss".into(),
                level: Level::Error,
                epoch: Some(1),
            }
            .into(),
            title: "error: digits: NaN loss",
            text: "batch 2 of epoch 2 has a NaN loss\ndigits on gpu-box at epoch 2 (rule diverged)".into(),
        },
        Case {
            payload: herald_event::RankStalled {
                job: "j7".into(),
                ranks: vec![herald_event::RankSeen {
                    rank: 2,
                    host: "gpu-b".into(),
                    silent_s: 904.2,
                    last: herald_event::EventKind::EpochEnded,
                    epoch: Some(2),
                }],
                all: false,
                stall_after_s: 900.0,
            }
            .into(),
            title: "digits: rank 2 stalled",
            text: format!(
                "rank 2 on gpu-b: silent for 15m4s in epoch 3, last epoch_ended\njob j7 (stall_after 15m)\n\n{TABLE}"
            ),
        },
        Case {
            payload: herald_event::RankLost {
                job: "j7".into(),
                rank: 1,
                host: "gpu-a".into(),
                pid: 4248,
                reason: "the process exited without reporting".into(),
            }
            .into(),
            title: "digits: rank 1 lost",
            text: format!(
                "rank 1 on gpu-a (pid 4248): the process exited without reporting\njob j7\n\n{TABLE}"
            ),
        },
        Case {
            payload: herald_event::RankFailed {
                job: "j7".into(),
                rank: 3,
                host: "gpu-b".into(),
                error: "CUDA out of memory".into(),
                traceback: None,
            }
            .into(),
            title: "digits: rank 3 failed",
            text: "rank 3 on gpu-b failed\nCUDA out of memory".into(),
        },
        Case {
            payload: herald_event::RankSlow {
                job: "j7".into(),
                rank: 3,
                host: "gpu-b".into(),
                epoch: 4,
                elapsed_s: 7.2,
                median_s: 5.2,
                factor: 1.5,
            }
            .into(),
            title: "digits: rank 3 slow",
            text: "rank 3 on gpu-b: epoch 5 took 00:07 against a median of 00:05 (+38%, over 1.5×)".into(),
        },
        Case {
            payload: herald_event::RanksMissing {
                job: "j7".into(),
                world_size: 4,
                seen: vec![0, 1, 2],
                missing: vec![3],
                after_s: 900.1,
            }
            .into(),
            title: "digits: ranks missing",
            text: "3/4 ranks started within 15m; missing: 3".into(),
        },
    ]
}

#[test]
fn every_event_type_renders() {
    let context = ctx("digits");
    let cases = cases();
    let mut kinds: Vec<_> = cases.iter().map(|c| c.payload.kind()).collect();
    kinds.dedup();
    assert_eq!(kinds.len(), herald_event::EventKind::ALL.len(), "a case per event type");
    for case in cases {
        let event = Event::now("run-1", 7, case.payload.clone());
        let n = notification(&context, &event, None, None, 1);
        assert_eq!(n.title, case.title, "{:?}", case.payload.kind());
        assert_eq!(n.text, case.text, "{:?}", case.payload.kind());
        assert!(n.html.starts_with(&format!("<b>{}</b>", escape_html(case.title))), "{}", n.html);
        assert!(n.markdown.starts_with("**"), "{}", n.markdown);
        if n.text.contains("train_loss") {
            assert!(n.html.contains("<pre>epoch     train_loss"), "{}", n.html);
            assert!(n.markdown.contains("```\nepoch     train_loss"), "{}", n.markdown);
        }
        assert_eq!(n.event, event);
        assert_eq!(n.attempt, 1);
    }
}

#[test]
fn a_jobs_health_line_goes_under_rank_zeros_epoch_and_end() {
    let mut context = ctx("digits");
    context.health = Some("3/3 ranks · slowest: rank 2 on gpu-b, +38%".into());
    let n = notification(&context, &Event::now("run-1", 3, epoch(2, 0.04, 0.03, 0.99)), None, None, 1);
    assert!(n.text.contains("digits on gpu-box\n3/3 ranks · slowest: rank 2 on gpu-b, +38%\n"), "{}", n.text);
    let end =
        RunFinished { status: RunStatus::Completed, reason: String::new(), duration_s: 9.0, best: None };
    let n = notification(&context, &Event::now("run-1", 4, end), None, None, 1);
    assert!(n.text.contains("\n3/3 ranks · slowest"), "{}", n.text);
}

#[test]
fn epoch_ended_adds_its_row_when_the_caller_did_not() {
    let context = RunContext::from_started("r", &started("digits"));
    let n = notification(&context, &Event::now("r", 1, epoch(0, 0.1, 0.2, 0.9)), None, None, 2);
    assert_eq!(n.run.epochs.len(), 1);
    assert!(n.text.ends_with("\n0         0.100000    0.200000    0.900000  00:05"), "{}", n.text);
    assert_eq!(n.attempt, 2);
}

#[test]
fn hostile_strings_are_escaped() {
    let hostile = "<b>&\"x\"";
    let mut s = started(hostile);
    s.host = "<i>host</i>".into();
    s.metric_names = vec!["<acc>".into()];
    let mut context = RunContext::from_started("r", &s);
    context.apply(&Event::now(
        "r",
        1,
        EpochEnded {
            epoch: 0,
            n_epochs: 1,
            train_loss: 1.0,
            valid_loss: None,
            metrics: Metrics(vec![("<acc>".into(), 0.5)]),
            elapsed_s: 1.0,
        },
    ));
    let payloads: Vec<Payload> = vec![
        s.clone().into(),
        epoch(0, 1.0, 1.0, 1.0).into(),
        RunFailed { error: "<script>".into(), traceback: Some("</pre><b>".into()) }.into(),
        Message { title: "<t>".into(), text: "a & b".into(), level: Level::Error }.into(),
        RunLost { pid: 1, reason: "<gone>".into() }.into(),
    ];
    for payload in payloads {
        let n = notification(&context, &Event::now("r", 2, payload), None, None, 1);
        let stripped =
            n.html.replace("<b>", "").replace("</b>", "").replace("<pre>", "").replace("</pre>", "");
        assert!(!stripped.contains('<') && !stripped.contains('>'), "unescaped markup: {}", n.html);
        assert!(!stripped.contains('"'), "unescaped quote: {}", n.html);
        assert!(n.html.contains("&lt;b&gt;&amp;&quot;x&quot;") || n.title.starts_with("error"), "{}", n.html);
        let prose = n.markdown.split("```").step_by(2).collect::<String>();
        assert!(!prose.contains("<b>") && !prose.contains("<script>"), "{}", n.markdown);
    }
    assert_eq!(escape_html(hostile), "&lt;b&gt;&amp;&quot;x&quot;");
    assert_eq!(escape_markdown("*a_b* [x](y) `c`"), "\\*a\\_b\\* \\[x\\](y) \\`c\\`");
    assert_eq!(escape_code_block("a```b"), "a'''b");
}

#[test]
fn long_tables_and_tracebacks_are_cut_from_the_top() {
    let mut context = RunContext::from_started("r", &started("digits"));
    for i in 0..(MAX_TABLE_ROWS as u32 + 5) {
        context.apply(&Event::now("r", u64::from(i), epoch(i, 0.1, 0.1, 0.1)));
    }
    let tb: String = (0..100).map(|i| format!("line {i}\n")).collect();
    let event = Event::now("r", 99, RunFailed { error: "boom".into(), traceback: Some(tb) });
    let n = notification(&context, &event, None, None, 1);
    assert!(n.text.contains("(5 earlier epochs not shown)\n5         "), "{}", n.text);
    assert!(n.text.contains("(60 earlier lines not shown)\nline 60\n"), "{}", n.text);
    assert!(n.text.ends_with("line 99"), "{}", n.text);
}

#[test]
fn extreme_numbers_do_not_panic() {
    let mut e = epoch(u32::MAX, f64::NAN, f64::INFINITY, -0.0);
    e.n_epochs = u32::MAX;
    let payloads: Vec<Payload> = vec![
        e.clone().into(),
        EpochStarted { epoch: u32::MAX }.into(),
        BatchEnded {
            epoch: u32::MAX,
            batch: u64::MAX,
            n_batches: u64::MAX,
            loss: f64::NAN,
            smooth_loss: 1e300,
            lr: 0.0,
        }
        .into(),
        RunFinished {
            status: RunStatus::Completed,
            reason: String::new(),
            duration_s: f64::MAX,
            best: Some(Best { name: "x".into(), value: 1.0, epoch: u32::MAX }),
        }
        .into(),
        RunStalled { silent_s: f64::MAX, stall_after_s: -1.0 }.into(),
    ];
    let mut context = RunContext::new("r");
    context.apply(&Event::now("r", 0, e));
    for payload in payloads {
        let n = notification(&context, &Event::now("r", u64::MAX, payload), None, None, u32::MAX);
        assert!(!n.title.is_empty());
    }
    assert!(summary(&epoch(u32::MAX, 1.0, 1.0, 1.0)).starts_with("epoch 4294967296/3 · train 1.000000"));
}

#[test]
fn with_table_renders_the_compact_table_or_keeps_the_full_one() {
    let context = ctx("digits");
    let event = Event::now("run-1", 3, epoch(1, 0.05, 0.04, 0.985));
    let n = notification(&context, &event, None, None, 1);
    assert!(matches!(with_table(&n, TableLayout::Full), Cow::Borrowed(_)));
    let compact = with_table(&n, TableLayout::Compact);
    let table = "ep  train  valid    acc  time\n 0 0.1009 0.0590 0.9789 00:05\n 1 0.0500 0.0400 0.9850 00:05";
    assert_eq!(
        compact.text,
        format!(
            "epoch 2/3 · train 0.050000 · valid 0.040000 · accuracy 0.985000 · 00:05\ndigits on gpu-box\n\n{table}"
        )
    );
    assert!(compact.html.ends_with(&format!("<pre>{table}</pre>")), "{}", compact.html);
    assert!(compact.markdown.ends_with(&format!("```\n{table}\n```")), "{}", compact.markdown);
    assert_eq!((&compact.title, &compact.run, &compact.event), (&n.title, &n.run, &n.event));
    let started = Event::now("run-1", 0, started("digits"));
    let n = notification(&context, &started, None, None, 1);
    assert_eq!(with_table(&n, TableLayout::Compact).text, n.text, "no table, nothing changes");
}

#[test]
fn carries_previous_receipt_and_image() {
    let previous = Receipt(serde_json::json!({"message_id": 7}));
    let image = Image { filename: "loss.png".into(), mime: "image/png".into(), bytes: vec![1, 2] };
    let event = Event::now("r", 0, Heartbeat {});
    let n = notification(&RunContext::default(), &event, Some(previous.clone()), Some(image.clone()), 3);
    assert_eq!((n.previous, n.image, n.run.name.as_str()), (Some(previous), Some(image), "r"));
    assert_eq!(n.text, "r is alive");
}
