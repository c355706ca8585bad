//! The report as a readable table, for a terminal.

use std::fmt::Write as _;

use super::{Class, Report};

impl Report {
    /// The counts, then one line per finding: class, kind, keys, detail.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "reconcile ({}): {} defect(s) — broken links {}, orphans {}, replica mismatches {}, stock {}, counters {}, streams {}; in flight {}",
            self.source,
            self.defects,
            self.broken_links,
            self.orphans,
            self.replica_mismatches,
            self.stock,
            self.counters,
            self.streams,
            self.in_flight
        );
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        if self.findings.is_empty() {
            let _ = writeln!(out, "every relation between the services agrees");
            return out;
        }
        let _ = writeln!(out, "{:<10} {:<34} {:<44} detail", "class", "kind", "keys");
        for f in &self.findings {
            let class = match f.class {
                Class::Defect => "defect",
                Class::InFlight => "in flight",
            };
            let keys = f.keys.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
            let _ = writeln!(out, "{class:<10} {:<34} {keys:<44} {}", f.kind, f.detail);
            if let Some(why) = &f.in_flight {
                let _ = writeln!(out, "{:<10} {:<34} {:<44} ↳ {}", "", "", "", why.reason);
            }
        }
        out
    }
}
