// The dashboard: reads every service's /metrics (Prometheus text) and its admin API.
const $ = (id) => document.getElementById(id);
const SERVICES = ["customer", "catalog", "inventory", "order", "payment", "shipping", "search"];
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

async function admin(service, method, path, body) {
  const response = await fetch(`/api/${service}/admin/${path}`, {
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
    for (const d of await admin(service, "GET", "dead-letters")) {
      rows.push(`<tr><td>${d.event_id}</td><td>${d.consumer}</td><td>${d.stream}/${d.key}</td><td>${d.attempts}</td>` +
        `<td>${d.parked}</td><td>${d.error}</td><td><button data-service="${service}" data-act="replay" data-event="${d.event_id}">replay</button> ` +
        `<button data-service="${service}" data-act="discard" data-event="${d.event_id}">discard</button></td></tr>`);
    }
  }
  $("dead").tBodies[0].innerHTML = rows.join("") || "<tr><td colspan=7>none</td></tr>";
}

async function refresh() {
  const results = await Promise.all(SERVICES.map(serviceRow));
  $("services").tBodies[0].innerHTML = results.map((r) => r.row).join("");
  $("lag").tBodies[0].innerHTML = results.flatMap((r) => r.lag).join("");
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
