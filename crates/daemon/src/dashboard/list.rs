//! `GET /v1/runs`: the runs list, one page at a time, filtered by name and state, with the ranks of a
//! distributed job folded into one row per job.
//!
//! The list is built under the run table's lock from references only (state words, sort keys); the full rows
//! ([`RunRow`]) are made for the requested page alone, so a page of 100 out of thousands of runs costs little
//! more than a page out of ten. A job's row is its anchor's (rank 0's) row with a `job` object: ranks seen and
//! expected, the health line notifiers show under the job's table, the job's state and each rank.

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Serialize;

use super::api::{RunRow, row};
use super::{Dash, form_pairs};
use crate::jobs::{self, JobView};
use crate::runs::RunState;
use crate::server::ApiError;
use crate::shared::now_ms;

/// Rows per page when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// The most rows one page may have.
pub const MAX_LIMIT: usize = 1000;

/// One rank of a job's row.
#[derive(Debug, Clone, Serialize)]
pub struct RankRow {
    pub rank: u32,
    pub run: String,
    pub host: String,
    pub state: String,
    pub epochs_done: usize,
    pub last_event_ms: u64,
}

/// What a job's row adds to its anchor's.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// The job id.
    pub job: String,
    /// Ranks seen.
    pub seen: usize,
    /// Ranks expected (the world size), when a rank said.
    pub expected: Option<u32>,
    /// The job's state: the worst of its live ranks (stalled, stopping, running), else how it ended.
    pub state: String,
    /// The health line notifiers show under the job's table: `4/4 ranks · slowest: rank 3 on gpu-b, +38%`.
    pub health: String,
    /// Its ranks, in rank order.
    pub ranks: Vec<RankRow>,
}

/// One row of the list: a run, or a job (its anchor's run with `job` set).
#[derive(Debug, Clone, Serialize)]
pub struct ListRow {
    #[serde(flatten)]
    pub run: RunRow,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobRow>,
}

/// `GET /v1/runs`: the answer.
#[derive(Debug, Serialize)]
pub struct RunList {
    /// The page's rows, heard from most recently first (a job by its latest rank).
    pub runs: Vec<ListRow>,
    /// How many rows matched the filters (a job counts once).
    pub matched: usize,
    /// Rows skipped before this page.
    pub offset: usize,
    /// Rows per page asked for.
    pub limit: usize,
    pub now_ms: u64,
}

/// A run's state word as the list shows it (`stopping` for a running run asked to stop).
fn state_word(st: &RunState) -> &'static str {
    match st.state_word() {
        "running" if st.stop.is_some() => "stopping",
        s => s,
    }
}

/// A job's state word: the worst of its live ranks, else how it ended.
fn job_state(view: &JobView<'_>, runs: &std::collections::HashMap<String, RunState>) -> &'static str {
    let words: Vec<&'static str> =
        view.ranks.values().filter_map(|f| runs.get(f.run)).map(state_word).collect();
    for live in ["stalled", "stopping", "running"] {
        if words.contains(&live) {
            return live;
        }
    }
    if view.finished() || view.ranks.values().all(|f| f.done()) {
        return view.status().as_str();
    }
    "running"
}

/// One entry of the list before its page is cut: a run, or a job's ranks.
enum Entry<'a> {
    Run(&'a str, &'a RunState),
    Job(JobView<'a>, &'static str),
}

/// `GET /v1/runs?name=&state=&limit=&offset=`: `name` matches a part of a run's name or id, or of a job's id
/// or any of its ranks' (any case); `state` is one state word or several separated by commas; `limit` rows
/// (default 100, at most 1000) after skipping `offset`.
pub async fn list_runs(
    State(dash): State<Dash>,
    RawQuery(query): RawQuery,
) -> Result<Json<RunList>, ApiError> {
    let mut name = String::new();
    let mut states: Vec<String> = Vec::new();
    let mut limit = DEFAULT_LIMIT;
    let mut offset = 0usize;
    for (k, v) in form_pairs(query.as_deref().unwrap_or("")) {
        let number = |v: &str| {
            v.parse::<usize>().map_err(|_| ApiError::bad_request(format!("{k} `{v}` is not a number")))
        };
        match k.as_str() {
            "name" => name = v.to_lowercase(),
            "state" => {
                states = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
            }
            "limit" => {
                limit = number(&v)?;
                if !(1..=MAX_LIMIT).contains(&limit) {
                    return Err(ApiError::bad_request(format!(
                        "limit `{v}`: give a number from 1 to {MAX_LIMIT}"
                    )));
                }
            }
            "offset" => offset = number(&v)?,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{k}`: use name, state, limit, offset"
                )));
            }
        }
    }
    let matches = |id: &str, st: &RunState| {
        name.is_empty() || id.to_lowercase().contains(&name) || st.context.name.to_lowercase().contains(&name)
    };
    let table = dash.handle.shared().runs();
    let mut entries: Vec<(u64, &str, Entry<'_>)> = Vec::new();
    for (id, st) in table.iter().filter(|(_, st)| st.job.is_none()) {
        let word = state_word(st);
        if matches(id, st) && (states.is_empty() || states.iter().any(|s| s == word)) {
            entries.push((st.last_event_ms, id, Entry::Run(id, st)));
        }
    }
    let facts = table.iter().filter_map(|(id, st)| st.rank_facts(id, false));
    for view in jobs::group(facts) {
        let Some(anchor) = view.anchor().map(|a| a.run) else { continue };
        let word = job_state(&view, &table);
        let named = name.is_empty()
            || view.job.to_lowercase().contains(&name)
            || view.ranks.values().any(|f| table.get(f.run).is_some_and(|st| matches(f.run, st)));
        if named && (states.is_empty() || states.iter().any(|s| s == word)) {
            let last = view.ranks.values().map(|f| f.last_ms).max().unwrap_or(0);
            entries.push((last, anchor, Entry::Job(view, word)));
        }
    }
    entries.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let matched = entries.len();
    let runs = entries
        .into_iter()
        .skip(offset)
        .take(limit)
        .filter_map(|(_, anchor, entry)| match entry {
            Entry::Run(id, st) => Some(ListRow { run: row(id, st), job: None }),
            Entry::Job(view, word) => {
                let st = table.get(anchor)?;
                let ranks = view
                    .ranks
                    .iter()
                    .filter_map(|(rank, f)| {
                        let st = table.get(f.run)?;
                        Some(RankRow {
                            rank: *rank,
                            run: f.run.to_owned(),
                            host: f.host.to_owned(),
                            state: state_word(st).to_owned(),
                            epochs_done: st.context.epochs.len(),
                            last_event_ms: f.last_ms,
                        })
                    })
                    .collect();
                let job = JobRow {
                    job: view.job.clone(),
                    seen: view.ranks.len(),
                    expected: view.world_size,
                    state: word.to_owned(),
                    health: view.health(),
                    ranks,
                };
                Some(ListRow { run: row(anchor, st), job: Some(job) })
            }
        })
        .collect();
    drop(table);
    Ok(Json(RunList { runs, matched, offset, limit, now_ms: now_ms() }))
}
