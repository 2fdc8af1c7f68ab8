//! `cargo xtask bench rules`: what alert rules (issue 15) cost, against the `profiling` build.
//!
//! - the cost of `Rules::evaluate` per `epoch_ended` with 100 rules and per `batch_ended` with one `nan`
//!   rule, and the in-process ingest with and without them: the criterion bench `herald-daemon/benches/rules.rs`,
//!   built with the `profiling` profile so that it shares the daemon's build;
//! - the daemon's ingest throughput over HTTP (four clients, batches of 500, as `bench daemon`) with no rules,
//!   one `nan` rule and 100 rules, side by side: four daemons (two without rules, whose spread is the noise
//!   floor), their phases interleaved over several rounds (the machine is shared and noisy), the median per
//!   daemon. `batch_ended` events are the ingest benchmark's
//!   load; `epoch_ended` events (every event an epoch, the worst case for epoch rules, of a run improving
//!   steadily, so that the rules evaluate without firing) are measured too.
//!
//! Goal: with the rules the ingest throughput drops by less than 5%.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use super::daemon::{CLIENTS, Daemon, PHASE, batch_body, ingest_bodies, profiling_herald, start_sink};
use crate::{cargo, step};

/// Rounds of interleaved phases; the median of each daemon's rounds is reported.
const ROUNDS: usize = 3;
/// Events per POST.
const BATCH: usize = 500;

/// The 100 rules: 20 each of threshold, plateau, diverging, slow_epoch and nan, on the posted metrics (as the
/// criterion bench's).
fn hundred_rules() -> String {
    let mut toml = String::new();
    for i in 0..100 {
        let metric = ["accuracy", "valid_loss", "train_loss", "f1"][i % 4];
        let kind = match i % 5 {
            0 => format!(
                "kind = \"threshold\"\nmetric = \"{metric}\"\nop = \">=\"\nvalue = {}\n",
                0.9 + i as f64 / 1000.0
            ),
            1 => format!("kind = \"plateau\"\nmetric = \"{metric}\"\npatience = {}\n", 3 + i % 5),
            2 => format!("kind = \"diverging\"\nmetric = \"{metric}\"\nfactor = 1.5\n"),
            3 => "kind = \"slow_epoch\"\nfactor = 2.0\n".to_owned(),
            _ => "kind = \"nan\"\n".to_owned(),
        };
        toml.push_str(&format!("\n[[rule]]\nname = \"rule-{i}\"\n{kind}"));
    }
    toml
}

const NAN_RULE: &str = "\n[[rule]]\nname = \"diverged\"\nkind = \"nan\"\n";

/// `n` `epoch_ended` events of run `run` from `first_seq` (the epoch number): a run that improves steadily at a
/// steady pace, so that, past its first epochs, the rules evaluate without firing: the figure is the rules'
/// cost, not that of the alerts they make (each alert is one more event stored and routed).
fn epoch_body(run: &str, first_seq: u64, n: usize) -> Vec<u8> {
    let mut body = String::with_capacity(n * 260);
    for i in 0..n as u64 {
        let seq = first_seq + i;
        let e = seq as f64;
        body.push_str(&format!(
            "{{\"v\":1,\"run\":\"{run}\",\"seq\":{seq},\"time\":\"2026-11-27T10:00:00Z\",\"type\":\"epoch_ended\",\
             \"epoch\":{seq},\"n_epochs\":100000000,\"train_loss\":{},\"valid_loss\":{},\
             \"metrics\":{{\"accuracy\":{},\"f1\":{}}},\"elapsed_s\":10.0}}\n",
            1.0 / (1.0 + e / 50.0),
            1.1 / (1.0 + e / 60.0),
            1.0 - 0.5 / (1.0 + e / 50.0),
            1.0 - 0.6 / (1.0 + e / 50.0),
        ));
    }
    body.into_bytes()
}

/// Makes a POST body: `n` events of a run from a sequence number.
type Body = fn(&str, u64, usize) -> Vec<u8>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `args`: `--no-build` uses the `herald` already built; `--no-criterion` skips the in-process bench.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let bin = profiling_herald(root, args)?;
    if !args.iter().any(|a| a == "--no-criterion") {
        step(
            "bench rules (criterion, profiling build)",
            cargo(&[
                "bench",
                "--profile",
                "profiling",
                "-p",
                "herald-daemon",
                "--bench",
                "rules",
                "--",
                "--warm-up-time",
                "1",
            ]),
        )?;
    }
    let dir = std::env::temp_dir().join(format!("herald-bench-rules-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sink = start_sink(Instant::now(), false)?;
    let notifier = format!(
        "[[notifier]]\nname = \"sink\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook\"\nevents = [\"message\"]\n",
        sink.port
    );
    // Two daemons without rules: the spread between them is the noise floor the rules' figures stand against.
    let configs = [
        ("no rules", String::new()),
        ("no rules 2", String::new()),
        ("1 nan rule", NAN_RULE.to_owned()),
        ("100 rules", hundred_rules()),
    ];
    let mut daemons = Vec::new();
    for (i, (_, rules)) in configs.iter().enumerate() {
        daemons.push(Daemon::start_with(
            &bin,
            &dir.join(format!("d{i}")),
            "",
            &format!("{notifier}{rules}"),
        )?);
    }
    let loads: [(&str, Body); 2] = [("batch_ended", batch_body), ("epoch_ended", epoch_body)];
    // figures[load][daemon]: events/s per round.
    let mut figures = vec![vec![Vec::new(); daemons.len()]; loads.len()];
    for round in 0..ROUNDS {
        for (l, (load, body)) in loads.iter().enumerate() {
            // Each round starts with another daemon, so that none is always first after a pause.
            for k in 0..daemons.len() {
                let d = (round + k) % daemons.len();
                let tag = format!("{load}-r{round}");
                let rate = ingest_bodies(&daemons[d], false, BATCH, &tag, *body)?;
                eprintln!("xtask: round {round}, {load}, {}: {rate:.0} events/s", configs[d].0);
                figures[l][d].push(rate);
            }
        }
    }
    for d in daemons {
        d.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "\nherald rules benchmark: ingest over HTTP, {CLIENTS} clients, batches of {BATCH}, {} s phases, median of {ROUNDS} \
         interleaved rounds (profiling build)",
        PHASE.as_secs()
    );
    for (l, (load, _)) in loads.iter().enumerate() {
        let base = median(figures[l][0].clone());
        for (d, (name, _)) in configs.iter().enumerate() {
            let m = median(figures[l][d].clone());
            let change = (m / base - 1.0) * 100.0;
            let rounds: Vec<String> = figures[l][d].iter().map(|r| format!("{r:.0}")).collect();
            println!(
                "  {load}, {name:<11} {m:>10.0} events/s  {change:>+6.1}%   (rounds: {})",
                rounds.join(", ")
            );
        }
    }
    println!("  goal: with rules, less than 5% slower than with none");
    Ok(())
}
