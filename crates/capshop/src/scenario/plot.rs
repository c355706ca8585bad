//! A scenario's plot as a small self-contained SVG: replication lag, outbox backlog and
//! dead letters over time on top, the load's success rate below, fault windows shaded in both.

use std::fmt::Write as _;

use super::timeline::{Events, ratio};

const WIDTH: f64 = 820.0;
const PANEL: f64 = 170.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 50.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// Renders `events` of the scenario `title`.
pub fn svg(title: &str, events: &Events) -> String {
    let end = events
        .samples
        .iter()
        .map(|s| s.t)
        .chain(events.attempts.iter().map(|a| a.t))
        .chain(events.windows.iter().filter_map(|w| w.to))
        .fold(1.0_f64, f64::max);
    let x = |t: f64| LEFT + (WIDTH - LEFT - RIGHT) * t / end;
    let height = TOP + 2.0 * PANEL + GAP + 64.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>
"##,
        escape(title)
    );
    let panels = [(TOP, "events"), (TOP + PANEL + GAP, "success rate")];
    for (top, label) in panels {
        for window in &events.windows {
            let (from, to) = (x(window.from), x(window.to.unwrap_or(end)));
            let _ = writeln!(
                out,
                r##"<rect x="{from:.1}" y="{top}" width="{:.1}" height="{PANEL}" fill="#f4a582" fill-opacity="0.35"/><text x="{:.1}" y="{:.1}" fill="#b2182b">{}</text>"##,
                (to - from).max(1.0),
                from + 3.0,
                top + 14.0,
                escape(&window.label)
            );
        }
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{:.1}" height="{PANEL}" fill="none" stroke="#444"/><text x="8" y="{:.1}" transform="rotate(-90 8 {:.1})" text-anchor="middle">{label}</text>"##,
            WIDTH - LEFT - RIGHT,
            top + PANEL / 2.0,
            top + PANEL / 2.0
        );
    }
    let (lag_top, rate_top) = (panels[0].0, panels[1].0);
    let max_events =
        events.samples.iter().map(|s| s.lag.max(s.backlog).max(s.dead)).max().unwrap_or(0).max(1) as f64;
    let y_events = |v: u64| lag_top + PANEL - PANEL * v as f64 / max_events;
    axis(&mut out, lag_top, &format!("{max_events:.0}"), "0");
    axis(&mut out, rate_top, "100%", "0%");
    let mut legend = Vec::new();
    let series: Vec<String> = unique(events.samples.iter().map(|s| s.series.clone()));
    for (i, name) in series.iter().enumerate() {
        let of = |pick: fn(&super::timeline::Sample) -> u64| {
            events
                .samples
                .iter()
                .filter(|s| &s.series == name)
                .map(|s| (x(s.t), y_events(pick(s))))
                .collect::<Vec<_>>()
        };
        let colour = COLOURS[i % COLOURS.len()];
        line(&mut out, &of(|s| s.lag), colour, SOLID);
        line(&mut out, &of(|s| s.backlog), colour, DASHED);
        line(&mut out, &of(|s| s.dead), colour, DOTTED);
        legend.push((format!("{name}: lag (solid), outbox backlog (dashed), dead letters (dotted)"), colour));
    }
    let bucket = (end / 40.0).max(0.25);
    let attempts: Vec<String> = unique(events.attempts.iter().map(|a| a.series.clone()));
    for (i, name) in attempts.iter().enumerate() {
        let mut points = Vec::new();
        let mut from = 0.0;
        while from < end {
            let inside: Vec<_> = events
                .attempts
                .iter()
                .filter(|a| &a.series == name && a.t >= from && a.t < from + bucket)
                .cloned()
                .collect();
            if let Some(rate) = ratio(&inside) {
                points.push((x((from + bucket / 2.0).min(end)), rate_top + PANEL - PANEL * rate));
            }
            from += bucket;
        }
        let colour = COLOURS[(i + 2) % COLOURS.len()];
        line(&mut out, &points, colour, SOLID);
        legend.push((format!("{name}: share of calls that succeeded"), colour));
    }
    for (i, (text, colour)) in legend.iter().enumerate() {
        let y = rate_top + PANEL + 34.0 + 14.0 * (i / 2) as f64;
        let lx = LEFT + 380.0 * (i % 2) as f64;
        let _ = writeln!(
            out,
            r##"<rect x="{lx}" y="{:.1}" width="12" height="4" fill="{colour}"/><text x="{:.1}" y="{y:.1}">{}</text>"##,
            y - 5.0,
            lx + 16.0,
            escape(text)
        );
    }
    let bottom = rate_top + PANEL + 14.0;
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="{bottom}">0 s</text><text x="{:.1}" y="{bottom}" text-anchor="end">{end:.1} s</text>"##,
        WIDTH - RIGHT
    );
    out.push_str("</svg>\n");
    out
}

fn axis(out: &mut String, top: f64, high: &str, low: &str) {
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{high}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{low}</text>"##,
        LEFT - 4.0,
        top + 10.0,
        LEFT - 4.0,
        top + PANEL
    );
}

const SOLID: &str = r#"stroke-width="1.6""#;
const DASHED: &str = r#"stroke-width="1.6" stroke-dasharray="5 3""#;
const DOTTED: &str = r#"stroke-width="3" stroke-dasharray="1 3""#;

fn line(out: &mut String, points: &[(f64, f64)], colour: &str, style: &str) {
    if points.is_empty() {
        return;
    }
    let path: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ =
        writeln!(out, r##"<polyline points="{}" fill="none" stroke="{colour}" {style}/>"##, path.join(" "));
}

fn unique(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = Vec::new();
    for name in names {
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
