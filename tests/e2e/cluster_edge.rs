//! Cluster mode, end to end, continued (`cluster.rs` has the servers and deliverers): an edge alone
//! against one or three NATS servers (each event once and in order, NATS down and back, one server of three
//! killed, all three down for 20 s), bad settings, and stop requests across machines (Telegram's `/stop` at
//! the leader ending a real `herald train` on an edge, a stop asked at another edge).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{
    Deliverer, Nats, check_once_in_order, edge_config, leader_pid, rt, run_events, stream_events, stream_len,
};
use crate::daemon::{Daemon, batch, free_port, message, started, wait_for};

#[test]
fn cluster_edge_forwards_each_event_once_in_per_run_order() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let nats = Nats::single(&tmp.path().join("nats"));
    let edge_dir = tmp.path().join("edge");
    std::fs::create_dir_all(&edge_dir).expect("edge dir");
    let port = free_port();
    let edge = Daemon::start(&edge_dir, port, &edge_config(&edge_dir, port, &[nats.url()], 1));
    let runs: Vec<String> = (0..3).map(|i| format!("2026-11-30T10:00:00-{i}.a/b")).collect();
    let events: Vec<Vec<(u64, String)>> = runs.iter().map(|r| run_events(r)).collect();
    let mut expected = Vec::new();
    // Interleave the runs, a few events per post; post the first chunk of each run twice (a client retry).
    for chunk in 0..5 {
        for (run, evs) in runs.iter().zip(&events) {
            let part: Vec<&(u64, String)> = evs.iter().skip(chunk * 4).take(4).collect();
            if part.is_empty() {
                continue;
            }
            let body = format!("[{}]", part.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>().join(","));
            let (code, reply) = edge.post(&body);
            assert_eq!(code, 202, "{reply}");
            if chunk == 0 {
                assert_eq!(edge.post(&body).0, 202);
            }
            expected.extend(part.iter().map(|(s, _)| (run.clone(), *s)));
        }
    }
    let n = expected.len() as u64;
    wait_for("every event in the stream", Duration::from_secs(30), || {
        (stream_len(&nats.url()) >= n).then_some(())
    });
    let got = stream_events(&nats.url());
    check_once_in_order(&got, &expected);
    let status = edge.status();
    let slot = status["notifiers"].as_array().and_then(|a| a.first()).cloned().unwrap_or(Value::Null);
    assert_eq!(slot["name"], "cluster", "the edge's only notifier is the forwarder: {status}");
    wait_for("the forwarder's queue to empty", Duration::from_secs(10), || {
        (edge.status()["notifiers"][0]["queue"].as_u64() == Some(0)).then_some(())
    });
}

#[test]
fn cluster_edge_keeps_accepting_while_nats_is_down_and_replays_in_order() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut nats = Nats::single(&tmp.path().join("nats"));
    let edge_dir = tmp.path().join("edge");
    std::fs::create_dir_all(&edge_dir).expect("edge dir");
    let port = free_port();
    let edge = Daemon::start(&edge_dir, port, &edge_config(&edge_dir, port, &[nats.url()], 1));
    let run = "2026-11-30T11:00:00-77-0-c0ffee";
    let events = run_events(run);
    let (before, during) = events.split_at(5);
    let post_all = |evs: &[(u64, String)]| {
        for (_, e) in evs {
            let (code, reply) = edge.post(e);
            assert_eq!(code, 202, "the edge answers 202 whatever NATS does: {reply}");
        }
    };
    post_all(before);
    wait_for("the first events in the stream", Duration::from_secs(30), || {
        (stream_len(&nats.url()) >= before.len() as u64).then_some(())
    });
    nats.kill9();
    // Training goes on while NATS is down: every post is answered at once and the events wait in the outbox.
    let posted = std::time::Instant::now();
    post_all(during);
    assert!(posted.elapsed() < Duration::from_secs(5), "posts waited for NATS: {:?}", posted.elapsed());
    wait_for("the forwarder to see NATS gone", Duration::from_secs(15), || {
        let s = edge.status();
        (s["notifiers"][0]["failed_attempts"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    assert!(edge.status()["notifiers"][0]["queue"].as_u64().unwrap_or(0) >= 1, "events wait in the outbox");
    nats.restart();
    let n = events.len() as u64;
    wait_for("the replay after NATS came back", Duration::from_secs(45), || {
        (stream_len(&nats.url()) >= n).then_some(())
    });
    let expected: Vec<(String, u64)> = events.iter().map(|(s, _)| (run.to_owned(), *s)).collect();
    check_once_in_order(&stream_events(&nats.url()), &expected);
}

#[test]
fn cluster_edge_loses_and_doubles_nothing_when_one_of_three_servers_is_killed_and_restarted() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut servers = Nats::cluster(&tmp.path().join("nats"), 3);
    let urls: Vec<String> = servers.iter().map(Nats::url).collect();
    let edge_dir = tmp.path().join("edge");
    std::fs::create_dir_all(&edge_dir).expect("edge dir");
    let port = free_port();
    let edge = Daemon::start(&edge_dir, port, &edge_config(&edge_dir, port, &urls, 3));
    let runs: Vec<String> = (0..2).map(|i| format!("2026-11-30T12:00:00-{i}-0-ab12")).collect();
    let events: Vec<Vec<(u64, String)>> = runs.iter().map(|r| run_events(r)).collect();
    let mut expected = Vec::new();
    for step in 0..events[0].len() {
        if step == 6 {
            // The first server (the one the edge most likely talks to) dies mid-run.
            servers[0].kill9();
        }
        if step == 12 {
            servers[0].restart();
        }
        for (run, evs) in runs.iter().zip(&events) {
            let (seq, e) = &evs[step];
            assert_eq!(edge.post(e).0, 202);
            expected.push((run.clone(), *seq));
        }
    }
    let n = expected.len() as u64;
    let url = servers[1].url();
    wait_for("every event in the R3 stream", Duration::from_secs(60), || {
        (stream_len(&url) >= n).then_some(())
    });
    check_once_in_order(&stream_events(&url), &expected);
}

#[test]
fn cluster_edge_keeps_answering_while_all_three_servers_are_down_for_20_s_then_replays_in_order() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut servers = Nats::cluster(&tmp.path().join("nats"), 3);
    let urls: Vec<String> = servers.iter().map(Nats::url).collect();
    let edge_dir = tmp.path().join("edge");
    std::fs::create_dir_all(&edge_dir).expect("edge dir");
    let port = free_port();
    let edge = Daemon::start(&edge_dir, port, &edge_config(&edge_dir, port, &urls, 3));
    let runs = ["2026-11-30T13:00:00-1-0-dead01", "2026-11-30T13:00:00-2-0-dead02"];
    let mut expected = Vec::new();
    let mut seq = 0;
    let mut post_step = |expected: &mut Vec<(String, u64)>| {
        for run in runs {
            let event = if seq == 0 { started(run, "elsewhere", 1) } else { batch(run, seq, seq) };
            let asked = std::time::Instant::now();
            let (code, reply) = edge.post(&event);
            assert_eq!(code, 202, "the edge answers 202 whatever NATS does: {reply}");
            assert!(
                asked.elapsed() < Duration::from_secs(2),
                "a post waited for NATS: {:?}",
                asked.elapsed()
            );
            expected.push((run.to_owned(), seq));
        }
        seq += 1;
    };
    for _ in 0..5 {
        post_step(&mut expected);
    }
    let first = expected.len() as u64;
    wait_for("the first events in the R3 stream", Duration::from_secs(30), || {
        (stream_len(&urls[0]) >= first).then_some(())
    });
    for s in &mut servers {
        s.kill9();
    }
    // Training goes on for 20 s with every server down, posting as a trainer does (every 100 ms here).
    let down = std::time::Instant::now();
    while down.elapsed() < Duration::from_secs(20) {
        post_step(&mut expected);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(edge.status()["notifiers"][0]["queue"].as_u64().unwrap_or(0) >= 1, "events wait in the outbox");
    for s in &mut servers {
        s.restart_process();
    }
    for s in &mut servers {
        s.wait_ready();
    }
    let n = expected.len() as u64;
    wait_for("the replay after the servers came back", Duration::from_secs(90), || {
        (stream_len(&urls[1]) >= n).then_some(())
    });
    check_once_in_order(&stream_events(&urls[1]), &expected);
    wait_for("the forwarder's queue to empty", Duration::from_secs(10), || {
        (edge.status()["notifiers"][0]["queue"].as_u64() == Some(0)).then_some(())
    });
}

/// Run `herald serve` with `config` and expect it to stop by itself with an error; returns its output.
fn serve_fails(dir: &Path, config: &str) -> String {
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join("herald.toml");
    std::fs::write(&path, config).expect("write the config");
    let mut child = crate::KillOnDrop(
        crate::herald()
            .arg("--config")
            .arg(&path)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start herald serve"),
    );
    let status = wait_for("herald serve to refuse to start", Duration::from_secs(30), || {
        child.0.try_wait().ok().flatten()
    });
    let mut out = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut out);
    }
    assert!(!status.success(), "herald serve should have failed:\n{out}");
    assert!(!out.contains("panicked"), "a panic instead of an error:\n{out}");
    out
}

#[test]
fn cluster_bad_settings_stop_a_node_with_a_clear_error() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let nats_dir = tmp.path().join("nats");
    std::fs::create_dir_all(&nats_dir).expect("nats dir");
    let nats = Nats::start(&nats_dir, "n1", port, &["--auth".to_owned(), "s3cret".to_owned()]);
    let servers = format!("servers = [\"{}\"]", nats.url());
    let daemon = |dir: &Path| {
        format!(
            "[daemon]\nlisten = \"127.0.0.1:{}\"\nsocket = \"\"\nstate_dir = \"{}/state\"\n",
            free_port(),
            dir.display()
        )
    };
    let hook = "[[notifier]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n";
    let check = |name: &str, cluster: &str, notifier: &str, expected: &str| {
        let dir = tmp.path().join(name);
        let out = serve_fails(&dir, &format!("{}\n[cluster]\n{cluster}\n{notifier}", daemon(&dir)));
        assert!(out.contains(expected), "{name}: expected `{expected}` in:\n{out}");
    };
    check(
        "wrong-token",
        &format!("{servers}\nrole = \"edge\"\ntoken = \"wrong\""),
        "",
        "the servers refused the credentials: check [cluster] token",
    );
    check(
        "no-notifier",
        &format!("{servers}\nrole = \"deliver\"\ntoken = \"s3cret\""),
        "",
        "cluster.role: a deliverer needs at least one [[notifier]]",
    );
    check(
        "unreachable",
        &format!("servers = [\"nats://127.0.0.1:{}\"]\nrole = \"deliver\"", free_port()),
        hook,
        "cannot connect to the NATS servers",
    );
    // A stream of the same name made by something else, with other subjects and retention.
    rt().block_on(async {
        let client = async_nats::ConnectOptions::with_token("s3cret".into())
            .connect(nats.url())
            .await
            .expect("connect with the token");
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "herald-events".into(),
            subjects: vec!["elsewhere.>".into()],
            retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .expect("create the foreign stream");
    });
    check(
        "foreign-stream",
        &format!("{servers}\nrole = \"edge\"\ntoken = \"s3cret\""),
        "",
        "the stream herald-events exists with other settings",
    );
}

#[test]
fn cluster_stop_from_the_phone_at_the_leader_stops_herald_train_on_an_edge() {
    const TOKEN: &str = "777000:E2E-stop_token";
    const CHAT: i64 = 4343;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let bot = runtime.block_on(herald_fakes::telegram::FakeTelegram::start(TOKEN));
    let tmp = tempfile::tempdir().expect("temp dir");
    let nats = Nats::single(&tmp.path().join("nats"));
    let urls = vec![nats.url()];
    let edge_dir = tmp.path().join("edge");
    std::fs::create_dir_all(&edge_dir).expect("edge dir");
    let port = free_port();
    let edge = Daemon::start(&edge_dir, port, &edge_config(&edge_dir, port, &urls, 1));
    let phone = format!(
        "[[notifier]]\nname = \"phone\"\ntype = \"telegram\"\ntoken = \"{TOKEN}\"\nchat_id = {CHAT}\napi_url = \"{}\"\n",
        bot.url
    );
    let leader = Deliverer::with_notifier(&tmp.path().join("d0"), &urls, 1, &phone);
    wait_for("the leader", Duration::from_secs(20), || {
        leader_pid(&nats.url()).filter(|p| Some(*p) == leader.pid())
    });
    // A real trainer on the edge's machine: batch size 1 makes an epoch far longer than a stop takes.
    let mut train = crate::KillOnDrop(
        crate::train::long_train(&edge.config, Some("e2e-cluster-stop"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("start herald train"),
    );
    let run = wait_for("the run at the edge", Duration::from_secs(60), || {
        edge.status()["runs"]
            .as_array()
            .and_then(|runs| runs.first())
            .and_then(|r| r["run"].as_str().map(str::to_owned))
    });
    wait_for("the live message", Duration::from_secs(40), || {
        (!bot.bot_messages(CHAT).is_empty()).then_some(())
    });
    wait_for("the leader to poll for commands", Duration::from_secs(20), || {
        (bot.polls_taken() >= 1).then_some(())
    });
    bot.user_message(CHAT, 5, &format!("/stop {run}"));
    let question = wait_for("the stop question", Duration::from_secs(40), || {
        bot.bot_messages(CHAT).into_iter().find(|m| m.reply_markup.is_some())
    });
    let data = question
        .reply_markup
        .as_ref()
        .and_then(|k| k["inline_keyboard"][0][0]["callback_data"].as_str())
        .expect("a stop button")
        .to_owned();
    bot.press_button(CHAT, question.message_id, 5, &data);
    // The stop goes to the stops bucket, the edge hands it to the run, and herald train ends the run.
    let status = wait_for("herald train to exit after the stop", Duration::from_secs(60), || {
        train.0.try_wait().expect("poll herald train")
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(train.0.stderr.as_mut().expect("piped stderr"), &mut stderr)
        .expect("stderr");
    assert!(status.success(), "herald train: {status}\n{stderr}");
    assert!(stderr.contains("reporting to the daemon at"), "{stderr}");
    // Its run_finished (stopped) reaches the phone through the stream and the leader.
    wait_for("the stopped run on the phone", Duration::from_secs(40), || {
        bot.bot_messages(CHAT).iter().any(|m| m.text.contains("stopped after")).then_some(())
    });
    drop(runtime);
}

#[test]
fn cluster_a_stop_asked_at_another_edge_reaches_the_run_through_the_stops_bucket() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let nats = Nats::single(&tmp.path().join("nats"));
    let urls = vec![nats.url()];
    let start_edge = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("edge dir");
        let port = free_port();
        Daemon::start(&dir, port, &edge_config(&dir, port, &urls, 1))
    };
    let (here, there) = (start_edge("edge-a"), start_edge("edge-b"));
    let run = "2026-11-30T14:00:00-9-0-5709aa";
    assert_eq!(here.post(&started(run, "elsewhere", 1)).0, 202);
    // Asked at the edge the run does not report to: taken for the cluster, not `unknown_run`.
    let path = format!("/v1/runs/{run}/stop");
    let (code, reply) =
        crate::daemon::http(there.port, "POST", &path, &[], br#"{"reason":"asked at edge b"}"#);
    assert!((200..300).contains(&code), "{code}: {reply}");
    let mut seq = 1;
    let reply = wait_for("control.stop at the run's own edge", Duration::from_secs(20), || {
        let (code, reply) = here.post(&message(run, seq, "still training"));
        seq += 1;
        assert_eq!(code, 202, "{reply}");
        (reply["control"][run]["stop"] == true).then_some(reply)
    });
    assert_eq!(reply["control"][run]["reason"], "asked at edge b", "{reply}");
}
