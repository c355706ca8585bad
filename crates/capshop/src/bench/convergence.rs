//! Convergence after a broker outage: the pipeline runs at a steady 1,000 events/s, the
//! bus becomes unreachable for the relay and the consumer alike (their link to it is
//! cut) for the outage, the producer keeps committing into its outbox, and the bus
//! returns. The figure is the time from the bus's return until the replica has applied
//! every event committed before it.

use std::time::{Duration, Instant};

use kit::link::Faults;

use super::backends::Backends;
use super::pipeline;

/// The steady offered rate.
const RATE: u64 = 1_000;

/// Healthy running before the outage starts.
const WARM_UP: Duration = Duration::from_secs(1);

pub struct Convergence {
    pub seconds: f64,
    /// Events committed while the bus was away.
    pub backlog: u64,
}

pub async fn after_outage(backends: &Backends, outage: Duration) -> anyhow::Result<Convergence> {
    let started = Instant::now();
    let mut cut = false;
    let (_, drained) = pipeline::offer(backends, "convergence", RATE, WARM_UP + outage, |pipeline| {
        let elapsed = started.elapsed();
        let due = elapsed >= WARM_UP && elapsed < WARM_UP + outage;
        if due && !cut {
            pipeline.bus_link.set(Faults { cut_out: true, cut_in: true, ..Faults::default() });
            cut = true;
        } else if !due && cut {
            pipeline.bus_link.heal();
            cut = false;
        }
    })
    .await?;
    Ok(Convergence { seconds: drained.as_secs_f64(), backlog: RATE * outage.as_millis() as u64 / 1000 })
}
