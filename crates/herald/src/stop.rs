//! `herald stop RUN`: ask a run to stop; the daemon hands the request to the trainer with the answer to its
//! next post, and the trainer stops at the end of the current batch. `herald stop JOB` (a distributed job's
//! id, or any of its ranks' run ids) reaches every rank of the job.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

/// Ask a training run to stop (it finishes the current batch, then ends with run_finished "stopped").
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run id (`herald status` lists them), or the job id of a distributed job (every rank stops).
    pub run: String,
    /// Why, as the run's notifications will say.
    #[arg(long, default_value = "stopped with `herald stop`")]
    pub reason: String,
}

pub fn run(config_path: Option<&Path>, args: Args) -> Result<()> {
    let config = crate::serve::load_config(config_path)?;
    let client = crate::serve::client(&config, Duration::from_secs(10))?;
    crate::serve::runtime()?.block_on(client.stop(&args.run, &args.reason))?;
    println!("stop requested for {}: the trainer stops after its next report to the daemon", args.run);
    Ok(())
}
