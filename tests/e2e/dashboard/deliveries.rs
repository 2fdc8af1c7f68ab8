//! `GET /v1/deliveries`, the Deliveries page's figures, against two local webhook sinks
//! (herald-fakes' recording fake): one that answers 200, one that answers 429 with `Retry-After`.

use std::net::TcpStream;
use std::time::Duration;

use herald_fakes::recording::{Answer, Fake, Recorded};
use serde_json::{Value, json};

use super::Dash;
use crate::daemon::{Daemon, config_text, epoch, free_port, started, wait_for};

/// A daemon with its dashboard on 127.0.0.1 and two webhooks: `hook` to `limited` (429 with `Retry-After:
/// 120` first, then 200) and `fine` to `ok` (always 200). The runtime keeps the sinks running.
pub struct TwoSinks {
    pub dash: Dash,
    pub limited: Fake,
    pub ok: Fake,
    _runtime: tokio::runtime::Runtime,
}

impl TwoSinks {
    pub fn start() -> TwoSinks {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let answer = |_: &Recorded| Answer::json(200, json!({ "ok": true }));
        let limited = runtime.block_on(Fake::start(answer));
        limited
            .script([Answer::json(429, json!({ "error": "slow down" })).with_header("Retry-After", "120")]);
        let ok = runtime.block_on(Fake::start(answer));
        let port_of = |f: &Fake| -> u16 {
            f.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the fake's port")
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, api) = (free_port(), free_port());
        let extra = format!("dashboard = \"127.0.0.1:{port}\"");
        let second = format!(
            "\n[[notifier]]\nname = \"fine\"\ntype = \"webhook\"\nurl = \"{}/hook\"\ntimeout = \"1s\"\n",
            ok.base
        );
        let config = config_text(dir.path(), api, port_of(&limited), &extra, &second);
        let daemon = Daemon::start(dir.path(), api, &config);
        wait_for("the dashboard to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        TwoSinks { dash: Dash { daemon, port, _dir: dir }, limited, ok, _runtime: runtime }
    }
}

fn notifier<'v>(d: &'v Value, name: &str) -> &'v Value {
    d["notifiers"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("notifier {name} in {d}"))
}

#[test]
fn dashboard_deliveries_show_rate_limits_the_oldest_waiting_delivery_and_the_latest_per_run() {
    let t = TwoSinks::start();
    let d = &t.dash;
    d.post(&[started("deliv-1", "box", 1)]);
    // `fine` delivers at once; `hook` hears 429 with Retry-After: 120 and waits.
    let body = wait_for("the 429 and the delivery", Duration::from_secs(15), || {
        let (code, body) = d.get("/v1/deliveries");
        assert_eq!(code, 200, "{body}");
        let waiting = notifier(&body, "hook")["rate_limited_until_ms"].as_u64().is_some();
        let delivered = body["runs"].as_array().is_some_and(|r| !r.is_empty());
        (waiting && delivered).then_some(body)
    });
    let now = body["now_ms"].as_u64().expect("now_ms");
    let until = notifier(&body, "hook")["rate_limited_until_ms"].as_u64().expect("until");
    assert!(until > now + 100_000 && until <= now + 121_000, "Retry-After 120 s: {until} vs {now}");
    assert!(
        notifier(&body, "hook")["last_error"].as_str().is_some_and(|e| e.contains("rate limited")),
        "{body}"
    );
    assert_eq!(notifier(&body, "fine")["rate_limited_until_ms"], Value::Null);
    assert_eq!(t.limited.requests().len(), 1, "one attempt, then the wait");

    // The outbox: the waiting delivery and its age.
    assert!(body["outbox"]["jobs"].as_u64().is_some_and(|j| j >= 1), "{body}");
    let oldest = body["outbox"]["oldest_waiting_ms"].as_u64().expect("a delivery waits");
    assert!(oldest <= now && now - oldest < 60_000, "{oldest} vs {now}");

    // The latest delivery per run: `fine`'s, with when, which event and the receipt; none from `hook`.
    let run = &body["runs"][0];
    assert_eq!(run["run"], "deliv-1");
    let ds = run["deliveries"].as_array().expect("deliveries");
    assert_eq!(ds.len(), 1, "{run}");
    assert_eq!((ds[0]["notifier"].as_str(), ds[0]["event"].as_str()), (Some("fine"), Some("run_started")));
    assert_eq!(ds[0]["seq"], 0);
    assert!(ds[0]["at_ms"].as_u64().is_some_and(|at| at <= now && now - at < 60_000), "{run}");
    assert_eq!(ds[0]["receipt"], json!({ "status": 200 }));

    // A later event replaces the run's delivery; a second run gets its own row, latest first.
    d.post(&[epoch("deliv-1", 1, 0)]);
    d.post(&[started("deliv-2", "box", 2)]);
    let body = wait_for("both runs", Duration::from_secs(15), || {
        let (_, body) = d.get("/v1/deliveries");
        let runs: Vec<(String, String)> = body["runs"]
            .as_array()?
            .iter()
            .map(|r| {
                let first = &r["deliveries"][0];
                (r["run"].as_str().unwrap_or("").to_owned(), first["event"].as_str().unwrap_or("").to_owned())
            })
            .collect();
        (runs.len() == 2 && runs.iter().any(|(r, e)| r == "deliv-1" && e == "epoch_ended")).then_some(body)
    });
    let latest: Vec<u64> =
        body["runs"].as_array().expect("runs").iter().filter_map(|r| r["latest_ms"].as_u64()).collect();
    assert!(latest.len() == 2 && latest[0] >= latest[1], "the latest delivery first: {body}");
    assert!(t.ok.requests().len() >= 3);
}
