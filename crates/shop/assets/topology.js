// The topology picture: draws GET /admin/topology as SVG — parts as boxes, the bus as a
// bar under them, links coloured by their faults — and reports clicks (or Enter/Space on
// a focused link handle or part) to the dashboard, which drives the chaos API.
const SVG_NS = "http://www.w3.org/2000/svg";
const BUS_Y = 370;
// Where each known node sits; a node the shop adds later goes to the spare places.
// Every part's line to the bus runs straight down, so no box stands in another's way.
const PLACES = {
  customer: [80, 60], catalog: [290, 60], payment: [500, 60], shipping: [680, 60], search: [895, 60],
  order: [185, 185], cache: [400, 135], "inventory-dc1": [580, 262], "inventory-dc2": [820, 262],
};
const SPARE = [[380, 262], [700, 175], [400, 210]];

// A link's state as one word: the worst of its faults.
function linkState(link) {
  if (link.cut_out || link.cut_in) return "cut";
  if (link.loss > 0) return "lossy";
  if (link.latency_ms > 0) return "slow";
  return "healthy";
}

function describeLink(link) {
  const faults = [];
  if (link.cut_out && link.cut_in) faults.push("cut both ways");
  else if (link.cut_out) faults.push(`cut ${link.from} → ${link.to}`);
  else if (link.cut_in) faults.push(`cut ${link.to} → ${link.from}`);
  if (link.latency_ms) faults.push(`+${link.latency_ms} ms`);
  if (link.loss) faults.push(`${Math.round(link.loss * 100)}% lost`);
  return faults.join(", ") || "healthy";
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Positions of every node: parts and the cache from PLACES, databases beside their part.
function layout(nodes) {
  const at = {};
  let spare = 0;
  for (const n of nodes) {
    if (n.kind === "bus") continue;
    if (n.kind === "database") continue;
    at[n.name] = PLACES[n.name] || SPARE[spare++ % SPARE.length];
  }
  for (const n of nodes.filter((n) => n.kind === "database")) {
    const owner = at[n.name.replace(/^db:/, "")] || [40, 400];
    at[n.name] = [owner[0] + 52, owner[1] + 34];
  }
  return at;
}

// The two ends of a link's line; opposite links between one pair are drawn apart.
function ends(link, at, links) {
  const from = at[link.from];
  if (link.to === "bus") return [from, [from[0], BUS_Y]];
  const to = at[link.to];
  if (!from || !to) return null;
  const back = links.some((l) => l.from === link.to && l.to === link.from);
  const shift = back ? (link.from < link.to ? -9 : 9) : 0;
  return [[from[0], from[1] + shift], [to[0], to[1] + shift]];
}

// Activates `target` on click and on Enter or Space, as a button does.
function pressable(target, label, onPress) {
  target.setAttribute("tabindex", "0");
  target.setAttribute("role", "button");
  target.setAttribute("aria-label", label);
  target.addEventListener("click", onPress);
  target.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); onPress(); }
  });
}

function drawTopology(svg, topology, selected, onSelect) {
  svg.replaceChildren();
  const at = layout(topology.nodes);
  const bus = topology.nodes.find((n) => n.kind === "bus");
  if (bus) {
    svg.append(el("rect", { x: 30, y: BUS_Y, width: 900, height: 40, rx: 8, class: "bus" }));
    svg.append(el("text", { x: 480, y: BUS_Y + 26, "text-anchor": "middle", class: "bus-label" }, `bus · ${bus.detail}`));
  }
  for (const a of topology.attachments) {
    const [p, q] = [at[a.from], at[a.to]];
    if (p && q) svg.append(el("line", { x1: p[0], y1: p[1], x2: q[0], y2: q[1], class: "attached" }));
  }
  const handles = [];
  for (const link of topology.links) {
    const line = ends(link, at, topology.links);
    if (!line) continue;
    const [[x1, y1], [x2, y2]] = line;
    const state = linkState(link);
    const path = el("line", { x1, y1, x2, y2, class: `link ${state}`, "data-link": link.name, "data-state": state });
    path.append(el("title", {}, `${link.name}: ${describeLink(link)}`));
    path.addEventListener("click", () => onSelect({ link }));
    svg.append(path);
    const [mx, my] = [(x1 + x2) / 2, (y1 + y2) / 2];
    const handle = el("circle", { cx: mx, cy: my, r: 8, class: `handle ${state}${selected === link.name ? " selected" : ""}`,
      "data-link": link.name, "data-state": state });
    pressable(handle, `link ${link.name}: ${describeLink(link)}`, () => onSelect({ link }));
    handles.push(handle);
  }
  for (const node of topology.nodes.filter((n) => n.kind !== "bus")) {
    const [x, y] = at[node.name];
    const small = node.kind === "database" || node.kind === "cache";
    const [w, h] = small ? [86, 24] : [120, 38];
    const state = node.state || "used";
    const group = el("g", { class: `node ${node.kind} ${state}${selected === node.name ? " selected" : ""}`,
      "data-node": node.name, "data-state": state });
    group.append(el("rect", { x: x - w / 2, y: y - h / 2, width: w, height: h, rx: small ? 10 : 6 }));
    const label = node.kind === "database" ? node.detail : node.name;
    group.append(el("text", { x, y: y + (small ? 4 : (node.state && node.state !== "running" ? -1 : 5)), "text-anchor": "middle" }, label));
    if (node.state && node.state !== "running") {
      group.append(el("text", { x, y: y + 13, "text-anchor": "middle", class: "node-state" }, node.state));
    }
    group.append(el("title", {}, `${node.name}: ${node.state || node.kind} · ${node.detail}`));
    if (node.state) pressable(group, `${node.kind} ${node.name}: ${node.state}`, () => onSelect({ node }));
    svg.append(group);
  }
  // Handles last, so no box covers one.
  svg.append(...handles);
}
