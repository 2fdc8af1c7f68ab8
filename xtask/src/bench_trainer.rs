//! `cargo xtask bench trainer`: herald-tch against plain PyTorch and fastai, side by side in one run.
//!
//! Same model (MLP 64-128-10), same digits split (written by the herald-tch run), batch size 32, one-cycle to
//! max lr 1e-2, 20 epochs, one intra-op thread, CPU. Three ways: herald-tch `fit_one_cycle` with the
//! Recorder, an EventEmitter and the progress callback (and the same loop with no callbacks, for the hook
//! overhead); fastai 2.8.12 `fit_one_cycle` with the progress bar off; a plain PyTorch 2.13 loop with
//! OneCycleLR. Each reports the seconds per epoch of each of its fits (herald-tch alternates its two loops);
//! this prints the best and the median of each and the ratios (of the best) against the goals. fastai is
//! installed into `.venv` here when missing.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{cargo, step, torch};

const FASTAI_VERSION: &str = "2.8.12";

/// Goals from the issue.
const GOAL_VS_TORCH: f64 = 0.8;
const GOAL_OVERHEAD: f64 = 0.02;
const GOAL_ACC_POINTS: f64 = 0.5;

/// One trainer's result: seconds per epoch (best and median of its fits, wall clock and the training thread's
/// CPU time) and the mean final accuracy.
#[derive(Debug, Clone, Copy)]
struct Figures {
    wall: Spread,
    cpu: Spread,
    accuracy: f64,
}

#[derive(Debug, Clone, Copy)]
struct Spread {
    best: f64,
    median: f64,
}

impl Spread {
    fn of(v: &serde_json::Value) -> Result<Spread> {
        let mut runs: Vec<f64> = v
            .as_array()
            .context("no timed runs in a benchmark result")?
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .collect();
        if runs.is_empty() {
            bail!("a benchmark result has no timed runs");
        }
        runs.sort_by(f64::total_cmp);
        Ok(Spread { best: runs[0], median: runs[runs.len() / 2] })
    }
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let epochs = flag(args, "--epochs").unwrap_or("20").to_owned();
    let reps = flag(args, "--reps").unwrap_or("5").to_owned();
    crate::setup::run(root)?;
    ensure_fastai(root)?;
    step(
        "build the herald-tch bench (profiling)",
        cargo(&["build", "--profile=profiling", "--quiet", "-p", "herald-tch", "--example", "bench_trainer"]),
    )?;
    let out = root.join("bench-out");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let data = root.join("data/digits.csv.gz");
    let split = out.join("split.json");
    let common = |json: &Path| -> Vec<String> {
        vec![
            "--data".into(),
            data.display().to_string(),
            "--json".into(),
            json.display().to_string(),
            "--epochs".into(),
            epochs.clone(),
            "--bs".into(),
            "32".into(),
            "--lr".into(),
            "1e-2".into(),
            "--threads".into(),
            "1".into(),
            "--reps".into(),
            reps.clone(),
        ]
    };

    let target = crate::target_dir(root);
    let herald_bin = target.join("profiling/examples/bench_trainer");
    let herald_json = out.join("herald.json");
    let torch_json = out.join("torch.json");
    let fastai_json = out.join("fastai.json");
    let py = torch::python(root);
    let bench_dir = root.join("xtask/bench");

    eprintln!("xtask: herald-tch ({reps} fits with every callback, {reps} with none)");
    quiet(Command::new(&herald_bin).args(common(&herald_json)).arg("--split-out").arg(&split), "herald-tch")?;
    let herald = read_json(&herald_json)?;
    eprintln!("xtask: plain PyTorch ({reps} fits)");
    quiet(
        Command::new(&py)
            .arg(bench_dir.join("plain_torch.py"))
            .args(common(&torch_json))
            .arg("--split")
            .arg(&split),
        "plain PyTorch",
    )?;
    eprintln!("xtask: fastai {FASTAI_VERSION} ({reps} fits)");
    quiet(
        Command::new(&py)
            .arg(bench_dir.join("fastai_digits.py"))
            .args(common(&fastai_json))
            .arg("--split")
            .arg(&split),
        "fastai",
    )?;

    let full = figures(&herald, "all_callbacks")?;
    let bare = figures(&herald, "no_callbacks")?;
    let plain = figures(&read_json(&torch_json)?, "")?;
    let fastai = figures(&read_json(&fastai_json)?, "")?;
    let n_train = herald["n_train"].as_u64().unwrap_or(0);
    let n_valid = herald["n_valid"].as_u64().unwrap_or(0);

    println!(
        "trainer benchmark: MLP 64-128-10 on digits ({n_train} train / {n_valid} valid), bs 32, {epochs} epochs, \
         one-cycle max lr 1e-2, 1 thread, CPU; {reps} fits each"
    );
    println!(
        "per epoch: best of the fits (median); cpu = the training thread's CPU time, which load from other \
         processes disturbs least; ratios use the best cpu figures"
    );
    println!(
        "accuracy: mean final validation accuracy over the fits (fit i seeds weights and shuffles with 42 + i)"
    );
    println!(
        "{:<32} {:>21} {:>21} {:>11} {:>9}",
        "", "cpu ms/epoch", "wall ms/epoch", "vs PyTorch", "accuracy"
    );
    for (name, f) in [
        ("herald-tch, all callbacks", full),
        ("herald-tch, no callbacks", bare),
        ("plain PyTorch 2.13 + OneCycleLR", plain),
        ("fastai 2.8.12 fit_one_cycle", fastai),
    ] {
        println!(
            "{name:<32} {:>9.2} ({:>9.2}) {:>9.2} ({:>9.2}) {:>10.2}x {:>9.4}",
            f.cpu.best * 1e3,
            f.cpu.median * 1e3,
            f.wall.best * 1e3,
            f.wall.median * 1e3,
            f.cpu.best / plain.cpu.best,
            f.accuracy
        );
    }
    let vs_torch = full.cpu.best / plain.cpu.best;
    let vs_fastai = fastai.cpu.best / full.cpu.best;
    let overhead = full.cpu.best / bare.cpu.best - 1.0;
    let paired = paired_overhead(&herald)?;
    let acc_gap = (full.accuracy - fastai.accuracy).abs() * 100.0;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "herald-tch / PyTorch: {vs_torch:.2}x (goal <= {GOAL_VS_TORCH}x: {})",
        verdict(vs_torch <= GOAL_VS_TORCH)
    );
    println!("herald-tch is {vs_fastai:.1}x faster than fastai (goal >= 4x: {})", verdict(vs_fastai >= 4.0));
    println!(
        "hook overhead (all callbacks vs none): best {:+.2}%, median of paired fits {:+.2}% (goal <= {:.0}% for both: {})",
        overhead * 100.0,
        paired * 100.0,
        GOAL_OVERHEAD * 100.0,
        verdict(overhead.max(paired) <= GOAL_OVERHEAD)
    );
    println!(
        "accuracy gap to fastai: {acc_gap:.2} points (goal <= {GOAL_ACC_POINTS}: {})",
        verdict(acc_gap <= GOAL_ACC_POINTS)
    );
    Ok(())
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// Installs fastai (keeping torch at the version tch needs) when `import fastai` does not give the version.
fn ensure_fastai(root: &Path) -> Result<()> {
    let py = torch::python(root);
    let version = Command::new(&py)
        .args(["-c", "import fastai; print(fastai.__version__)"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if version.as_deref() == Some(FASTAI_VERSION) {
        return Ok(());
    }
    let mut cmd = Command::new(&py);
    cmd.args(["-m", "pip", "install", "--quiet"])
        .arg(format!("fastai=={FASTAI_VERSION}"))
        .arg(format!("torch=={}", torch::TORCH_VERSION));
    step("pip install fastai", cmd)
}

/// Runs a benchmark process with its stdout (table rows) discarded; fails with its stderr.
fn quiet(cmd: &mut Command, name: &str) -> Result<()> {
    // No __pycache__ beside the scripts in the source tree.
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot start {name}"))?;
    if !out.status.success() {
        bail!("{name} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The median over fit pairs (herald-tch runs them back to back, alternating which goes first) of
/// `cpu(all callbacks) / cpu(none) - 1`: slow drift of the machine cancels within a pair.
fn paired_overhead(herald: &serde_json::Value) -> Result<f64> {
    let runs = |key: &str| -> Vec<f64> {
        herald[key]["cpu_runs"]
            .as_array()
            .map_or_else(Vec::new, |a| a.iter().filter_map(|v| v.as_f64()).collect())
    };
    let mut ratios: Vec<f64> =
        runs("all_callbacks").iter().zip(runs("no_callbacks")).map(|(f, b)| f / b - 1.0).collect();
    if ratios.is_empty() {
        bail!("the herald-tch result has no paired runs");
    }
    ratios.sort_by(f64::total_cmp);
    Ok(ratios[ratios.len() / 2])
}

fn figures(v: &serde_json::Value, key: &str) -> Result<Figures> {
    let v = if key.is_empty() { v } else { &v[key] };
    let accuracy = v["accuracy"].as_f64().unwrap_or(f64::NAN);
    Ok(Figures { wall: Spread::of(&v["runs"])?, cpu: Spread::of(&v["cpu_runs"])?, accuracy })
}
