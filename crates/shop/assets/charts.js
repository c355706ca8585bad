// Charts drawn as SVG by the page: a line per series over the last minutes (lag, backlog)
// and a strip per breaker showing its state over time. Samples live in the page only.
const WINDOW_MS = 5 * 60 * 1000;
// Distinct, dark enough on white for lines and swatches (WCAG 3:1 for graphics).
const PALETTE = ["#1f5fa8", "#b3401b", "#1b7f3b", "#7b3fa0", "#8a6d00", "#0f7173", "#a0165f", "#4d4d4d", "#5c4bc4", "#7a4a1d"];

// Timed samples per series name, forgetting what is older than the window.
class History {
  constructor() { this.series = new Map(); }

  record(name, value, now) {
    if (!this.series.has(name)) this.series.set(name, []);
    this.series.get(name).push([now, value]);
  }

  forget(now) {
    for (const [name, points] of this.series) {
      while (points.length && points[0][0] < now - WINDOW_MS) points.shift();
      if (!points.length) this.series.delete(name);
    }
  }
}

function svgEl(name, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// A line chart of every series in `history` over the window ending `now`; the legend
// lists each series with its colour and latest value.
function drawLines(svg, legend, history, now) {
  const [W, H, left, bottom, top] = [460, 220, 44, 22, 10];
  svg.replaceChildren();
  const all = [...history.series.values()].flat();
  // The top of the scale: an even number, so its half is a whole one too.
  const max = 2 * Math.ceil(Math.max(2, ...all.map(([, v]) => v)) / 2);
  const x = (t) => left + ((t - (now - WINDOW_MS)) / WINDOW_MS) * (W - left - 8);
  const y = (v) => H - bottom - (v / max) * (H - bottom - top);
  for (const v of [0, max / 2, max]) {
    svg.append(svgEl("line", { x1: left, x2: W - 8, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(svgEl("text", { x: left - 4, y: y(v) + 4, "text-anchor": "end", class: "axis" }, String(Math.round(v))));
  }
  for (const m of [5, 4, 3, 2, 1, 0]) {
    svg.append(svgEl("text", { x: x(now - m * 60000), y: H - 6, "text-anchor": m ? "middle" : "end", class: "axis" }, m ? `-${m} min` : "now"));
  }
  legend.replaceChildren();
  [...history.series.keys()].sort().forEach((name, i) => {
    const points = history.series.get(name);
    const colour = PALETTE[i % PALETTE.length];
    svg.append(svgEl("polyline", { points: points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      fill: "none", stroke: colour, "stroke-width": 2, "data-series": name }));
    const item = document.createElement("li");
    item.innerHTML = `<span class="swatch-line" style="background:${colour}"></span>`;
    item.append(`${name}: ${points[points.length - 1][1]}`);
    legend.append(item);
  });
  if (!history.series.size) legend.innerHTML = "<li>no samples yet</li>";
}

// One strip per breaker: each sample's state as a coloured segment up to the next one.
function drawStates(svg, caption, history, now) {
  const names = [...history.series.keys()].sort();
  const [W, row, left] = [960, 20, 230];
  svg.setAttribute("viewBox", `0 0 ${W} ${Math.max(1, names.length) * row + 22}`);
  svg.replaceChildren();
  const x = (t) => left + ((t - (now - WINDOW_MS)) / WINDOW_MS) * (W - left - 8);
  names.forEach((name, i) => {
    const points = history.series.get(name);
    svg.append(svgEl("text", { x: left - 6, y: i * row + 14, "text-anchor": "end", class: "axis" }, name));
    // One segment per run of samples in the same state.
    points.forEach(([t, state], k) => {
      if (k > 0 && points[k - 1][1] === state) return;
      let next = k + 1;
      while (next < points.length && points[next][1] === state) next++;
      const end = next < points.length ? points[next][0] : now;
      svg.append(svgEl("rect", { x: x(t), y: i * row + 3, width: Math.max(1, x(end) - x(t)), height: row - 6, class: `breaker-${state}` }));
    });
  });
  svg.append(svgEl("text", { x: left, y: names.length * row + 16, class: "axis" }, "-5 min"));
  svg.append(svgEl("text", { x: W - 8, y: names.length * row + 16, "text-anchor": "end", class: "axis" }, "now"));
  caption.textContent = names.length
    ? "Now: " + names.map((n) => { const p = history.series.get(n); return `${n} ${p[p.length - 1][1]}`; }).join(" · ") +
      ". Green closed, amber half-open, red open."
    : "no breaker reported yet";
}
