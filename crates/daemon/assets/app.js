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
  function runsPage() {
    const name = document.getElementById("f-name");
    const state = document.getElementById("f-state");
    const params = new URLSearchParams(location.search);
    name.value = params.get("name") || "";
    state.value = params.get("state") || "";
    let rows = [];
    const tbody = document.querySelector("#runs tbody");

    function render() {
      const out = rows.map((r) => {
        const done = r.epochs_done, total = r.n_epochs;
        const epoch = el("td", {}, total ? done + "/" + total : String(done));
        if (total) epoch.append(el("progress", { max: total, value: Math.min(done, total), "aria-label": "epochs done" }));
        const e = r.last_epoch;
        const metrics = e ? Object.entries(e.metrics || {}).map(([m, v]) => m + " " + num(v)).join(", ") : "";
        const best = Object.entries(r.best).filter(([k]) => k !== "train_loss").map(([k, v]) => k + " " + num(v)).join(", ");
        const link = el("a", { href: "/runs/" + encodeURIComponent(r.run), text: r.name });
        return el("tr", { "data-run": r.run },
          el("td", {}, stateBadge(r.state)),
          el("td", { class: "text" }, link),
          cell(r.host, "wide"),
          epoch,
          cell(r.state === "running" ? duration(r.eta_s) : "—", "wide"),
          cell(num(r.last_batch ? r.last_batch[3] : (e && e.train_loss)), "num"),
          cell(num(e && e.valid_loss), "num"),
          cell(metrics, "wide"),
          cell(best, "wide"),
          cell(age(r.last_event_ms)));
      });
      patchRows(tbody, out);
      document.getElementById("empty").hidden = rows.length > 0 || name.value !== "" || state.value !== "";
    }
    async function load() {
      const q = new URLSearchParams();
      if (name.value) q.set("name", name.value);
      if (state.value) q.set("state", state.value);
      try {
        const list = await api("/v1/runs?" + q.toString());
        rows = list.runs;
        document.getElementById("count").textContent =
          list.matched + (list.matched === 1 ? " run" : " runs") + (list.matched > rows.length ? ", latest " + rows.length + " shown" : "");
        render();
      } catch (e) {
        document.getElementById("count").textContent = "Cannot read the runs: " + e.message;
      }
    }
    const refresh = throttle(load, 1000);
    function filtersChanged() {
      const q = new URLSearchParams();
      if (name.value) q.set("name", name.value);
      if (state.value) q.set("state", state.value);
      history.replaceState(null, "", q.toString() ? "?" + q.toString() : location.pathname);
      load();
    }
    document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); filtersChanged(); });
    name.addEventListener("input", filtersChanged);
    state.addEventListener("change", filtersChanged);
    load();
    stream({ any: refresh, resync: load });
    setInterval(render, 1000); // ages
    setInterval(load, 15000); // stop requests are not events
  }

  // ---- Run -------------------------------------------------------------------------------------------------
  function runPage() {
    const run = decodeURIComponent(location.pathname.replace(/^\/runs\//, ""));
    const base = "/v1/runs/" + encodeURIComponent(run);
    const err = document.getElementById("run-error");
    let detail = null;
    let chart = null;
    let series = { x: [], y: [], ex: [], ev: [], et: [], bpe: 0 };

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

      document.getElementById("events").replaceChildren(...detail.events.map((e) => el("li", {},
        el("time", { datetime: e.time, text: clock(Date.parse(e.time)) }), describe(e))));

      document.querySelector("#run-deliveries tbody").replaceChildren(...detail.deliveries.map((d) => el("tr", {},
        cell(d.notifier), cell(d.type),
        cell(d.latest_receipt == null ? "—" : JSON.stringify(d.latest_receipt), "text"),
        cell(d.give_ups.length ? d.give_ups.length + ": " + d.give_ups[d.give_ups.length - 1].error : "0", "text"))));
    }

    function describe(e) {
      switch (e.type) {
        case "run_started": return "started" + (e.n_epochs ? ", " + e.n_epochs + " epochs" : "");
        case "epoch_ended": return "epoch " + e.epoch + ": train " + num(e.train_loss) + ", valid " + num(e.valid_loss);
        case "run_finished": return "finished: " + e.status;
        case "run_failed": return "failed: " + (e.error || "") ;
        case "run_stalled": return "stalled: no event for a while";
        case "run_lost": return "lost: the process exited without reporting";
        case "message": return "message: " + (e.title || "") + (e.text ? " " + e.text : "");
        case "alert": return "alert (" + (e.level || "info") + "): " + (e.title || "") + (e.text ? " " + e.text : "");
        default: return e.type;
      }
    }

    function xOf(epoch, batch) {
      if (series.bpe > 0) return epoch * series.bpe + batch;
      return series.x.length ? series.x[series.x.length - 1] + 1 : 0;
    }

    function chartData() {
      // One x axis: batch points carry the train loss, epoch ends the valid loss.
      const xs = [], ys = [], vs = [];
      let i = 0, j = 0;
      while (i < series.x.length || j < series.ex.length) {
        if (j >= series.ex.length || (i < series.x.length && series.x[i] < series.ex[j])) {
          xs.push(series.x[i]); ys.push(series.y[i]); vs.push(null); i++;
        } else if (i >= series.x.length || series.ex[j] < series.x[i]) {
          xs.push(series.ex[j]); ys.push(null); vs.push(series.ev[j]); j++;
        } else {
          xs.push(series.x[i]); ys.push(series.y[i]); vs.push(series.ev[j]); i++; j++;
        }
      }
      return [xs, ys, vs];
    }

    function drawChart() {
      const box = document.getElementById("chart");
      if (typeof uPlot === "undefined") { box.textContent = "The chart library did not load."; return; }
      const log = document.getElementById("log").checked;
      const data = chartData();
      box.dataset.points = String(series.x.length); // for tests and curious readers
      if (chart) {
        if (chart._log === log) { chart.setData(data); return; }
        chart.destroy(); chart = null;
      }
      const width = Math.max(280, box.clientWidth || 600);
      chart = new uPlot({
        width: width, height: width < 500 ? 240 : 320,
        scales: { x: { time: false }, y: log ? { distr: 3 } : {} },
        axes: [{ label: "batch" }, { label: "loss" }],
        series: [
          { label: "batch" },
          { label: "train (smoothed)", stroke: "#0b5cad", width: 1.5, spanGaps: true, points: { show: false } },
          { label: "valid", stroke: "#c2410c", width: 0, spanGaps: true, points: { show: true, size: 7, fill: "#c2410c" } },
        ],
      }, data, box);
      chart._log = log;
    }
    const redraw = throttle(drawChart, 250);

    async function loadDetail() {
      try {
        detail = await api(base);
        series.bpe = detail.context.batches_per_epoch || 0;
        showError("");
        renderDetail();
      } catch (e) {
        showError("Cannot read the run: " + e.message);
      }
    }
    async function loadLoss() {
      try {
        const s = await api(base + "/loss?points=2000");
        series.x = s.x; series.y = s.smooth_loss.map((v) => (isFinite(v) && v > 0) || !document.getElementById("log").checked ? v : null);
        series.ex = s.epochs.map((e) => e.x); series.ev = s.epochs.map((e) => e.valid_loss == null ? null : e.valid_loss);
        drawChart();
      } catch (e) {
        showError("Cannot read the loss: " + e.message);
      }
    }
    const reloadDetail = throttle(loadDetail, 500);

    document.getElementById("log").addEventListener("change", loadLoss);
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

    loadDetail().then(loadLoss);
    const mine = (e) => e && e.run === run;
    stream({
      batch_ended: (e) => {
        if (!mine(e)) return;
        series.x.push(xOf(e.epoch, e.batch));
        series.y.push(e.smooth_loss);
        redraw();
      },
      epoch_ended: (e) => {
        if (!mine(e)) return;
        series.ex.push(series.bpe > 0 ? (e.epoch + 1) * series.bpe : (series.x.length ? series.x[series.x.length - 1] + 1 : 0));
        series.ev.push(e.valid_loss == null ? null : e.valid_loss);
        redraw();
        reloadDetail();
      },
      any: (t, e) => { if (mine(e) && t !== "batch_ended" && t !== "epoch_ended") reloadDetail(); },
      resync: () => { loadDetail(); loadLoss(); },
    });
    setInterval(() => { if (detail) loadDetail(); }, 15000); // stop requests made elsewhere are not events
  }

  // ---- Deliveries ------------------------------------------------------------------------------------------
  function notifiersPage() {
    function render(s) {
      const o = s.outbox;
      document.getElementById("outbox").textContent =
        "Outbox: " + o.jobs + (o.jobs === 1 ? " delivery" : " deliveries") + " waiting" +
        (o.bytes ? ", " + (o.bytes / 1048576).toFixed(1) + " MB on disk" : "");
      document.querySelector("#notifiers tbody").replaceChildren(...s.notifiers.map((n) => {
        const health = n.health ? n.health.state + (n.health.message ? ": " + n.health.message : "") : "—";
        const name = el("td", { class: "text" }, n.name, el("br"), el("span", { class: "muted small", text: n.type }));
        return el("tr", {}, name, cell(health, "text"), cell(String(n.queue)), cell(String(n.delivered)),
          cell(String(n.failed_attempts), "wide"), cell(String(n.gave_up)),
          cell(n.last_delivery_ms ? age(n.last_delivery_ms) : "—", "wide"), cell(n.last_error || "—", "text"));
      }));
      const gives = s.notifiers.flatMap((n) => n.recent_give_ups || []).sort((a, b) => b.at_ms - a.at_ms);
      document.querySelector("#give-ups tbody").replaceChildren(...gives.map((g) => el("tr", {},
        cell(age(g.at_ms)), cell(g.notifier),
        el("td", { class: "text" }, el("a", { href: "/runs/" + encodeURIComponent(g.run), text: g.run })),
        cell(g.type + " #" + g.seq), cell(g.error, "text"))));
      document.getElementById("no-give-ups").hidden = gives.length > 0;
    }
    async function load() {
      try { render(await api("/v1/status")); } catch (e) { document.getElementById("outbox").textContent = "Cannot read the status: " + e.message; }
    }
    load();
    stream({ status: () => load(), resync: load });
  }

  if (page === "runs") runsPage();
  else if (page === "run") runPage();
  else if (page === "notifiers") notifiersPage();
})();
