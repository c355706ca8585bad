//! What a torture run found: per schedule its plan, the counts of its operations and
//! faults and each rule's verdict; over the run the totals per rule and per kind of fault,
//! the failed seeds, and with a canary the share of schedules that caught it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::check::Rule;
use super::history::{Op, Outcome};
use super::plan::Plan;

/// One schedule's result.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    pub seed: u64,
    pub inventory_mode: String,
    /// Against `capshop up --distributed`.
    pub distributed: bool,
    pub passed: bool,
    pub plan: Plan,
    /// Operations by outcome: ok, fail, unknown.
    pub ops: BTreeMap<String, u64>,
    /// The plan's faults by kind: cut, latency, loss, duplicate, lost-ack, delay, stop, kill.
    pub faults: BTreeMap<String, u64>,
    pub settle_seconds: Option<f64>,
    pub rules: Vec<Rule>,
    /// The ops a failure's examples name, for replaying it by hand.
    pub excerpt: Vec<Value>,
    pub history: String,
    pub plot: String,
}

impl Schedule {
    pub fn new(
        seed: u64,
        mode: &str,
        plan: Plan,
        ops: &[Op],
        rules: Vec<Rule>,
        settled: Option<f64>,
    ) -> Self {
        let mut counts = BTreeMap::new();
        for op in ops.iter().filter(|op| op.outcome != Outcome::Info) {
            let outcome = serde_json::to_value(op.outcome).ok().and_then(|v| v.as_str().map(str::to_owned));
            *counts.entry(outcome.unwrap_or_default()).or_default() += 1;
        }
        let mut faults = BTreeMap::new();
        for step in &plan.steps {
            *faults.entry(step.fault.kind().to_owned()).or_default() += 1;
        }
        let passed = rules.iter().all(|r| r.violations == 0);
        let excerpt = if passed { Vec::new() } else { excerpt(ops, &rules) };
        Self {
            seed,
            inventory_mode: mode.to_owned(),
            distributed: false,
            passed,
            plan,
            ops: counts,
            faults,
            settle_seconds: settled,
            rules,
            excerpt,
            history: String::new(),
            plot: String::new(),
        }
    }

    /// One line per rule, and for a failure its plan and the excerpt.
    pub fn text(&self) -> String {
        let ops: Vec<String> = self.ops.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let faults: Vec<String> = self.faults.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let mut out = format!(
            "schedule seed {} ({}): {}  [{}; faults: {}; settled {}]\n",
            self.seed,
            self.inventory_mode,
            if self.passed { "passed" } else { "FAILED" },
            ops.join(", "),
            if faults.is_empty() { "none".to_owned() } else { faults.join(", ") },
            self.settle_seconds.map_or("never".to_owned(), |s| format!("in {s:.2} s")),
        );
        for rule in &self.rules {
            out.push_str(&format!(
                "  [{}] {:<42} checked {:>5}  violations {}{}\n",
                if rule.violations == 0 { "ok" } else { "FAILED" },
                rule.rule,
                rule.checked,
                rule.violations,
                if rule.recovered > 0 {
                    format!("  (unknown outcomes that took effect: {})", rule.recovered)
                } else {
                    String::new()
                }
            ));
            if rule.known > 0 {
                out.push_str(&format!(
                    "        known defects (not counted; --strict counts them): {}\n",
                    rule.known
                ));
            }
            for example in rule.examples.iter().chain(&rule.known_examples) {
                out.push_str(&format!("        {example}\n"));
            }
        }
        if !self.passed {
            out.push_str(&self.plan.text());
            out.push_str(&format!(
                "  replay: capshop torture --seed {} --schedules 1 --inventory-mode {}{}\n",
                self.seed,
                self.inventory_mode,
                if self.distributed { " --distributed" } else { "" }
            ));
            out.push_str("  history excerpt:\n");
            for op in &self.excerpt {
                out.push_str(&format!("    {op}\n"));
            }
        }
        out.push_str(&format!("  history: {}\n  plot: {}\n", self.history, self.plot));
        out
    }
}

/// The ops (and nemesis actions around them) whose keys a failure's examples name.
fn excerpt(ops: &[Op], rules: &[Rule]) -> Vec<Value> {
    let examples: Vec<&String> = rules.iter().flat_map(|r| &r.examples).collect();
    let named = |op: &Op| {
        let id = op.ids["id"].as_str().unwrap_or("\u{0}");
        let key = if op.key.is_empty() { "\u{0}" } else { op.key.as_str() };
        examples.iter().any(|e| e.contains(key) || e.contains(id))
    };
    ops.iter()
        .filter(|op| op.client == "nemesis" || named(op))
        .take(40)
        .filter_map(|op| serde_json::to_value(op).ok())
        .collect()
}

/// The whole run: every schedule and the totals per rule.
pub fn summary(schedules: &[Schedule], canary: Option<&str>) -> Value {
    let mut totals: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
    for rule in schedules.iter().flat_map(|s| &s.rules) {
        let total = totals.entry(rule.rule).or_default();
        for (sum, n) in total.iter_mut().zip([rule.checked, rule.violations, rule.recovered, rule.known]) {
            *sum += n;
        }
    }
    let rules: Vec<Value> = totals
        .iter()
        .map(|(rule, [checked, violations, recovered, known])| {
            json!({ "rule": rule, "checked": checked, "violations": violations, "recovered": recovered, "known_defects": known })
        })
        .collect();
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    for (kind, n) in schedules.iter().flat_map(|s| &s.faults) {
        *faults.entry(kind.as_str()).or_default() += n;
    }
    let failed: Vec<u64> = schedules.iter().filter(|s| !s.passed).map(|s| s.seed).collect();
    let mut out = json!({
        "passed": failed.is_empty(),
        "schedules": schedules.len(),
        "failed_seeds": failed,
        "rules": rules,
        "faults": faults,
        "per_schedule": schedules,
    });
    if let Some(canary) = canary {
        let rate = failed.len() as f64 / schedules.len().max(1) as f64;
        out["canary"] =
            json!({ "name": canary, "caught": failed.len(), "of": schedules.len(), "detection_rate": rate });
    }
    out
}

/// The totals as `capshop torture` prints them at the end.
pub fn summary_text(summary: &Value) -> String {
    let mut out =
        format!("\n{} schedules, failed seeds: {}\n", summary["schedules"], summary["failed_seeds"]);
    let faults: Vec<String> =
        summary["faults"].as_object().into_iter().flatten().map(|(kind, n)| format!("{n} {kind}")).collect();
    out.push_str(&format!("  faults: {}\n", faults.join(", ")));
    for rule in summary["rules"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<42} checked {:>6}  violations {:>3}  recovered {:>4}  known defects {}\n",
            rule["rule"].as_str().unwrap_or(""),
            rule["checked"],
            rule["violations"],
            rule["recovered"],
            rule["known_defects"]
        ));
    }
    if let Some(canary) = summary.get("canary") {
        out.push_str(&format!(
            "canary {}: caught in {} of {} schedules ({:.0} %)\n",
            canary["name"].as_str().unwrap_or(""),
            canary["caught"],
            canary["of"],
            canary["detection_rate"].as_f64().unwrap_or(0.0) * 100.0
        ));
    }
    out
}
