//! The run page's overlays, x-axis switch and lr curve, the Deliveries page with real figures, and the login
//! of a non-loopback dashboard, in headless Chromium; screenshots of each at 1280 and 390 px wide.

use serde_json::{Value, json};

use super::{Browser, ELEMENT};
use crate::daemon::{epoch, event, http, started};
use crate::dashboard::Dash;
use crate::dashboard::deliveries::TwoSinks;

/// A `batch_ended` of `run` at 10:00:00 plus `seq` seconds (so the time axis has a span), with an lr.
fn timed_batch(run: &str, seq: u64, epoch: u32, batch: u64, scale: f64) -> String {
    let loss = scale * 2.0 / (1.0 + seq as f64 / 20.0);
    let mut e: Value = serde_json::from_str(&event(
        run,
        seq,
        "batch_ended",
        json!({ "epoch": epoch, "batch": batch, "n_batches": 10, "loss": loss, "smooth_loss": loss,
            "lr": 0.001 * (1.0 + batch as f64) }),
    ))
    .expect("an event");
    e["time"] = json!(format!("2026-11-27T10:{:02}:{:02}Z", seq / 60, seq % 60));
    e.to_string()
}

/// A run's history: its start, two epochs of ten batches, the first epoch's end.
fn history(run: &str, name: &str, scale: f64) -> Vec<String> {
    let mut out = vec![event(
        run,
        0,
        "run_started",
        json!({ "name": name, "host": "box", "pid": 1, "n_epochs": 3, "batches_per_epoch": 10,
            "metric_names": ["accuracy"] }),
    )];
    for seq in 1..=20u64 {
        let (ep, b) = (((seq - 1) / 10) as u32, (seq - 1) % 10);
        out.push(timed_batch(run, seq, ep, b, scale));
    }
    out.push(epoch(run, 21, 0));
    out
}

impl Browser {
    /// The WebDriver id of the element `css` selects.
    fn find(&self, css: &str) -> String {
        let found = self.call("POST", &self.at("/element"), json!({ "using": "css selector", "value": css }));
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("an element for {css}: {found}")).to_owned()
    }

    /// Type `text` into the element `css` selects.
    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call("POST", &self.at(&format!("/element/{id}/value")), json!({ "text": text }));
    }

    /// Choose `value` in the `<select>` `css` selects, as a user would.
    fn choose(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value={}]", json!(value)));
    }

    /// Both widths' screenshots of the page as it is, ending at 1280; `at`: an element to scroll to first.
    fn screenshots(&self, name: &str, at: Option<&str>) {
        let scroll = |css: &str| {
            self.js(&format!("document.querySelector({}).scrollIntoView(); return true", json!(css)));
        };
        at.map(scroll);
        self.screenshot(&format!("{name}-1280"));
        self.width(390);
        at.map(scroll);
        self.screenshot(&format!("{name}-390"));
        assert_eq!(
            self.js("return document.documentElement.scrollWidth <= 390"),
            json!(true),
            "{name}: nothing wider than a phone but the tables' own scrolling boxes"
        );
        self.width(1280);
    }
}

#[test]
fn dashboard_in_chromium_overlays_up_to_five_runs_switches_to_wall_time_and_draws_the_lr() {
    let d = Dash::start();
    let base = format!("http://127.0.0.1:{}", d.port);
    d.post(&history("main-run", "main-run", 1.0));
    let others = ["other-a", "other-b", "other-c", "other-d", "other-e", "other-f"];
    // other-e is named like markup: its legend entry and its chip show the name as text.
    let evil = "<img src=x onerror=alert(1)>";
    let name_of = |run: &str| if run == "other-e" { evil.to_owned() } else { run.to_owned() };
    for (i, run) in others.iter().enumerate() {
        d.post(&history(run, &name_of(run), 1.0 + 0.2 * (i + 1) as f64));
    }
    let b = Browser::start();
    b.open(&format!("{base}/runs/main-run"));
    b.wait_js("the chart", "return !!document.querySelector('#chart canvas')");
    b.wait_js(
        "the run list to pick from",
        "return document.querySelectorAll('#overlay-pick option').length === 7",
    );

    for run in &others[..5] {
        b.choose("#overlay-pick", run);
        b.click("#overlay-add");
        b.wait_js(
            &format!("{run} overlaid"),
            &format!("return !!document.querySelector('#overlay-list li[data-run={}]')", json!(run)),
        );
    }
    // This run's train, valid and lr columns, and one per overlay, each with its own legend entry and colour.
    b.wait_js("eight series", "return document.getElementById('chart').dataset.series === '8'");
    let legend = b.js(
        "return Array.from(document.querySelectorAll('#chart .u-legend .u-label')).map(l => l.textContent)",
    );
    for run in &others[..5] {
        let name = name_of(run);
        assert!(
            legend.as_array().is_some_and(|l| l.contains(&json!(name))),
            "{name} in the legend: {legend}"
        );
    }
    assert_eq!(b.js("return document.querySelectorAll('main img').length"), json!(0));
    assert_eq!(b.alert(), None, "no script ran");
    let colours = b.js(
        "return Array.from(document.querySelectorAll('#overlay-list .swatch')).map(s => s.style.background)",
    );
    let mut distinct: Vec<String> =
        colours.as_array().expect("swatches").iter().filter_map(|c| c.as_str().map(str::to_owned)).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "a colour each: {colours}");

    // A sixth is refused, saying why; nothing is added.
    b.choose("#overlay-pick", others[5]);
    b.click("#overlay-add");
    b.wait_js("the refusal", "return !document.getElementById('overlay-msg').hidden");
    let msg = b.js("return document.getElementById('overlay-msg').textContent");
    assert!(msg.as_str().is_some_and(|m| m.contains("At most 5")), "{msg}");
    assert_eq!(b.js("return document.querySelectorAll('#overlay-list li').length"), json!(5));

    // The lr curve, on its own axis.
    let lr_shown = "return Array.from(document.querySelectorAll('#chart .u-axis')).length === 3";
    b.wait_js("the lr axis", lr_shown);
    b.assert_no_console_errors("run page with five overlays");
    b.screenshots("run-overlays", Some("#h-loss"));

    // Wall time: the points spread over the 19 seconds between each run's first and last batch.
    b.click("input[name=xaxis][value=time]");
    b.wait_js(
        "the time axis",
        "const c = document.getElementById('chart'); return c.dataset.x === 'time' && c.dataset.xspan === '19'",
    );
    b.assert_no_console_errors("run page by wall time");
    b.js("document.getElementById('h-loss').scrollIntoView(); return true");
    b.screenshot("run-time-1280");

    // Removing an overlay frees a place for another.
    b.click("#overlay-list li[data-run=\"other-a\"] button");
    b.wait_js("four overlays", "return document.querySelectorAll('#overlay-list li').length === 4");
    b.wait_js(
        "other-a back on the list",
        "return !!document.querySelector('#overlay-pick option[value=\"other-a\"]')",
    );
    b.choose("#overlay-pick", others[5]);
    b.click("#overlay-add");
    b.wait_js(
        "other-f overlaid",
        "return !!document.querySelector('#overlay-list li[data-run=\"other-f\"]')",
    );
    b.assert_no_console_errors("run page after changing overlays");
}

#[test]
fn dashboard_in_chromium_shows_each_notifier_the_outbox_and_the_latest_deliveries_per_run() {
    let t = TwoSinks::start();
    let d = &t.dash;
    d.post(&[started("shown-run", "box", 1)]);
    let base = format!("http://127.0.0.1:{}", d.port);
    let b = Browser::start();
    b.open(&format!("{base}/notifiers"));
    b.wait_js("two notifiers", "return document.querySelectorAll('#notifiers tbody tr').length === 2");
    b.wait_js(
        "the rate limit of hook",
        "const c = document.querySelector('#notifiers tr[data-notifier=\"hook\"]').cells[6]; return c.textContent.includes('left')",
    );
    b.wait_js(
        "the run's delivery",
        "return !!document.querySelector('#per-run tbody tr[data-run=\"shown-run\"]')",
    );
    let row = b.js(
        "return Array.from(document.querySelector('#per-run tbody tr[data-run=\"shown-run\"]').cells).map(c => c.textContent)",
    );
    assert_eq!(row[1], "fine", "{row}");
    assert_eq!(row[2], "run started #0", "{row}");
    assert!(row[3].as_str().is_some_and(|s| s.ends_with("ago")), "{row}");
    assert_eq!(row[4], "status 200", "{row}");
    b.wait_js(
        "the outbox's oldest delivery",
        "return document.getElementById('outbox').textContent.includes('the oldest made')",
    );
    b.assert_no_console_errors("deliveries page");
    b.screenshots("notifiers-data", None);
}

#[test]
fn dashboard_in_chromium_on_a_non_loopback_address_asks_for_the_token_then_serves_pages_and_stream() {
    let d = Dash::start_on("0.0.0.0", "token = \"s3cret-token\"");
    let base = format!("http://127.0.0.1:{}", d.port);
    let post = |body: &str| {
        let headers = [("content-type", "application/json"), ("authorization", "Bearer s3cret-token")];
        let (code, text) = http(d.daemon.port, "POST", "/v1/events", &headers, body.as_bytes());
        assert_eq!(code, 202, "{text}");
    };
    post(&started("first", "box", 1));
    let b = Browser::start();

    // Without the token: the login form, not the page.
    b.open(&format!("{base}/"));
    b.wait_js(
        "the login form",
        "return location.pathname === '/login' && !!document.getElementById('token')",
    );
    assert_eq!(b.js("return document.querySelectorAll('#runs').length"), json!(0));
    b.assert_no_console_errors("login page");
    b.screenshots("login", None);

    // A wrong token: the form again, saying so.
    b.type_into("#token", "wrong");
    b.click("form button[type=submit]");
    b.wait_js("the error", "return !!document.querySelector('.login .error')");
    // The browser logs the form's 401 answer; that is the only entry.
    let logged: Vec<String> = b.console().into_iter().filter(|l| l.starts_with("SEVERE")).collect();
    assert!(logged.iter().all(|l| l.contains("/login") && l.contains("401")), "{logged:#?}");

    // The right one: the runs page, its data, and the stream.
    b.type_into("#token", "s3cret-token");
    b.click("form button[type=submit]");
    b.wait_js("the runs page", "return location.pathname === '/' && !!document.getElementById('runs')");
    b.wait_js("the run", "return document.querySelectorAll('#runs tbody tr').length === 1");
    b.wait_js("the stream", "return document.getElementById('live').textContent === 'live'");
    b.js("window.notReloaded = true; return true");
    post(&started("second", "box", 2));
    b.wait_js("the new run, live", "return document.querySelectorAll('#runs tbody tr').length === 2");
    assert_eq!(b.js("return window.notReloaded === true"), json!(true));

    // The session cookie: HttpOnly (no script sees it) and SameSite=Strict.
    let cookies = b.call("GET", &b.at("/cookie"), Value::Null);
    let session = cookies
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "herald_session"))
        .unwrap_or_else(|| panic!("a session cookie: {cookies}"))
        .clone();
    assert_eq!((session["httpOnly"].as_bool(), session["sameSite"].as_str()), (Some(true), Some("Strict")));
    assert_eq!(b.js("return document.cookie.includes('herald_session')"), json!(false));

    // Another page of the session works too.
    b.open(&format!("{base}/runs/first"));
    b.wait_js("the run page", "return document.getElementById('run-name').textContent === 'first'");
    b.assert_no_console_errors("pages after login");
}
