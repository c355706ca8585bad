//! The nemesis plan of a `--distributed` schedule, from its seed alone like the embedded
//! one, on the same two lanes: the same link faults (each through the chaos route of the
//! processes that own the link), and instead of stopping a part or killing the whole
//! shop, a SIGKILL ([`Fault::Crash`]) or a pause ([`Fault::Pause`]) of one process: a
//! service's, nats-server or PostgreSQL. At most one process is down at a time, and no
//! link is faulted through a process while that one is down (its chaos route would not
//! answer, so the fault could neither be set nor healed on time).

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::torture::plan::{self, Fault, Plan, Step};

/// The processes the nemesis crashes and pauses.
pub const PROCESSES: [&str; 10] = [
    "order",
    "customer",
    "catalog",
    "payment",
    "shipping",
    "search",
    "inventory-dc1",
    "inventory-dc2",
    "nats",
    "postgres",
];

/// The time around a process fault in which nothing else touches that process.
const MARGIN: f64 = 1.0;

impl Plan {
    /// The distributed plan of `seed` for a workload of `seconds`.
    pub fn distributed(seed: u64, seconds: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let first = plan::lane(&mut rng, 0, seconds, draw);
        let mut second = plan::lane(&mut rng, 1, seconds, draw);
        second.retain(|s| first.iter().all(|f| !(near(f, s) && clash(f, s))));
        let mut steps = first;
        steps.extend(second);
        steps.sort_by(|a, b| a.at.total_cmp(&b.at));
        Self { seed, steps }
    }
}

/// A fault of the embedded draw, its stop of a part made a crash or a pause of a process.
fn draw(rng: &mut StdRng, _first_lane: bool) -> Fault {
    match plan::fault(rng, false) {
        Fault::Stop { .. } => {
            let process = PROCESSES[rng.random_range(0..PROCESSES.len())].to_owned();
            if rng.random_bool(0.5) { Fault::Crash { process } } else { Fault::Pause { process } }
        }
        link => link,
    }
}

/// The processes whose chaos routes a link fault goes through: each end that is a part;
/// for a fault inside the bus, every service process (each owns its bus link).
pub fn owners(fault: &Fault) -> Vec<&str> {
    match fault {
        Fault::Cut { a, b, .. } | Fault::Latency { a, b, .. } | Fault::Loss { a, b, .. } => {
            [a.as_str(), b.as_str()].into_iter().filter(|end| !["bus", "cache"].contains(end)).collect()
        }
        Fault::Bus { .. } => crate::torture::converge::PARTS.to_vec(),
        _ => Vec::new(),
    }
}

fn process_of(fault: &Fault) -> Option<&str> {
    match fault {
        Fault::Crash { process } | Fault::Pause { process } => Some(process),
        _ => None,
    }
}

/// Whether `a` and `b` overlap in time, with [`MARGIN`] around each.
fn near(a: &Step, b: &Step) -> bool {
    a.at <= b.heal_at + MARGIN && b.at <= a.heal_at + MARGIN
}

/// Whether `a` and `b` must not overlap: two process faults, or a process fault and a
/// link fault through that process.
fn clash(a: &Step, b: &Step) -> bool {
    match (process_of(&a.fault), process_of(&b.fault)) {
        (Some(_), Some(_)) => true,
        (Some(p), None) => owners(&b.fault).contains(&p),
        (None, Some(p)) => owners(&a.fault).contains(&p),
        (None, None) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::torture::plan::MAX_FAULT;

    /// What kind of fault a step is, by what it does and to what.
    fn kind(fault: &Fault) -> String {
        match fault {
            Fault::Crash { process } => format!("crash {process}"),
            Fault::Pause { process } => format!("pause {process}"),
            Fault::Cut { oneway, .. } => format!("cut{}", if *oneway { " one way" } else { "" }),
            Fault::Latency { .. } => "latency".to_owned(),
            Fault::Loss { .. } => "loss".to_owned(),
            other => format!("{other}"),
        }
    }

    #[test]
    fn a_seed_gives_one_plan_that_is_not_the_embedded_one() {
        assert_eq!(Plan::distributed(7, 30.0), Plan::distributed(7, 30.0));
        assert_ne!(Plan::distributed(7, 30.0), Plan::distributed(8, 30.0));
        assert_ne!(Plan::distributed(7, 30.0), Plan::of(7, 30.0));
    }

    #[test]
    fn at_most_two_faults_at_once_one_process_down_at_most_and_none_linked_through_it() {
        for seed in 0..300 {
            let plan = Plan::distributed(seed, 30.0);
            for (i, step) in plan.steps.iter().enumerate() {
                assert!(step.heal_at - step.at <= MAX_FAULT + 1e-9 && step.heal_at < 30.0, "{step:?}");
                assert!(!matches!(step.fault, Fault::Kill | Fault::Stop { .. }), "embedded only: {step:?}");
                let during = plan.steps.iter().filter(|s| s.at <= step.at && s.heal_at >= step.at).count();
                assert!(during <= 2, "seed {seed}: {during} at once at {}", step.at);
                // One after the other on a lane is fine: a crash's heal waits until it serves.
                for other in &plan.steps[i + 1..] {
                    let overlap = step.at <= other.heal_at && other.at <= step.heal_at;
                    assert!(!(overlap && clash(step, other)), "seed {seed}: {step:?} and {other:?}");
                }
            }
        }
    }

    /// Every fault kind the plan can draw, on every process, is drawn in the first seeds
    /// (tests/torture_distributed.rs shows each kind healed in a run).
    #[test]
    fn every_kind_of_fault_on_every_process_is_drawn() {
        let drawn: BTreeSet<String> =
            (0..100).flat_map(|s| Plan::distributed(s, 15.0).steps).map(|s| kind(&s.fault)).collect();
        for process in PROCESSES {
            for action in ["crash", "pause"] {
                assert!(drawn.contains(&format!("{action} {process}")), "{action} {process}: {drawn:?}");
            }
        }
        for link in ["cut", "cut one way", "latency", "loss"] {
            assert!(drawn.contains(link), "{link}: {drawn:?}");
        }
    }
}
