//! `GET /v1/runs` page by page, and a distributed job's ranks folded into one row.

use serde_json::{Value, json};

use super::Dash;
use crate::daemon::{epoch, event, finished, started};

fn ids(body: &Value) -> Vec<String> {
    body["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["run"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn dashboard_runs_list_comes_in_pages_with_filters() {
    let d = Dash::start();
    let runs: Vec<String> = (0..25).map(|i| format!("page-{i:02}")).collect();
    d.post(&runs.iter().enumerate().map(|(i, r)| started(r, "box", i as u32 + 1)).collect::<Vec<_>>());
    d.post(&[started("other", "box", 99), epoch("other", 1, 0), finished("other", 2)]);

    let (code, first) = d.get("/v1/runs?name=page&limit=10");
    assert_eq!(code, 200, "{first}");
    assert_eq!(
        (first["matched"].as_u64(), first["offset"].as_u64(), first["limit"].as_u64()),
        (Some(25), Some(0), Some(10))
    );
    let mut seen = ids(&first);
    for offset in [10, 20] {
        let (code, page) = d.get(&format!("/v1/runs?name=page&limit=10&offset={offset}"));
        assert_eq!(code, 200, "{page}");
        assert_eq!(page["matched"].as_u64(), Some(25));
        seen.extend(ids(&page));
    }
    assert_eq!(seen.len(), 25, "10 + 10 + 5 rows");
    seen.sort();
    assert_eq!(seen, runs, "each run on exactly one page");
    let (_, past) = d.get("/v1/runs?limit=10&offset=500");
    assert_eq!((ids(&past).len(), past["matched"].as_u64()), (0, Some(26)), "a page past the end is empty");
    let (_, default) = d.get("/v1/runs");
    assert_eq!((ids(&default).len(), default["limit"].as_u64()), (26, Some(100)));
    let (_, done) = d.get("/v1/runs?state=completed&limit=5");
    assert_eq!((ids(&done), done["matched"].as_u64()), (vec!["other".to_owned()], Some(1)));
    for bad in ["?limit=0", "?limit=1001", "?offset=-1", "?offset=x", "?page=2"] {
        assert_eq!(d.get(&format!("/v1/runs{bad}")).0, 400, "{bad}");
    }
}

fn rank_started(run: &str, rank: u32) -> String {
    event(
        run,
        0,
        "run_started",
        json!({ "name": "big-train", "host": format!("gpu-{rank}"), "pid": 100 + rank, "rank": rank,
            "job": "job-7", "world_size": 4, "n_epochs": 3, "batches_per_epoch": 10,
            "metric_names": [], "hyper": {} }),
    )
}

#[test]
fn dashboard_runs_list_shows_a_job_as_one_row_with_its_ranks_and_health() {
    let d = Dash::start();
    d.post(&[rank_started("j7-r0", 0), rank_started("j7-r1", 1), rank_started("j7-r2", 2)]);
    d.post(&[epoch("j7-r0", 1, 0), epoch("j7-r1", 1, 0), epoch("j7-r2", 1, 0)]);
    d.post(&[started("solo", "box", 5)]);

    let (code, list) = d.get("/v1/runs");
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["matched"].as_u64(), Some(2), "one row for the job, one for the solo run: {list}");
    let rows = list["runs"].as_array().expect("runs");
    let job = rows.iter().find(|r| r["job"].is_object()).expect("a job row");
    assert_eq!(job["run"], "j7-r0", "the job's row is rank 0's run");
    let j = &job["job"];
    assert_eq!(
        (j["job"].as_str(), j["seen"].as_u64(), j["expected"].as_u64()),
        (Some("job-7"), Some(3), Some(4))
    );
    assert_eq!(j["state"], "running");
    let health = j["health"].as_str().expect("health");
    assert!(health.starts_with("3/4 ranks") && health.contains("missing: 3"), "{health}");
    let ranks: Vec<(u64, &str, &str)> = j["ranks"]
        .as_array()
        .expect("ranks")
        .iter()
        .map(|r| {
            (
                r["rank"].as_u64().unwrap_or(99),
                r["run"].as_str().unwrap_or(""),
                r["host"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(ranks, [(0, "j7-r0", "gpu-0"), (1, "j7-r1", "gpu-1"), (2, "j7-r2", "gpu-2")]);
    assert!(rows.iter().any(|r| r["run"] == "solo" && r["job"].is_null()));

    // Filters see the job by its id or any rank's run, and by the job's state.
    for q in ["?name=JOB-7", "?name=j7-r2", "?state=running&name=j7"] {
        let (_, found) = d.get(&format!("/v1/runs{q}"));
        assert_eq!(ids(&found), ["j7-r0"], "{q}");
    }
    let (_, none) = d.get("/v1/runs?state=completed");
    assert_eq!(ids(&none), Vec::<String>::new());
}
