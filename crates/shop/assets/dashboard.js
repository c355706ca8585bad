// The dashboard: reads every part's /metrics (Prometheus text) and admin API through the
// gateway, draws the topology (GET /admin/topology) and drives its faults through the
// chaos routes each link names. The admin token is asked once and kept in sessionStorage.
const $ = (id) => document.getElementById(id);
// Each inventory site is its own part: the gateway routes `/api/inventory-dc2/...` to dc2.
const SERVICES = ["customer", "catalog", "inventory-dc1", "inventory-dc2", "order", "payment", "shipping", "search"];
// The gauge's encoding (kit::breaker::BreakerState::as_gauge): 0 closed, 1 half-open, 2 open.
const BREAKER = ["closed", "half-open", "open"];
const TOKEN_KEY = "capshop-token";
const history = { lag: new History(), backlog: new History(), breakers: new History() };
let topology = null;
let selected = null;
// What the picture shows now: it is redrawn only when this changes, so focus stays put.
let drawn = "";

function redraw() {
  const now = JSON.stringify([topology, selected]);
  if (now === drawn) return;
  drawn = now;
  drawTopology($("topology"), topology, selected, select);
}

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
// Replaces a table body only when it changed, so a redraw neither moves the focus nor
// the button under the pointer.
function setRows(table, html) {
  const body = $(table).tBodies[0];
  if (body.dataset.html !== html) { body.innerHTML = html; body.dataset.html = html; }
}

function showToken() {
  $("token-form").hidden = Boolean(token());
  $("token-set").hidden = !token();
}

// Parses `name{a="b",...} value` lines into {name, labels, value}.
function parseMetrics(text) {
  return text.split("\n").filter((l) => l && !l.startsWith("#")).map((line) => {
    const match = line.match(/^(\w+)(?:\{(.*)\})?\s+(\S+)/);
    if (!match) return null;
    const labels = Object.fromEntries([...(match[2] || "").matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    return { name: match[1], labels, value: Number(match[3]) };
  }).filter(Boolean);
}

async function serviceRow(service, now) {
  try {
    const health = await fetch(`/api/${service}/health`);
    const metrics = parseMetrics(await (await fetch(`/api/${service}/metrics`)).text());
    const pick = (name) => metrics.filter((m) => m.name === name);
    const backlog = pick("capshop_outbox_backlog_events").reduce((n, m) => n + m.value, 0);
    history.backlog.record(service, backlog, now);
    for (const m of pick("capshop_breaker_state")) history.breakers.record(`${service} → ${m.labels.breaker}`, BREAKER[m.value], now);
    const breakers = pick("capshop_breaker_state")
      .map((m) => `<span class="state-${BREAKER[m.value]}">${escape(m.labels.breaker)}: ${BREAKER[m.value]}</span>`).join(" ");
    const dead = pick("capshop_dead_letters").reduce((n, m) => n + m.value, 0);
    const lag = pick("capshop_consumer_lag_events").map((m) => {
      history.lag.record(`${m.labels.consumer} ← ${m.labels.stream}`, m.value, now);
      const same = (name) => pick(name).find((x) => x.labels.consumer === m.labels.consumer && x.labels.stream === m.labels.stream);
      return `<tr><td>${escape(m.labels.consumer)}</td><td>${escape(m.labels.stream)}</td><td>${same("capshop_consumer_applied_seq")?.value ?? ""}</td>` +
        `<td>${same("capshop_source_published_seq")?.value ?? ""}</td><td>${m.value}</td>` +
        `<td>${(same("capshop_consumer_newest_applied_age_seconds")?.value ?? 0).toFixed(1)} s</td></tr>`;
    });
    return { row: `<tr data-service="${service}"><td>${service}</td><td class="${health.ok ? "good" : "bad"}">${health.ok ? "up" : "down"}</td>` +
      `<td>${backlog}</td><td>${breakers || "—"}</td><td class="dead-count">${dead}</td></tr>`, lag };
  } catch (e) {
    return { row: `<tr data-service="${service}"><td>${service}</td><td class="bad">unreachable</td><td></td><td></td><td></td></tr>`, lag: [] };
  }
}

// An admin request with the session's token; a refusal becomes an error with its detail.
async function authorized(url, method = "GET", body) {
  const response = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${token()}`, "content-type": "application/json" },
    body: body && JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.detail || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return data;
}
const admin = (service, method, path, body) => authorized(`/api/${service}/admin/${path}`, method, body);

// ---- topology ----

function select(what) {
  selected = what.link ? what.link.name : what.node.name;
  showSelection();
  if (topology) redraw();
  const first = document.querySelector(what.link ? "#link-actions button" : "#node-actions button");
  if (first) first.focus();
}

function showSelection() {
  const link = topology?.links.find((l) => l.name === selected);
  const node = topology?.nodes.find((n) => n.name === selected);
  $("link-actions").hidden = !link;
  $("node-actions").hidden = !node;
  $("selection-none").hidden = Boolean(link || node);
  if (link) {
    $("link-name").textContent = link.name;
    $("link-state").textContent = describeLink(link);
  }
  if (node) {
    $("node-name").textContent = node.name;
    $("node-state").textContent = node.state;
    $("node-detail").textContent = node.detail;
    for (const b of document.querySelectorAll("#node-actions button")) b.disabled = !node.stoppable;
    $("node-note").hidden = node.stoppable;
  }
}

async function loadTopology() {
  if (!token()) {
    $("topology").replaceChildren();
    drawn = "";
    $("topology-message").textContent = "Enter the admin token to see the topology and change faults.";
    return;
  }
  topology = await authorized("/admin/topology");
  $("mode").textContent = `· ${topology.mode} mode`;
  if ($("topology-message").textContent.startsWith("Enter the admin token")) $("topology-message").textContent = "";
  redraw();
  showSelection();
}

async function linkAction(what) {
  const link = topology.links.find((l) => l.name === selected);
  if (!link) return;
  const [a, b, base] = [link.from, link.to, link.control];
  const body = {
    cut: { a, b }, oneway: { a, b, oneway: true }, heal: { a, b },
    latency: { a, b, ms: Number($("latency-ms").value) }, loss: { a, b, fraction: Number($("loss-fraction").value) },
  }[what];
  const path = { oneway: "cut" }[what] || what;
  await report(`${what} ${link.name}`, () => authorized(`${base}/${path}`, "POST", body));
}

async function nodeAction(what) {
  await report(`${what} ${selected}`, () => authorized(`/admin/chaos/services/${selected}/${what}`, "POST", {}));
}

async function healAll() {
  const controls = [...new Set((topology?.links || []).map((l) => l.control))];
  await report("heal every link", () => Promise.all(controls.map((c) => authorized(`${c}/heal`, "POST", {}))));
}

// Runs `change`, says how it went, and redraws at once.
async function report(what, change) {
  try {
    await change();
    $("topology-message").textContent = `${what}: done`;
  } catch (e) {
    $("topology-message").textContent = `${what}: ${e.message}`;
  }
  await loadTopology().catch((e) => { $("topology-message").textContent = e.message; });
}

// ---- events and dead letters ----

const streams = new Set();

async function loadEvents() {
  if (!token()) {
    setRows("events", "<tr><td colspan=5>enter the admin token to see recent events</td></tr>");
    return;
  }
  const lists = await Promise.all(SERVICES.map((s) => admin(s, "GET", "events?limit=30").catch(() => [])));
  const now = Date.now();
  const filter = $("event-filter").value.trim().toLowerCase();
  const stream = $("event-stream").value;
  const events = lists.flat().sort((x, y) => y.occurred_at_ms - x.occurred_at_ms);
  for (const e of events) {
    if (!streams.has(e.stream)) {
      streams.add(e.stream);
      $("event-stream").append(new Option(e.stream, e.stream));
    }
  }
  const shown = events.filter((e) => (!stream || e.stream === stream) &&
    (!filter || `${e.kind} ${e.key} ${e.stream}`.toLowerCase().includes(filter))).slice(0, 60);
  setRows("events", shown.map((e) =>
    `<tr><td>${escape(e.kind)}</td><td>${escape(e.key)}</td><td>${escape(e.stream)}</td><td>${e.seq}</td>` +
    `<td>${Math.max(0, (now - e.occurred_at_ms) / 1000).toFixed(1)} s</td></tr>`).join("") ||
    "<tr><td colspan=5>no event matches</td></tr>");
}

let letters = [];

async function loadDeadLetters() {
  if (!token()) {
    setRows("dead", "<tr><td colspan=7>enter the admin token to see dead letters</td></tr>");
    return;
  }
  const found = new Map();
  const problems = [];
  for (const service of SERVICES) {
    try {
      for (const d of await admin(service, "GET", "dead-letters")) found.set(`${d.consumer} ${d.event_id}`, { ...d, service });
    } catch (e) {
      // A stopped service cannot list its dead letters; the others still can.
      problems.push(`<tr><td colspan=7 class="bad">${service}: ${escape(e.message)}</td></tr>`);
    }
  }
  letters = [...found.values()];
  setRows("dead", letters.map((d, i) =>
    `<tr><td>${escape(d.event_id)}</td><td>${escape(d.consumer)}</td><td>${escape(d.stream)}/${escape(d.key)}</td><td>${d.attempts}</td>` +
    `<td>${d.parked}</td><td>${escape(d.error)}</td><td>` +
    `<button type="button" data-letter="${i}" data-act="inspect">inspect</button> ` +
    `<button type="button" data-letter="${i}" data-act="replay">replay</button> ` +
    `<button type="button" data-letter="${i}" data-act="discard">discard</button></td></tr>`).join("") +
    problems.join("") || "<tr><td colspan=7>none</td></tr>");
}

$("dead").addEventListener("click", async (event) => {
  const { letter, act } = event.target.dataset;
  const d = letters[Number(letter)];
  if (!act || !d) return;
  if (act === "inspect") {
    $("dead-envelope").hidden = false;
    $("dead-envelope").textContent = `${d.consumer} · ${d.event_id}\n${JSON.stringify(d.envelope, null, 2)}`;
    $("dead-envelope").focus();
    return;
  }
  try {
    const { count } = await admin(d.service, "POST", `dead-letters/${act}`, { consumer: d.consumer, event_id: d.event_id });
    $("message").textContent = `${act} ${d.event_id}: ${count}`;
    await loadDeadLetters();
  } catch (e) { $("message").textContent = e.message; }
});

// ---- reconcile and scenarios: shown when this shop has the routes ----

async function loadReconcile() {
  if (!token()) { $("reconcile").textContent = "Enter the admin token to use backups and reconcile."; return; }
  try {
    const report = await authorized("/admin/reconcile");
    const summary = `${report.defects} defects, ${report.in_flight} in flight ` +
      `(broken links ${report.broken_links}, orphans ${report.orphans}, replica mismatches ${report.replica_mismatches})`;
    $("reconcile").innerHTML = `<p>${escape(summary)}</p>` +
      (report.findings.length ? `<pre tabindex="0">${escape(JSON.stringify(report.findings, null, 2))}</pre>` : "");
  } catch (e) {
    $("reconcile").textContent = e.status === 404 || e.status === 405
      ? "Not available: this shop has no /admin/reconcile route."
      : `reconcile: ${e.message}`;
  }
}

// Plots of finished runs, as data URLs (an <img> cannot send the token itself).
const plots = new Map();

async function loadScenarios() {
  if (!token()) { $("scenarios").textContent = "Enter the admin token to run scenarios."; $("scenarios").dataset.html = ""; return; }
  let list;
  try {
    list = await authorized("/admin/scenarios");
  } catch (e) {
    $("scenarios").dataset.html = "";
    $("scenarios").innerHTML = e.status === 404
      ? "<p>Not available in this process: scenarios run from <code>capshop up</code> (embedded mode) only; " +
        "a scenario starts fresh shops of its own. Run one with <code>capshop scenario --list</code> and " +
        "<code>capshop scenario NAME</code>; it prints its report and writes its plot.</p>"
      : `<p>scenarios: ${escape(e.message)}</p>`;
    return;
  }
  for (const s of list.filter((s) => s.report && s.state !== "error" && !plots.has(`${s.name} ${s.report}`))) {
    const svg = await fetch(`/admin/scenarios/${s.name}/plot`, { headers: { authorization: `Bearer ${token()}` } });
    if (svg.ok) plots.set(`${s.name} ${s.report}`, `data:image/svg+xml;base64,${btoa(unescape(encodeURIComponent(await svg.text())))}`);
  }
  const busy = list.some((s) => s.state === "running");
  const html = "<p>Each scenario runs on fresh shops of its own in a temporary directory, not on this shop, one at a time. " +
    '<label><input type="checkbox" id="scenario-quick"> short phases (a few seconds, as <code>--quick</code>)</label></p>' +
    `<table><thead><tr><th scope="col">scenario</th><th scope="col">what it shows</th><th scope="col">last run</th><th scope="col">run</th></tr></thead><tbody>` +
    list.map((s) => `<tr><td>${escape(s.name)}</td><td>${escape(s.summary)}</td><td class="run-${s.state}">${escape(s.state)}${s.quick ? " (short)" : ""}</td>` +
      `<td><button type="button" data-scenario="${escape(s.name)}" ${busy ? "disabled" : ""}>run ${escape(s.name)}</button></td></tr>` +
      (s.report ? `<tr><td colspan=4><details open><summary>report of ${escape(s.name)}</summary><pre tabindex="0">${escape(s.report)}</pre>` +
        (plots.has(`${s.name} ${s.report}`) ? `<img alt="plot of the ${escape(s.name)} run" src="${plots.get(`${s.name} ${s.report}`)}">` : "") +
        "</details></td></tr>" : "")).join("") + "</tbody></table>";
  const quick = $("scenario-quick")?.checked;
  if ($("scenarios").dataset.html !== html) {
    $("scenarios").innerHTML = html;
    $("scenarios").dataset.html = html;
    if (quick) $("scenario-quick").checked = true;
  }
}

$("scenarios").addEventListener("click", async (event) => {
  const name = event.target.dataset.scenario;
  if (!name) return;
  try {
    await authorized(`/admin/scenarios/${name}/run`, "POST", { quick: Boolean($("scenario-quick")?.checked) });
    $("message").textContent = `scenario ${name} started`;
  } catch (e) { $("message").textContent = e.message; }
  await loadScenarios();
});

// ---- wiring ----

async function refresh() {
  const now = Date.now();
  const results = await Promise.all(SERVICES.map((s) => serviceRow(s, now)));
  for (const h of Object.values(history)) h.forget(now);
  setRows("services", results.map((r) => r.row).join(""));
  setRows("lag", results.flatMap((r) => r.lag).join(""));
  drawLines($("lag-chart"), $("lag-legend"), history.lag, now);
  drawLines($("backlog-chart"), $("backlog-legend"), history.backlog, now);
  drawStates($("breaker-chart"), $("breaker-now"), history.breakers, now);
  for (const [what, load] of [["topology", loadTopology], ["events", loadEvents], ["dead letters", loadDeadLetters], ["scenarios", loadScenarios], ["backups", loadBackups]]) {
    try { await load(); } catch (e) { $("message").textContent = `${what}: ${e.message}`; }
  }
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  showToken();
  refresh();
  loadReconcile();
  loadScenarios();
});
$("token-forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  topology = null;
  showToken();
  refresh();
  loadReconcile();
  loadScenarios();
});
$("link-actions").addEventListener("click", (event) => event.target.dataset.linkAct && linkAction(event.target.dataset.linkAct));
$("node-actions").addEventListener("click", (event) => event.target.dataset.nodeAct && nodeAction(event.target.dataset.nodeAct));
$("heal-all").addEventListener("click", healAll);
$("reconcile-run").addEventListener("click", () => loadReconcile());
$("event-filter").addEventListener("input", () => loadEvents().catch(() => {}));
$("event-stream").addEventListener("change", () => loadEvents().catch(() => {}));
showToken();
refresh();
loadReconcile();
loadScenarios();
setInterval(refresh, 2000);
