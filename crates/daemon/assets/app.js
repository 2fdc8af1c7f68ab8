// Herald dashboard: fills the pages from the daemon's API (/v1/...) and keeps them live with /v1/stream.
// Every value that comes from a run is put into the page as text (textContent or text nodes), never as markup.
"use strict";

(function () {
  const page = document.body.dataset.page;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // ---- small helpers ---------------------------------------------------------------------------------------
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === "text") e.textContent = String(v);
      else if (k === "class") e.className = v;
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c !== undefined && c !== null) e.append(c); // strings become text nodes
    }
    return e;
  }
  function cell(text, cls) { return el("td", { text: text, class: cls }); }
  function num(v) {
    if (v === undefined || v === null || typeof v !== "number" || !isFinite(v)) return "—";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(3);
    return v.toPrecision(4).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
  }
  function duration(s) {
    if (s === undefined || s === null || !isFinite(s)) return "—";
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const two = (n) => String(n).padStart(2, "0");
    return h > 0 ? h + ":" + two(m) + ":" + two(sec) : two(m) + ":" + two(sec);
  }
  function age(ms) {
    if (!ms) return "—";
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 60) return Math.floor(s) + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }
  function clock(ms) {
    const d = new Date(ms);
    return isNaN(d) ? "" : d.toLocaleString();
  }
  async function api(path, options) {
    const r = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
    if (r.status === 401) { location.href = "/login"; throw new Error("log in first"); }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error((body.error && body.error.message) || ("HTTP " + r.status));
    return body;
  }
  // Put `rows` (new <tr data-run>) into `tbody`, keeping the rows and cells that did not change, so that a
  // live update does not take the focus or a pointer away from a link.
  function patchRows(tbody, rows) {
    const old = new Map(Array.from(tbody.children).map((tr) => [tr.dataset.run, tr]));
    rows.forEach((tr, i) => {
      const prev = old.get(tr.dataset.run);
      let keep = tr;
      if (prev && prev.cells.length === tr.cells.length) {
        Array.from(tr.cells).forEach((c, j) => {
          const was = prev.cells[j];
          if (was.textContent !== c.textContent || was.className !== c.className) was.replaceWith(c);
        });
        keep = prev;
      }
      old.delete(tr.dataset.run);
      if (tbody.children[i] !== keep) tbody.insertBefore(keep, tbody.children[i] || null);
    });
    for (const tr of old.values()) tr.remove();
  }
  function stateBadge(state) { return el("span", { class: "state " + state, text: state }); }
  // Coalesce bursts of events into one refresh at most every `ms`.
  function throttle(fn, ms) {
    let timer = null, again = false;
    return function () {
      if (timer) { again = true; return; }
      fn();
      timer = setTimeout(function tick() {
        if (again) { again = false; fn(); timer = setTimeout(tick, ms); } else { timer = null; }
      }, ms);
    };
  }

  // ---- the stream ------------------------------------------------------------------------------------------
  const TYPES = ["run_started", "epoch_started", "batch_ended", "epoch_ended", "run_finished", "run_failed",
    "run_stalled", "run_lost", "message", "heartbeat", "alert", "rank_stalled", "rank_lost", "rank_failed",
    "rank_slow", "ranks_missing", "status", "resync"];
  function stream(handlers) {
    const live = document.getElementById("live");
    const es = new EventSource("/v1/stream");
    es.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
    es.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
    for (const t of TYPES) {
      es.addEventListener(t, (m) => {
        let data = null;
        try { data = JSON.parse(m.data); } catch (e) { return; }
        if (handlers[t]) handlers[t](data);
        if (handlers.any && t !== "status") handlers.any(t, data);
      });
    }
    return es;
  }

  // ---- Runs ------------------------------------------------------------------------------------------------
  // The runs list, one page of PAGE rows at a time (`GET /v1/runs?limit=&offset=`), filtered on the server;
  // a distributed job is one row (rank 0's run, with ranks seen/expected and its health line) that opens to
  // its ranks.
  const PAGE = 100;

  function runCells(r) {
    const done = r.epochs_done, total = r.n_epochs;
    const epoch = el("td", {}, total ? done + "/" + total : String(done));
    if (total) epoch.append(el("progress", { max: total, value: Math.min(done, total), "aria-label": "epochs done" }));
    const e = r.last_epoch;
    const metrics = e ? Object.entries(e.metrics || {}).map(([m, v]) => m + " " + num(v)).join(", ") : "";
    const best = Object.entries(r.best).filter(([k]) => k !== "train_loss").map(([k, v]) => k + " " + num(v)).join(", ");
    return [
      cell(r.host, "wide text"),
      epoch,
      cell(r.state === "running" ? duration(r.eta_s) : "—", "wide"),
      cell(num(r.last_batch ? r.last_batch[3] : (e && e.train_loss)), "num"),
      cell(num(e && e.valid_loss), "num"),
      cell(metrics, "wide text"),
      cell(best, "wide text"),
      cell(age(r.last_event_ms)),
    ];
  }

  // A job's row, and its ranks' rows when it is open (`open`: the set of open jobs' keys).
  function jobRows(r, open, toggle) {
    const j = r.job;
    const key = "job:" + j.job + ":" + r.run;
    const isOpen = open.has(key);
    const expected = j.expected == null ? "?" : String(j.expected);
    const button = el("button", { type: "button", class: "toggle", "aria-expanded": String(isOpen),
      "aria-label": (isOpen ? "hide" : "show") + " the ranks of job " + j.job, text: isOpen ? "▾" : "▸" });
    button.addEventListener("click", () => toggle(key));
    const name = el("td", { class: "text" }, button, " ",
      el("a", { href: "/runs/" + encodeURIComponent(r.run), text: r.name }),
      el("span", { class: "muted small", text: " job " + j.job + " · " + j.seen + "/" + expected + " ranks" }),
      el("br"), el("span", { class: "muted small health", text: j.health }));
    const cells = runCells(r);
    cells[0] = cell(j.ranks.map((k) => k.host).filter((h, i, a) => h && a.indexOf(h) === i).join(", "), "wide text");
    const out = [el("tr", { "data-run": key, class: "job" }, el("td", {}, stateBadge(j.state)), name, ...cells)];
    if (isOpen) {
      for (const k of j.ranks) {
        out.push(el("tr", { "data-run": key + ":" + k.run, class: "rank" },
          el("td", {}, stateBadge(k.state)),
          el("td", { class: "text" }, "rank " + k.rank + ": ",
            el("a", { href: "/runs/" + encodeURIComponent(k.run), text: k.run })),
          cell(k.host, "wide"), cell(String(k.epochs_done)), cell("", "wide"), cell(""), cell(""),
          cell("", "wide"), cell("", "wide"), cell(age(k.last_event_ms))));
      }
    }
    return out;
  }

  function runsPage() {
    const name = document.getElementById("f-name");
    const state = document.getElementById("f-state");
    const params = new URLSearchParams(location.search);
    name.value = params.get("name") || "";
    state.value = params.get("state") || "";
    let offset = Math.max(0, (parseInt(params.get("page") || "1", 10) || 1) - 1) * PAGE;
    let rows = [];
    let matched = 0;
    let painted = false;
    const open = new Set();
    const tbody = document.querySelector("#runs tbody");
    const prev = document.getElementById("prev");
    const next = document.getElementById("next");

    function toggle(key) {
      if (open.has(key)) open.delete(key); else open.add(key);
      render();
      const b = tbody.querySelector('tr[data-run="' + CSS.escape(key) + '"] button.toggle');
      if (b) b.focus();
    }
    function render() {
      const out = rows.flatMap((r) => r.job ? jobRows(r, open, toggle) : [el("tr", { "data-run": r.run },
        el("td", {}, stateBadge(r.state)),
        el("td", { class: "text" }, el("a", { href: "/runs/" + encodeURIComponent(r.run), text: r.name })),
        ...runCells(r))]);
      patchRows(tbody, out);
      labelCells(document.getElementById("runs"));
      document.getElementById("empty").hidden = rows.length > 0 || name.value !== "" || state.value !== "";
      const last = offset + rows.length;
      document.getElementById("count").textContent = matched === 0 ? "" :
        (matched > rows.length ? (offset + 1) + "–" + last + " of " : "") + matched + (matched === 1 ? " row" : " rows");
      prev.disabled = offset === 0;
      next.disabled = last >= matched;
      document.getElementById("pager").hidden = matched <= PAGE && offset === 0;
      if (!painted && rows.length) { painted = true; performance.mark("herald:runs-rendered"); }
    }
    function query() {
      const q = new URLSearchParams();
      if (name.value) q.set("name", name.value);
      if (state.value) q.set("state", state.value);
      return q;
    }
    async function load() {
      const q = query();
      q.set("limit", String(PAGE));
      q.set("offset", String(offset));
      try {
        const list = await api("/v1/runs?" + q.toString());
        rows = list.runs;
        matched = list.matched;
        if (!rows.length && offset > 0 && matched > 0) { offset = Math.floor((matched - 1) / PAGE) * PAGE; return load(); }
        render();
      } catch (e) {
        document.getElementById("count").textContent = "Cannot read the runs: " + e.message;
      }
    }
    const refresh = throttle(load, 1000);
    function remember() {
      const q = query();
      if (offset > 0) q.set("page", String(offset / PAGE + 1));
      history.replaceState(null, "", q.toString() ? "?" + q.toString() : location.pathname);
    }
    function filtersChanged() { offset = 0; remember(); load(); }
    function turn(by) { offset = Math.max(0, offset + by * PAGE); remember(); load(); }
    document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); filtersChanged(); });
    name.addEventListener("input", filtersChanged);
    state.addEventListener("change", filtersChanged);
    prev.addEventListener("click", () => turn(-1));
    next.addEventListener("click", () => turn(1));
    load();
    stream({ any: refresh, resync: load });
    setInterval(render, 1000); // ages
    setInterval(load, 15000); // stop requests are not events
  }

  // ---- Run -------------------------------------------------------------------------------------------------
  // The run page: table, chart (this run's loss, valid points and lr, up to five other runs overlaid; x by
  // batch or by time since each run's start), hyperparameters, timeline, deliveries, Stop.
  const OVERLAY_MAX = 5;
  const OVERLAY_COLOURS = ["#15803d", "#7c3aed", "#ca8a04", "#db2777", "#0891b2"]; // none near the valid points' orange

  // A run's series from `GET /v1/runs/{run}/loss`, with a time axis: the endpoint's `wall_ms` when it has
  // them, otherwise (an older daemon) times spread over each epoch from the epochs' durations (`epochs`: the
  // run's results table).
  function lossSeries(s, epochs) {
    const out = { x: s.x.slice(), y: s.smooth_loss.slice(), lr: (s.lr || []).slice(), t: [],
      en: s.epochs.map((e) => e.epoch), ex: s.epochs.map((e) => e.x), ev: s.epochs.map((e) => e.valid_loss == null ? null : e.valid_loss), et: [], t0: null };
    if (Array.isArray(s.wall_ms) && s.wall_ms.some((w) => w > 0)) {
      const t0 = Math.min(...s.wall_ms.filter((w) => w > 0));
      out.t0 = t0;
      out.t = s.wall_ms.map((w) => (w > 0 ? (w - t0) / 1000 : null));
      out.et = s.epochs.map((e) => (e.wall_ms ? (e.wall_ms - t0) / 1000 : null));
    } else {
      // Epoch i ends at the sum of the first i durations; a batch's time is interpolated within its epoch.
      const ends = [], at = [];
      let sum = 0;
      (epochs || []).forEach((e, i) => { sum += e.elapsed_s || 0; ends.push(sum); at.push(out.ex[i]); });
      const timeOf = (x) => {
        let prevX = 0, prevT = 0;
        for (let i = 0; i < at.length; i++) {
          if (x <= at[i]) return prevT + (at[i] > prevX ? (x - prevX) / (at[i] - prevX) : 0) * (ends[i] - prevT);
          prevX = at[i]; prevT = ends[i];
        }
        return null; // after the last epoch's end: not known yet
      };
      out.t = out.x.map(timeOf);
      out.et = out.ex.map(timeOf);
    }
    return out;
  }

  // Columns for uPlot: one x column and one column per series, aligned (uPlot.join leaves gaps).
  function chartColumns(own, overlays, byTime, showLr) {
    const xs = (s) => (byTime ? s.t : s.x);
    const ownRows = [];
    xs(own).forEach((x, i) => { if (x != null) ownRows.push([x, own.y[i], null, showLr ? own.lr[i] : null]); });
    own.ev.forEach((v, i) => { const x = byTime ? own.et[i] : own.ex[i]; if (x != null) ownRows.push([x, null, v, null]); });
    ownRows.sort((a, b) => a[0] - b[0]);
    // Merge rows at the same x (an epoch's end on a batch point).
    const merged = [];
    for (const r of ownRows) {
      const last = merged[merged.length - 1];
      if (last && last[0] === r[0]) { for (let k = 1; k < 4; k++) if (last[k] == null) last[k] = r[k]; } else merged.push(r.slice());
    }
    const tables = [[0, 1, 2, 3].map((k) => merged.map((r) => r[k]))];
    for (const o of overlays) {
      const rows = [];
      xs(o.series).forEach((x, i) => { if (x != null) rows.push([x, o.series.y[i]]); });
      rows.sort((a, b) => a[0] - b[0]);
      const dedup = rows.filter((r, i) => i === 0 || r[0] !== rows[i - 1][0]);
      tables.push([dedup.map((r) => r[0]), dedup.map((r) => r[1])]);
    }
    if (tables.length === 1) return tables[0];
    return uPlot.join(tables);
  }

  function runPage() {
    const run = decodeURIComponent(location.pathname.replace(/^\/runs\//, ""));
    const base = "/v1/runs/" + encodeURIComponent(run);
    const err = document.getElementById("run-error");
    const logBox = document.getElementById("log");
    const lrBox = document.getElementById("show-lr");
    let detail = null;
    let chart = null, chartKey = "";
    let own = null;            // this run's series (lossSeries)
    const overlays = [];       // { run, name, colour, series }
    let byTime = false;

    document.getElementById("plot-link").href = base + "/plot.png";

    function showError(msg) { err.textContent = msg; err.hidden = !msg; }

    function renderDetail() {
      const r = detail.run, ctx = detail.context;
      document.title = r.name + " · Herald";
      document.getElementById("run-name").textContent = r.name;
      document.getElementById("run-state").replaceChildren(stateBadge(r.state));
      const meta = [r.run];
      if (r.host) meta.push(r.host + (r.pid ? " (pid " + r.pid + ")" : ""));
      if (r.n_epochs) meta.push("epoch " + r.epochs_done + "/" + r.n_epochs);
      if (r.state === "running" && r.eta_s != null) meta.push("ETA " + duration(r.eta_s));
      if (r.stop_reason) meta.push("stop requested: " + r.stop_reason);
      document.getElementById("run-meta").textContent = meta.join(" · ");
      const stop = document.getElementById("stop");
      stop.hidden = !(r.state === "running" || r.state === "stalled");
      document.getElementById("stop-name").textContent = r.name;

      // The results table, as fastai prints it.
      const first = ctx.epochs.length ? Object.keys(ctx.epochs[0].metrics || {}) : [];
      const names = ctx.metric_names && ctx.metric_names.length ? ctx.metric_names : first;
      const head = el("tr", {}, ...["epoch", "train_loss", "valid_loss", ...names, "time"].map((h) => el("th", { scope: "col", text: h })));
      document.querySelector("#results thead").replaceChildren(head);
      document.querySelector("#results tbody").replaceChildren(...ctx.epochs.map((e) => el("tr", {},
        cell(String(e.epoch)), cell(num(e.train_loss)), cell(num(e.valid_loss)),
        ...names.map((m) => cell(num((e.metrics || {})[m]))), cell(duration(e.elapsed_s)))));

      const hyper = document.getElementById("hyper");
      const pairs = Object.entries(ctx.hyper || {});
      hyper.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: JSON.stringify(v) })]));
      if (!pairs.length) hyper.replaceChildren(el("dd", { class: "muted", text: "none reported" }));

      document.getElementById("events").replaceChildren(...timeline(detail));

      document.querySelector("#run-deliveries tbody").replaceChildren(...detail.deliveries.map((d) => el("tr", {},
        cell(d.notifier), cell(d.type),
        cell(d.latest_receipt == null ? "—" : receiptText(d.latest_receipt), "text"),
        cell(d.give_ups.length ? d.give_ups.length + ": " + d.give_ups[d.give_ups.length - 1].error : "0", "text"))));
    }

    // The run's events, and its stop request where it falls: the daemon keeps the request's reason (which
    // says who asked and from where, when the asker said) but not its time, so it goes before the run's end,
    // or last while the run has not ended.
    function timeline(d) {
      const items = d.events.map((e) => el("li", { class: "ev-" + e.type },
        el("time", { datetime: e.time, text: clock(Date.parse(e.time)) }), describe(e)));
      if (d.run.stop_requested) {
        const stop = el("li", { class: "ev-stop" }, el("time", { text: "—" }),
          "stop requested: " + (d.run.stop_reason || "no reason given"));
        const end = d.events.findIndex((e) => e.type === "run_finished" || e.type === "run_failed");
        if (end >= 0) items.splice(end, 0, stop); else items.push(stop);
      }
      return items;
    }

    function describe(e) {
      switch (e.type) {
        case "run_started": return "started" + (e.n_epochs ? ", " + e.n_epochs + " epochs" : "");
        case "epoch_ended": return "epoch " + e.epoch + ": train " + num(e.train_loss) + ", valid " + num(e.valid_loss);
        case "run_finished": return "finished: " + e.status + (e.reason ? " (" + e.reason + ")" : "");
        case "run_failed": return "failed: " + (e.error || "");
        case "run_stalled": return "stalled: no event for a while";
        case "run_lost": return "lost: the process exited without reporting";
        case "message": return "message: " + (e.title || "") + (e.text ? " " + e.text : "");
        case "alert": return "alert (" + (e.level || "info") + "): " + (e.title || "") + (e.text ? " " + e.text : "");
        default: return e.type.replace(/_/g, " ");
      }
    }

    function hasLr() { return !!own && own.lr.some((v) => v != null); }

    function drawChart() {
      const box = document.getElementById("chart");
      if (typeof uPlot === "undefined") { box.textContent = "The chart library did not load."; return; }
      if (!own) return;
      const log = logBox.checked, showLr = lrBox.checked && hasLr();
      const note = document.getElementById("chart-note");
      const notes = [];
      if (!hasLr()) notes.push("The run reported no learning rate.");
      if (byTime && !own.t.some((t) => t != null)) notes.push("No times yet: the first epoch has not ended.");
      note.textContent = notes.join(" "); note.hidden = !notes.length;
      let data = chartColumns(own, overlays, byTime, showLr);
      if (log) data = data.map((col, k) => (k === 0 || k === 3 ? col : col.map((v) => (v != null && v > 0 ? v : null))));
      box.dataset.points = String(own.x.length); // for tests and curious readers
      box.dataset.series = String(data.length - 1);
      box.dataset.x = byTime ? "time" : "batch";
      box.dataset.xspan = String(data[0].length ? data[0][data[0].length - 1] - data[0][0] : 0);
      const key = [log, showLr, byTime, overlays.map((o) => o.run).join("\u0000")].join("|");
      if (chart && chartKey === key) { chart.setData(data); return; }
      if (chart) { chart.destroy(); chart = null; }
      const width = Math.max(280, box.clientWidth || 600);
      const timeAxis = (u, vals) => vals.map((v) => duration(v));
      const series = [
        { label: byTime ? "time" : "batch", value: (u, v) => (v == null ? "—" : byTime ? duration(v) : String(v)) },
        { label: "train (smoothed)", stroke: "#0b5cad", width: 1.5, spanGaps: true, points: { show: false } },
        { label: "valid", stroke: "#c2410c", width: 0, spanGaps: true, points: { show: true, size: 7, fill: "#c2410c" } },
        { label: "lr", stroke: "#6b7280", width: 1, dash: [4, 3], spanGaps: true, scale: "lr", show: showLr, points: { show: false } },
        ...overlays.map((o) => ({ label: o.name, stroke: o.colour, width: 1.5, spanGaps: true, points: { show: false } })),
      ];
      const axes = [
        byTime ? { label: "time since start", values: timeAxis } : { label: "batch" },
        { label: "loss" },
      ];
      if (showLr) axes.push({ label: "lr", scale: "lr", side: 1, grid: { show: false }, values: (u, vals) => vals.map(num) });
      chart = new uPlot({
        width: width, height: width < 500 ? 260 : 340,
        scales: { x: { time: false }, y: log ? { distr: 3 } : {}, lr: {} },
        axes: axes,
        series: series,
      }, data, box);
      chartKey = key;
    }
    const redraw = throttle(drawChart, 250);

    // ---- overlays: pick up to five other runs ----
    const pick = document.getElementById("overlay-pick");
    const overlayMsg = document.getElementById("overlay-msg");
    function overlayMessage(msg) { overlayMsg.textContent = msg; overlayMsg.hidden = !msg; }
    async function loadChoices() {
      try {
        const list = await api("/v1/runs?limit=200");
        const keep = pick.value;
        pick.replaceChildren(el("option", { value: "", text: "choose a run…" }),
          ...list.runs.filter((r) => r.run !== run && !overlays.some((o) => o.run === r.run))
            .map((r) => el("option", { value: r.run, text: r.name + (r.name !== r.run ? " (" + r.run + ")" : "") })));
        pick.value = keep;
      } catch (e) {
        overlayMessage("Cannot list the runs: " + e.message);
      }
    }
    function renderOverlays() {
      document.getElementById("overlay-list").replaceChildren(...overlays.map((o) => {
        const remove = el("button", { type: "button", class: "chip-x", "aria-label": "Remove " + o.name, text: "×" });
        remove.addEventListener("click", () => {
          overlays.splice(overlays.indexOf(o), 1);
          overlayMessage("");
          renderOverlays(); drawChart(); loadChoices();
        });
        return el("li", { class: "chip", "data-run": o.run },
          el("span", { class: "swatch", style: "background:" + o.colour, "aria-hidden": "true" }),
          el("a", { href: "/runs/" + encodeURIComponent(o.run), text: o.name }), remove);
      }));
    }
    async function addOverlay(id) {
      if (!id) { overlayMessage("Choose a run first."); return; }
      if (overlays.some((o) => o.run === id)) { overlayMessage("That run is overlaid already."); return; }
      if (overlays.length >= OVERLAY_MAX) {
        overlayMessage("At most " + OVERLAY_MAX + " runs can be overlaid: remove one first.");
        return;
      }
      try {
        const path = "/v1/runs/" + encodeURIComponent(id);
        const [d, s] = await Promise.all([api(path), api(path + "/loss?points=1000")]);
        if (overlays.length >= OVERLAY_MAX || overlays.some((o) => o.run === id)) return; // two clicks at once
        const colour = OVERLAY_COLOURS.find((c) => !overlays.some((o) => o.colour === c)) || OVERLAY_COLOURS[0];
        overlays.push({ run: id, name: d.run.name, colour: colour, series: lossSeries(s, d.context.epochs) });
        overlayMessage("");
        pick.value = "";
        renderOverlays(); drawChart(); loadChoices();
      } catch (e) {
        overlayMessage("Cannot overlay the run: " + e.message);
      }
    }
    document.getElementById("overlay").addEventListener("submit", (e) => { e.preventDefault(); addOverlay(pick.value); });

    async function loadDetail() {
      try {
        detail = await api(base);
        showError("");
        renderDetail();
      } catch (e) {
        showError("Cannot read the run: " + e.message);
      }
    }
    // Live points that come while the series loads: those the answer does not have yet are added after it.
    let pending = null;
    async function loadLoss() {
      pending = [];
      try {
        const s = await api(base + "/loss?points=2000");
        own = lossSeries(s, detail ? detail.context.epochs : []);
        for (const e of pending) if (xOf(own, e) > (own.x.length ? own.x[own.x.length - 1] : -1)) pushPoint(own, e);
        pending = null;
        drawChart();
      } catch (e) {
        showError("Cannot read the loss: " + e.message);
      }
    }
    const reloadDetail = throttle(loadDetail, 500);
    const reloadLoss = throttle(loadLoss, 2000);

    logBox.addEventListener("change", drawChart);
    lrBox.addEventListener("change", drawChart);
    for (const radio of document.querySelectorAll('input[name="xaxis"]')) {
      radio.addEventListener("change", () => { byTime = radio.value === "time" && radio.checked; drawChart(); });
    }
    const dialog = document.getElementById("stop-dialog");
    document.getElementById("stop").addEventListener("click", () => dialog.showModal());
    dialog.addEventListener("close", async () => {
      if (dialog.returnValue !== "stop") return;
      try {
        await api(base + "/stop", {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
          body: JSON.stringify({ reason: "stop requested from the dashboard" }),
        });
        await loadDetail();
      } catch (e) {
        showError("Cannot stop the run: " + e.message);
      }
    });
    // Redraw at the new width when the layout changes (a rotated phone, a resized window).
    let lastWidth = 0;
    new ResizeObserver(() => {
      const w = document.getElementById("chart").clientWidth;
      if (chart && Math.abs(w - lastWidth) > 4) { chart.destroy(); chart = null; drawChart(); }
      lastWidth = w;
    }).observe(document.querySelector("main"));

    // The batch axis position of a live point of series `s` (this run or an overlay).
    function xOf(s, e) {
      const bpe = s === own && detail && detail.context.batches_per_epoch > 0 ? detail.context.batches_per_epoch : (e.n_batches || 0);
      return bpe > 0 ? e.epoch * bpe + e.batch : (s.x.length ? s.x[s.x.length - 1] + 1 : 0);
    }
    // Add a live batch point to series `s`.
    function pushPoint(s, e) {
      const x = xOf(s, e);
      const wall = Date.parse(e.time);
      if (s.t0 == null && isFinite(wall)) s.t0 = wall - (s.t.length && s.t[s.t.length - 1] != null ? s.t[s.t.length - 1] * 1000 : 0);
      s.x.push(x); s.y.push(e.smooth_loss); s.lr.push(e.lr == null ? null : e.lr);
      s.t.push(isFinite(wall) && s.t0 != null ? (wall - s.t0) / 1000 : null);
    }

    loadDetail().then(loadLoss);
    loadChoices();
    const mine = (e) => e && e.run === run;
    stream({
      batch_ended: (e) => {
        if (mine(e)) {
          if (pending) pending.push(e);
          if (own) { pushPoint(own, e); redraw(); }
          return;
        }
        const o = e && overlays.find((v) => v.run === e.run);
        if (o) { pushPoint(o.series, e); redraw(); }
      },
      epoch_ended: (e) => {
        if (!mine(e)) return;
        if (own && !own.en.includes(e.epoch)) {
          // The epoch's valid point now, where it ends; the reload below puts it exactly.
          const end = own.x.length ? own.x[own.x.length - 1] + 1 : 0;
          const bpe = detail && detail.context.batches_per_epoch > 0 ? detail.context.batches_per_epoch : 0;
          own.en.push(e.epoch);
          own.ex.push(bpe > 0 ? (e.epoch + 1) * bpe : end);
          own.ev.push(e.valid_loss == null ? null : e.valid_loss);
          own.et.push(own.t.length ? own.t[own.t.length - 1] : null);
          redraw();
        }
        reloadDetail();
        reloadLoss(); // the epoch's mark, and its place on the time axis
      },
      run_started: () => loadChoices(),
      any: (t, e) => { if (mine(e) && t !== "batch_ended" && t !== "epoch_ended") reloadDetail(); },
      resync: () => { loadDetail(); loadLoss(); },
    });
    setInterval(() => { if (detail) loadDetail(); }, 15000); // stop requests made elsewhere are not events
  }

  // Each cell's column name in `data-label`, which a phone's narrow layout shows beside the value (a row
  // that leaves out leading cells, under a rowspan, takes the last names).
  function labelCells(table) {
    const heads = Array.from(table.tHead.rows[0].cells).map((th) => th.textContent);
    for (const tr of table.tBodies[0].rows) {
      const off = heads.length - tr.cells.length;
      Array.from(tr.cells).forEach((c, i) => { c.dataset.label = heads[i + off] || ""; });
    }
  }

  // A receipt as a short text: its message id when it has one, else its fields.
  function receiptText(r) {
    if (r == null) return "—";
    if (typeof r !== "object") return String(r);
    for (const k of ["message_id", "id", "ts", "message-id"]) if (r[k] != null) return String(r[k]);
    const parts = Object.entries(r).map(([k, v]) => k + " " + (typeof v === "object" ? JSON.stringify(v) : String(v)));
    return parts.length ? parts.join(", ") : "—";
  }

  // ---- Deliveries ------------------------------------------------------------------------------------------
  // The notifiers page, from `GET /v1/deliveries`: per notifier, the outbox, the latest delivery per run.
  function notifiersPage() {
    function until(ms, now) {
      if (!ms || ms <= now) return "—";
      const s = Math.ceil((ms - now) / 1000);
      return clock(ms) + " (" + duration(s) + " left)";
    }
    function render(s) {
      const o = s.outbox, now = s.now_ms;
      let text = "Outbox: " + o.jobs + (o.jobs === 1 ? " delivery" : " deliveries") + " waiting";
      if (o.oldest_waiting_ms) text += ", the oldest made " + age(o.oldest_waiting_ms - (now - Date.now()));
      if (o.bytes) text += "; " + (o.bytes / 1048576).toFixed(1) + " MB on disk";
      document.getElementById("outbox").textContent = text;
      document.querySelector("#notifiers tbody").replaceChildren(...s.notifiers.map((n) => {
        const health = n.health ? n.health.state + (n.health.message ? ": " + n.health.message : "") : "—";
        const name = el("td", { class: "text" }, n.name, el("br"), el("span", { class: "muted small", text: n.type }));
        const limited = until(n.rate_limited_until_ms, now);
        return el("tr", { "data-notifier": n.name }, name, cell(health, "text"), cell(String(n.queue)), cell(String(n.delivered)),
          cell(String(n.failed_attempts)), cell(String(n.gave_up)), cell(limited, limited === "—" ? "" : "warn"),
          cell(n.last_delivery_ms ? age(n.last_delivery_ms) : "—", "wide"), cell(n.last_error || "—", "text"));
      }));
      const rows = [];
      for (const r of s.runs) {
        r.deliveries.forEach((d, i) => {
          const link = el("a", { href: "/runs/" + encodeURIComponent(r.run), text: r.name });
          rows.push(el("tr", { "data-run": r.run },
            i === 0 ? el("td", { class: "text", rowspan: r.deliveries.length }, link) : null,
            cell(d.notifier), cell(d.event ? d.event.replace(/_/g, " ") + " #" + d.seq : "—"),
            el("td", {}, d.at_ms ? el("time", { datetime: new Date(d.at_ms).toISOString(), title: clock(d.at_ms), text: age(d.at_ms) }) : "before the restart"),
            cell(receiptText(d.receipt), "text")));
        });
      }
      document.querySelector("#per-run tbody").replaceChildren(...rows);
      document.getElementById("no-per-run").hidden = rows.length > 0;
      document.getElementById("per-run").hidden = rows.length === 0;
      const gives = s.notifiers.flatMap((n) => n.recent_give_ups || []).sort((a, b) => b.at_ms - a.at_ms);
      document.querySelector("#give-ups tbody").replaceChildren(...gives.map((g) => el("tr", {},
        cell(age(g.at_ms)), cell(g.notifier),
        el("td", { class: "text" }, el("a", { href: "/runs/" + encodeURIComponent(g.run), text: g.run })),
        cell(g.type + " #" + g.seq), cell(g.error, "text"))));
      document.getElementById("no-give-ups").hidden = gives.length > 0;
      document.getElementById("give-ups").hidden = gives.length === 0;
      for (const id of ["notifiers", "per-run", "give-ups"]) labelCells(document.getElementById(id));
    }
    async function load() {
      try { render(await api("/v1/deliveries")); } catch (e) { document.getElementById("outbox").textContent = "Cannot read the deliveries: " + e.message; }
    }
    const refresh = throttle(load, 1000);
    load();
    stream({ status: refresh, resync: load });
    setInterval(load, 5000); // ages, and the end of a rate limit
  }

  if (page === "runs") runsPage();
  else if (page === "run") runPage();
  else if (page === "notifiers") notifiersPage();
})();
