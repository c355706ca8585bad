//! How many processes of each part `up --distributed` starts (`--instances`), and the
//! peers each process is given: a service calls the first instance of a peer, the gateway
//! balances over all of them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use shop::service::Part;

/// `--instances N` (N of every part) or `--instances order=2,shipping=3` (of those, one of
/// the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instances {
    every: usize,
    of: BTreeMap<String, usize>,
}

impl Default for Instances {
    fn default() -> Self {
        Self { every: 1, of: BTreeMap::new() }
    }
}

const MOST: usize = 16;

fn count(text: &str, what: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MOST).contains(&n) => Ok(n),
        _ => Err(format!("{what} {text:?} is not a number of instances from 1 to {MOST}")),
    }
}

/// Parses `--instances`.
pub fn parse(text: &str) -> Result<Instances, String> {
    if !text.contains('=') {
        return Ok(Instances { every: count(text, "--instances")?, of: BTreeMap::new() });
    }
    let mut of = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, n) = pair.split_once('=').ok_or_else(|| {
            format!(
                "--instances {pair:?} is not PART=N: use e.g. --instances order=2,shipping=2, or one number"
            )
        })?;
        let name = name.trim();
        name.parse::<Part>().map_err(|e| format!("--instances {pair:?}: {e}"))?;
        of.insert(name.to_owned(), count(n, &format!("--instances {name}=")).map_err(|e| e.to_string())?);
    }
    Ok(Instances { every: 1, of })
}

/// One process to start: which part, which instance of it, and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub part: String,
    /// `order` for a part's only instance, else `order-1`, `order-2`, ...
    pub instance_id: String,
    pub listen: SocketAddr,
}

impl Instances {
    pub fn of(&self, part: &str) -> usize {
        self.of.get(part).copied().unwrap_or(self.every)
    }

    pub fn total(&self) -> usize {
        Part::all().into_iter().map(|p| self.of(&p.name())).sum()
    }

    /// Every part's processes on `ports` (at least [`Instances::total`] of them), in part order.
    pub fn plan(&self, ports: &[u16]) -> Vec<Planned> {
        let mut ports = ports.iter();
        let mut planned = Vec::new();
        for part in Part::all().into_iter().map(Part::name) {
            let n = self.of(&part);
            for i in 1..=n {
                let port = *ports.next().expect("a port per process");
                let instance_id = if n == 1 { part.clone() } else { format!("{part}-{i}") };
                let listen = SocketAddr::from(([127, 0, 0, 1], port));
                planned.push(Planned { part: part.clone(), instance_id, listen });
            }
        }
        planned
    }
}

/// `--peer` arguments naming the first instance of every part (for the services).
pub fn first_peers(planned: &[Planned]) -> Vec<String> {
    let mut seen = BTreeMap::new();
    for p in planned {
        seen.entry(p.part.clone()).or_insert(p.listen);
    }
    seen.iter().flat_map(|(n, at)| ["--peer".to_owned(), format!("{n}=http://{at}")]).collect()
}

/// `--peer` arguments naming every instance of every part (for the gateway).
pub fn all_peers(planned: &[Planned]) -> Vec<String> {
    planned.iter().flat_map(|p| ["--peer".to_owned(), format!("{}=http://{}", p.part, p.listen)]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_starts_that_many_of_every_part_and_names_start_that_many_of_those() {
        let every = parse("2").unwrap();
        assert_eq!(every.total(), 2 * Part::all().len());
        let some = parse("order=2,shipping=3").unwrap();
        assert_eq!((some.of("order"), some.of("shipping"), some.of("catalog")), (2, 3, 1));
        let plan = some.plan(&(40000..40100).collect::<Vec<_>>());
        assert_eq!(plan.len(), some.total());
        let orders: Vec<&str> =
            plan.iter().filter(|p| p.part == "order").map(|p| p.instance_id.as_str()).collect();
        assert_eq!(orders, ["order-1", "order-2"]);
        assert!(plan.iter().any(|p| p.instance_id == "catalog"));
        let gateway_peers = all_peers(&plan).iter().filter(|a| a.starts_with("order=")).count();
        let service_peers = first_peers(&plan).iter().filter(|a| a.starts_with("order=")).count();
        assert_eq!((gateway_peers, service_peers), (2, 1));
    }

    #[test]
    fn a_bad_count_or_part_is_refused_with_the_form_to_use() {
        for bad in ["0", "x", "17", "order=0", "ordr=2", "order"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("--instances"), "{bad}: {e}");
        }
    }
}
