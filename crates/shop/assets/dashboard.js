// The dashboard: reads every service's /metrics (Prometheus text) and its admin API, and
// drives the gateway's fault controls (/admin/chaos).
const $ = (id) => document.getElementById(id);
// Each inventory site is its own row: the gateway routes `/api/inventory-dc2/...` to dc2.
const SERVICES = ["customer", "catalog", "inventory-dc1", "inventory-dc2", "order", "payment", "shipping", "search"];
// The gauge's encoding (kit::breaker::BreakerState::as_gauge): 0 closed, 1 half-open, 2 open.
const BREAKER = ["closed", "half-open", "open"];

// Parses `name{a="b",...} value` lines into {name, labels, value}.
function parseMetrics(text) {
  return text.split("\n").filter((l) => l && !l.startsWith("#")).map((line) => {
    const match = line.match(/^(\w+)(?:\{(.*)\})?\s+(\S+)/);
    if (!match) return null;
    const labels = Object.fromEntries([...(match[2] || "").matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    return { name: match[1], labels, value: Number(match[3]) };
  }).filter(Boolean);
}

async function serviceRow(service) {
  try {
    const health = await fetch(`/api/${service}/health`);
    const metrics = parseMetrics(await (await fetch(`/api/${service}/metrics`)).text());
    const pick = (name) => metrics.filter((m) => m.name === name);
    const backlog = pick("capshop_outbox_backlog_events").reduce((n, m) => n + m.value, 0);
    const breakers = pick("capshop_breaker_state")
      .map((m) => `<span class="state-${BREAKER[m.value]}">${m.labels.breaker}: ${BREAKER[m.value]}</span>`).join(" ");
    const dead = pick("capshop_dead_letters").reduce((n, m) => n + m.value, 0);
    const lag = pick("capshop_consumer_lag_events").map((m) => {
      const same = (name) => pick(name).find((x) => x.labels.consumer === m.labels.consumer && x.labels.stream === m.labels.stream);
      return `<tr><td>${m.labels.consumer}</td><td>${m.labels.stream}</td><td>${same("capshop_consumer_applied_seq")?.value ?? ""}</td>` +
        `<td>${same("capshop_source_published_seq")?.value ?? ""}</td><td>${m.value}</td>` +
        `<td>${(same("capshop_consumer_newest_applied_age_seconds")?.value ?? 0).toFixed(1)} s</td></tr>`;
    });
    return { row: `<tr><td>${service}</td><td class="${health.ok ? "good" : "bad"}">${health.ok ? "up" : "down"}</td>` +
      `<td>${backlog}</td><td>${breakers || "—"}</td><td>${dead}</td></tr>`, lag };
  } catch (e) {
    return { row: `<tr><td>${service}</td><td class="bad">unreachable</td><td></td><td></td><td></td></tr>`, lag: [] };
  }
}

// An admin request with the typed token; a refusal becomes an error with its detail.
async function authorized(url, method, body) {
  const response = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${$("token").value}`, "content-type": "application/json" },
    body: body && JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.detail);
  return data;
}

async function loadDeadLetters() {
  if (!$("token").value) {
    $("dead").tBodies[0].innerHTML = "<tr><td colspan=7>enter the admin token to see dead letters</td></tr>";
    return;
  }
  const rows = [];
  for (const service of SERVICES) {
    let letters;
    try { letters = await admin(service, "GET", "dead-letters"); } catch (e) {
      // A stopped service cannot list its dead letters; the others still can.
      rows.push(`<tr><td colspan=7 class="bad">${service}: ${e.message}</td></tr>`);
      continue;
    }
    for (const d of letters) {
      rows.push(`<tr><td>${d.event_id}</td><td>${d.consumer}</td><td>${d.stream}/${d.key}</td><td>${d.attempts}</td>` +
        `<td>${d.parked}</td><td>${d.error}</td><td><button data-service="${service}" data-act="replay" data-event="${d.event_id}">replay</button> ` +
        `<button data-service="${service}" data-act="discard" data-event="${d.event_id}">discard</button></td></tr>`);
    }
  }
  $("dead").tBodies[0].innerHTML = rows.join("") || "<tr><td colspan=7>none</td></tr>";
}

const admin = (service, method, path, body) => authorized(`/api/${service}/admin/${path}`, method, body);
const chaos = (method, path, body) => authorized(`/admin/chaos${path}`, method, body);

function describe(link) {
  const faults = [];
  if (link.cut_out && link.cut_in) faults.push("cut both ways");
  else if (link.cut_out) faults.push(`cut ${link.from} → ${link.to}`);
  else if (link.cut_in) faults.push(`cut ${link.to} → ${link.from}`);
  if (link.latency_ms) faults.push(`+${link.latency_ms} ms`);
  if (link.loss) faults.push(`${Math.round(link.loss * 100)}% lost`);
  return faults.join(", ") || "healthy";
}

function showChaos(status) {
  $("links").tBodies[0].innerHTML = status.links.map((l) => {
    const pair = `data-a="${l.from}" data-b="${l.to}"`;
    return `<tr><td>${l.name}</td><td class="${describe(l) === "healthy" ? "good" : "bad"}">${describe(l)}</td><td>` +
      `<button ${pair} data-act="cut">cut</button> <button ${pair} data-act="oneway">cut ${l.from} → ${l.to}</button> ` +
      `<button ${pair} data-act="latency">slow</button> <button ${pair} data-act="loss">lossy</button> ` +
      `<button ${pair} data-act="heal">heal</button></td></tr>`;
  }).join("");
  $("chaos-services").tBodies[0].innerHTML = status.services.map((s) =>
    `<tr><td>${s.name}</td><td class="${s.state === "running" ? "good" : "bad"}">${s.state}</td><td>` +
    `<button data-service="${s.name}" data-act="${s.state === "running" ? "stop" : "start"}">${s.state === "running" ? "stop" : "start"}</button></td></tr>`).join("");
}

async function loadChaos() {
  if (!$("token").value) {
    $("links").tBodies[0].innerHTML = "<tr><td colspan=3>enter the admin token to see and change faults</td></tr>";
    $("chaos-services").tBodies[0].innerHTML = "";
    return;
  }
  showChaos(await chaos("GET", ""));
}

async function act(target) {
  const { act: what, a, b, service } = target.dataset;
  if (!what) return;
  const change = {
    cut: () => chaos("POST", "/cut", { a, b }),
    oneway: () => chaos("POST", "/cut", { a, b, oneway: true }),
    latency: () => chaos("POST", "/latency", { a, b, ms: Number($("latency-ms").value) }),
    loss: () => chaos("POST", "/loss", { a, b, fraction: Number($("loss-fraction").value) }),
    heal: () => chaos("POST", "/heal", { a, b }),
    "heal-all": () => chaos("POST", "/heal", {}),
    stop: () => chaos("POST", `/services/${service}/stop`, {}),
    start: () => chaos("POST", `/services/${service}/start`, {}),
  }[what];
  if (!change) return;
  try {
    showChaos(await change());
    $("message").textContent = `${what} ${service || (a ? `${a} ${b}` : "")}: done`;
  } catch (e) { $("message").textContent = e.message; }
}

for (const id of ["links", "chaos-services"]) $(id).addEventListener("click", (event) => act(event.target));
document.querySelector('[data-act="heal-all"]').addEventListener("click", (event) => act(event.target));

async function refresh() {
  const results = await Promise.all(SERVICES.map(serviceRow));
  $("services").tBodies[0].innerHTML = results.map((r) => r.row).join("");
  $("lag").tBodies[0].innerHTML = results.flatMap((r) => r.lag).join("");
  try { await loadChaos(); } catch (e) { $("message").textContent = e.message; }
  try { await loadDeadLetters(); } catch (e) { $("message").textContent = e.message; }
}

$("dead").addEventListener("click", async (event) => {
  const { service, act, event: id } = event.target.dataset;
  if (!act) return;
  try {
    const { count } = await admin(service, "POST", `dead-letters/${act}`, { event_id: id });
    $("message").textContent = `${act}: ${count}`;
    await refresh();
  } catch (e) { $("message").textContent = e.message; }
});
$("token").addEventListener("change", () => { sessionStorage.setItem("capshop-token", $("token").value); refresh(); });
$("token").value = sessionStorage.getItem("capshop-token") || "";
refresh();
setInterval(refresh, 2000);
