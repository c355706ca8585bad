//! The nemesis plan of one schedule, derived from its seed alone, so `--seed S` replays it:
//! faults on two lanes (at most two at a time), each healed within [`MAX_FAULT`]; a SIGKILL
//! of the whole process, at a random time or at one of the kit's crash points, is alone on
//! the schedule while it lasts, and one right after a commit begins every schedule. Faults
//! inside the bus (deliveries duplicated, acks lost, deliveries delayed) are a broker's:
//! they are set on every part's bus link at once, so every consumer meets them. Every plan
//! long enough partitions the two inventory sites once, both ways, for 1.5 s to
//! [`MAX_FAULT`]: that is where ap and cp differ, and where the workload contends for the
//! last units.

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;

/// The longest a fault lasts before the nemesis heals it.
pub const MAX_FAULT: f64 = 4.0;

/// The longest the nemesis waits for a crash point before it kills the process anyway.
const CRASH_BOUND: f64 = 0.8;

/// The link between the inventory sites.
const SITES: (&str, &str) = ("inventory-dc1", "inventory-dc2");

/// The shortest partition of the sites a plan has: long enough for both sites to take
/// orders while they cannot see each other.
const SITES_CUT_MIN: f64 = 1.5;

/// Links the nemesis faults: the synchronous calls, each part's bus link, and the sites'
/// link three times over, since a partition of the sites is where ap and cp differ.
const LINKS: [(&str, &str); 13] = [
    ("inventory-dc1", "inventory-dc2"),
    ("inventory-dc1", "inventory-dc2"),
    ("order", "customer"),
    ("order", "catalog"),
    ("order", "payment"),
    ("order", "bus"),
    ("customer", "bus"),
    ("catalog", "bus"),
    ("payment", "bus"),
    ("shipping", "bus"),
    ("inventory-dc1", "bus"),
    ("inventory-dc2", "bus"),
    ("inventory-dc1", "inventory-dc2"),
];

/// The parts with a link to the bus (`inventory` names both sites' links), which a fault
/// inside the bus is set on.
pub const ON_THE_BUS: [&str; 7] =
    ["order", "customer", "catalog", "payment", "shipping", "search", "inventory"];

/// Parts the nemesis stops and starts again.
const PARTS: [&str; 7] =
    ["customer", "catalog", "payment", "shipping", "search", "inventory-dc1", "inventory-dc2"];

/// The kit's crash points (`kit::crashpoint`) a [`Fault::CrashPoint`] is drawn at: right
/// after a transaction that appended outbox rows commits, after the relay published a batch
/// and before it marks it relayed, after a consumer's effects commit and before its ack.
pub const CRASH_POINTS: [&str; 3] = ["outbox.after_commit", "relay.after_publish", "consumer.after_apply"];

/// One fault of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// Traffic between `a` and `b` fails (both ways, or with `oneway` only from a to b).
    Cut { a: String, b: String, oneway: bool },
    /// Every pass over the link is slowed by `ms`.
    Latency { a: String, b: String, ms: u64 },
    /// A `fraction` of passes over the link fail.
    Loss { a: String, b: String, fraction: f64 },
    /// A fault inside the bus on a `fraction` of what passes every bus link.
    Bus { kind: InBus, fraction: f64 },
    /// The part neither serves nor consumes until it is started again.
    Stop { part: String },
    /// The whole embedded process is killed with SIGKILL and started again on its files.
    Kill,
    /// The whole embedded process is frozen the `after`-th time it passes the crash point
    /// `point` once the fault begins, killed with SIGKILL there (at the heal when it never
    /// gets that far) and started again on its files.
    CrashPoint { point: String, after: u64 },
    /// `--distributed`: one process (a service's, nats-server or PostgreSQL with every
    /// process of it) killed with SIGKILL; its supervisor starts it again.
    Crash { process: String },
    /// `--distributed`: one process (PostgreSQL: every process of it) frozen with SIGSTOP
    /// until the heal (SIGCONT).
    Pause { process: String },
}

impl Fault {
    /// The kind of fault, as the report counts them.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Cut { oneway: false, .. } => "cut",
            Fault::Cut { oneway: true, .. } => "cut-oneway",
            Fault::Latency { .. } => "latency",
            Fault::Loss { .. } => "loss",
            Fault::Bus { kind, .. } => kind.route(),
            Fault::Stop { .. } => "stop",
            Fault::Kill => "kill",
            Fault::CrashPoint { .. } => "crash-point",
            Fault::Crash { .. } => "crash",
            Fault::Pause { .. } => "pause",
        }
    }

    /// Whether it takes the whole embedded process down, and with it every other fault.
    pub fn downs_the_process(&self) -> bool {
        matches!(self, Fault::Kill | Fault::CrashPoint { .. })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Cut { a, b, oneway: false } => write!(f, "cut {a} <-> {b}"),
            Fault::Cut { a, b, oneway: true } => write!(f, "cut {a} -> {b}"),
            Fault::Latency { a, b, ms } => write!(f, "latency {a} <-> {b} {ms} ms"),
            Fault::Loss { a, b, fraction } => write!(f, "loss {a} <-> {b} {fraction:.2}"),
            Fault::Bus { kind: InBus::Duplicate, fraction } => {
                write!(f, "duplicate {fraction:.2} of deliveries on every bus link")
            }
            Fault::Bus { kind: InBus::LostAck, fraction } => {
                write!(f, "lose {fraction:.2} of acks on every bus link")
            }
            Fault::Bus { kind: InBus::Delay, fraction } => {
                write!(f, "delay {fraction:.2} of deliveries on every bus link")
            }
            Fault::Stop { part } => write!(f, "stop {part}"),
            Fault::Kill => write!(f, "SIGKILL the process, restart it"),
            Fault::CrashPoint { point, after } => {
                write!(f, "SIGKILL the process at crash point {point} (pass {after}), restart it")
            }
            Fault::Crash { process } => write!(f, "SIGKILL {process} (its supervisor restarts it)"),
            Fault::Pause { process } => write!(f, "pause {process} (SIGSTOP, then SIGCONT)"),
        }
    }
}

/// A fault inside the bus, named as its `/admin/chaos` route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InBus {
    /// Deliveries handed to the consumer twice.
    Duplicate,
    /// Acks not forwarded: the bus redelivers after its ack wait.
    LostAck,
    /// Deliveries held back behind later ones.
    Delay,
}

impl InBus {
    /// Its chaos route, under `/admin/chaos/`.
    pub fn route(self) -> &'static str {
        match self {
            InBus::Duplicate => "duplicate",
            InBus::LostAck => "lost-ack",
            InBus::Delay => "delay",
        }
    }
}

/// A fault and when it begins and is healed, in seconds since the workload started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub at: f64,
    pub heal_at: f64,
    #[serde(flatten)]
    pub fault: Fault,
}

/// Every step of one schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub seed: u64,
    pub steps: Vec<Step>,
}

impl Plan {
    /// The plan of `seed` for a workload of `seconds`: every fault healed before it ends.
    pub fn of(seed: u64, seconds: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        // The lanes begin a second after the crash at a commit that begins the schedule.
        let first = at_a_commit(&mut rng, seconds);
        let start = first.as_ref().map_or(0.0, |crash| crash.heal_at + 1.0);
        let mut steps = lane(&mut rng, 0, seconds - start, fault);
        let mut second = lane(&mut rng, 1, seconds - start, fault);
        for step in steps.iter_mut().chain(second.iter_mut()) {
            (step.at, step.heal_at) = (round(step.at + start), round(step.heal_at + start));
        }
        if let Some(cut) = sites_cut(&mut rng, start, seconds) {
            // The partition takes the second lane's place while it lasts; on the first lane
            // it keeps clear of what downs the process (by a second either side) and of any
            // fault of a site, which would heal the sites' link early or keep one site from
            // taking orders.
            let during = |s: &Step, margin: f64| s.heal_at >= cut.at - margin && s.at <= cut.heal_at + margin;
            second.retain(|s| !during(s, 0.0));
            steps.retain(|s| {
                !(during(s, 1.0) && s.fault.downs_the_process() || during(s, 0.0) && at_a_site(&s.fault))
            });
            steps.push(cut);
        }
        steps.extend(second);
        // A kill or a crash point takes the whole process down with every fault of the
        // other lane: it is alone while the process restarts (a margin of a second either
        // side).
        let down: Vec<Step> = steps.iter().filter(|s| s.fault.downs_the_process()).cloned().collect();
        steps.retain(|s| {
            s.fault.downs_the_process()
                || down.iter().all(|d| s.heal_at < d.at - 1.0 || s.at > d.heal_at + 1.0)
        });
        steps.extend(first);
        steps.sort_by(|a, b| a.at.total_cmp(&b.at));
        Self { seed, steps }
    }

    /// The plan on a clock that reads `offset` when the workload starts (the history's, which
    /// starts before the clients register).
    pub fn after(&self, offset: f64) -> Self {
        let shift =
            |s: &Step| Step { at: s.at + offset, heal_at: s.heal_at + offset, fault: s.fault.clone() };
        Self { seed: self.seed, steps: self.steps.iter().map(shift).collect() }
    }

    /// When the sites are cut from each other both ways: (from, to) in seconds.
    pub fn sites_cut(&self) -> Vec<(f64, f64)> {
        let cut =
            |f: &Fault| matches!(f, Fault::Cut { a, b, oneway: false } if (a.as_str(), b.as_str()) == SITES);
        self.steps.iter().filter(|s| cut(&s.fault)).map(|s| (s.at, s.heal_at)).collect()
    }

    /// The plan as printed before the run, one step a line.
    pub fn text(&self) -> String {
        let mut out = format!("plan of seed {}:\n", self.seed);
        for step in &self.steps {
            out.push_str(&format!("  {:>6.2}s .. {:>6.2}s  {}\n", step.at, step.heal_at, step.fault));
        }
        if self.steps.is_empty() {
            out.push_str("  (no fault: the run is too short)\n");
        }
        out
    }
}

/// The faults of one lane (`0` or `1`), one after the other, each drawn by `draw` (told
/// whether it is the first lane) and healed within [`MAX_FAULT`] before `seconds`.
pub(super) fn lane(
    rng: &mut StdRng,
    lane: u32,
    seconds: f64,
    draw: fn(&mut StdRng, bool) -> Fault,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut t = rng.random_range(0.3..1.5) + f64::from(lane) * 0.5;
    while t + 0.5 < seconds {
        let fault = draw(rng, lane == 0);
        let down = fault.downs_the_process();
        let length = match fault {
            Fault::Kill => 0.0,
            // Its bound: a crash point is passed many times a second under the workload.
            Fault::CrashPoint { .. } => rng.random_range(0.3..CRASH_BOUND),
            _ => rng.random_range(0.5..MAX_FAULT),
        };
        let heal_at = (t + length).min(seconds - 0.2);
        steps.push(Step { at: round(t), heal_at: round(heal_at), fault });
        // A restarted process gets a moment before the next fault of its lane.
        t = heal_at + rng.random_range(0.3..2.0) + if down { 1.5 } else { 0.0 };
    }
    steps
}

/// The partition of the sites, both ways, of a plan of `seconds` whose lanes begin at
/// `start`: 1.5 s to [`MAX_FAULT`], from 1.5 s and `start` on, healed a second before the
/// workload ends so the sites agree while it still runs; `None` when the plan is too short.
fn sites_cut(rng: &mut StdRng, start: f64, seconds: f64) -> Option<Step> {
    // Just past `start`, which is a second after the crash that begins the schedule.
    let earliest = (start + 0.1).max(1.5);
    let length = rng.random_range(SITES_CUT_MIN..MAX_FAULT).min(seconds - 1.0 - earliest);
    if length < SITES_CUT_MIN {
        return None;
    }
    let at = rng.random_range(earliest..=seconds - 1.0 - length);
    let (a, b) = (SITES.0.to_owned(), SITES.1.to_owned());
    Some(Step { at: round(at), heal_at: round(at + length), fault: Fault::Cut { a, b, oneway: false } })
}

/// Whether `fault` touches an inventory site (its links, or the site stopped).
fn at_a_site(fault: &Fault) -> bool {
    let site = |name: &str| name.starts_with("inventory-");
    match fault {
        Fault::Cut { a, b, .. } | Fault::Latency { a, b, .. } | Fault::Loss { a, b, .. } => {
            site(a) || site(b)
        }
        Fault::Stop { part } => site(part),
        _ => false,
    }
}

fn round(t: f64) -> f64 {
    (t * 100.0).round() / 100.0
}

/// The crash that begins every schedule of 4 s or more: at `outbox.after_commit`, after
/// a drawn number of passes. A kill at a random time almost never lands right after a
/// commit and before the relay's next transaction, where a write whose outbox row is not
/// in its own transaction loses its event.
fn at_a_commit(rng: &mut StdRng, seconds: f64) -> Option<Step> {
    if seconds < 4.0 {
        return None;
    }
    let at = rng.random_range(0.3..1.5);
    let heal_at = at + rng.random_range(0.3..CRASH_BOUND);
    let fault = crash_point(rng, CRASH_POINTS[0]);
    Some(Step { at: round(at), heal_at: round(heal_at), fault })
}

/// A crash at `point` after a drawn number of passes.
fn crash_point(rng: &mut StdRng, point: &str) -> Fault {
    Fault::CrashPoint { point: point.to_owned(), after: rng.random_range(1..=8) }
}

/// One fault of the embedded plan (a kill of the whole process, mostly at a crash point,
/// only when `may_kill`).
pub(super) fn fault(rng: &mut StdRng, may_kill: bool) -> Fault {
    let (a, b) = LINKS[rng.random_range(0..LINKS.len())];
    let (a, b) = (a.to_owned(), b.to_owned());
    let fraction = |rng: &mut StdRng| f64::from(rng.random_range(2..8_u32)) / 10.0;
    match rng.random_range(0..if may_kill { 19 } else { 16 }) {
        0..=1 => Fault::Cut { a, b, oneway: false },
        2..=3 => Fault::Cut { a, b, oneway: true },
        4 => Fault::Latency { a, b, ms: rng.random_range(50..800) },
        5..=6 => Fault::Loss { a, b, fraction: fraction(rng) },
        7..=9 => Fault::Stop { part: PARTS[rng.random_range(0..PARTS.len())].to_owned() },
        10..=11 => Fault::Bus { kind: InBus::Duplicate, fraction: fraction(rng) },
        12 => Fault::Bus { kind: InBus::LostAck, fraction: f64::from(rng.random_range(2..6_u32)) / 10.0 },
        // Delay twice as often as the others: only it makes an unordered replica see a
        // key's versions out of order, which the version gate is there for.
        13..=15 => Fault::Bus { kind: InBus::Delay, fraction: fraction(rng) },
        16 => Fault::Kill,
        // Two in three of the kills of the first lane, at each crash point alike.
        _ => {
            let point = CRASH_POINTS[rng.random_range(0..CRASH_POINTS.len())];
            crash_point(rng, point)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_plan_and_another_seed_another() {
        assert_eq!(Plan::of(7, 30.0), Plan::of(7, 30.0));
        assert_ne!(Plan::of(7, 30.0), Plan::of(8, 30.0));
    }

    #[test]
    fn the_plans_draw_every_kind_of_fault_the_faults_inside_the_bus_included() {
        let kinds: std::collections::BTreeSet<&str> =
            (0..50).flat_map(|seed| Plan::of(seed, 30.0).steps).map(|s| s.fault.kind()).collect();
        let all = [
            "cut",
            "cut-oneway",
            "latency",
            "loss",
            "duplicate",
            "lost-ack",
            "delay",
            "stop",
            "kill",
            "crash-point",
        ];
        assert_eq!(kinds, all.into_iter().collect());
    }

    #[test]
    fn every_plan_cuts_the_sites_from_each_other_both_ways_for_a_second_and_a_half_or_more() {
        for seed in 0..200 {
            let seconds = [8.0, 10.0, 30.0][seed as usize % 3];
            let plan = Plan::of(seed, seconds);
            let aimed = |(at, heal): &(f64, f64)| {
                heal - at >= SITES_CUT_MIN - 0.01 && *at >= 1.5 && *heal <= seconds - 1.0 + 0.01
            };
            assert!(
                plan.sites_cut().iter().any(aimed),
                "seed {seed}: no partition of the sites: {}",
                plan.text()
            );
        }
        assert!(Plan::of(1, 3.0).sites_cut().is_empty(), "too short for a partition of 1.5 s");
    }

    #[test]
    fn at_most_two_faults_are_active_at_once_each_healed_within_the_bound_and_a_kill_is_alone() {
        for seed in 0..200 {
            let plan = Plan::of(seed, 30.0);
            for step in &plan.steps {
                assert!(step.heal_at - step.at <= MAX_FAULT + 1e-9 && step.heal_at < 30.0, "{step:?}");
                let during = plan.steps.iter().filter(|s| s.at <= step.at && s.heal_at >= step.at).count();
                assert!(during <= 2, "seed {seed}: {} at once at {}", during, step.at);
                if step.fault.downs_the_process() {
                    let near = plan
                        .steps
                        .iter()
                        .filter(|s| s.heal_at >= step.at - 1.0 && s.at <= step.heal_at + 1.0);
                    assert_eq!(near.count(), 1, "seed {seed}: {step:?} shares its time with another fault");
                }
            }
        }
    }

    #[test]
    fn every_schedule_crashes_right_after_a_commit_and_the_first_lane_at_every_crash_point() {
        let mut drawn = std::collections::BTreeSet::<String>::new();
        for seed in 0..200 {
            let plan = Plan::of(seed, 10.0);
            let crashes: Vec<(&str, u64, &Step)> = plan
                .steps
                .iter()
                .filter_map(|s| match &s.fault {
                    Fault::CrashPoint { point, after } => Some((point.as_str(), *after, s)),
                    _ => None,
                })
                .collect();
            assert!(
                crashes.iter().any(|(point, _, _)| *point == "outbox.after_commit"),
                "seed {seed}: no crash at a commit: {}",
                plan.text()
            );
            for (point, after, step) in crashes {
                assert!(CRASH_POINTS.contains(&point) && (1..=8).contains(&after), "{step:?}");
                let bound = step.heal_at - step.at;
                assert!(
                    bound > 0.0 && bound <= CRASH_BOUND + 0.01,
                    "seed {seed}: a crash point's bound: {step:?}"
                );
                let line = format!("SIGKILL the process at crash point {point} (pass {after}), restart it");
                assert!(plan.text().contains(&line), "the plan prints it: {}", plan.text());
                drawn.insert(point.to_owned());
            }
        }
        assert_eq!(drawn, CRASH_POINTS.map(String::from).into_iter().collect(), "every crash point is drawn");
    }
}
