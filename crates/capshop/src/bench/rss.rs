//! Peak resident memory of this process — the whole embedded stack ran in it (every
//! service, the bus, the pipelines), and so did the load generator, which the figure
//! therefore includes.

/// `VmHWM` of /proc/self/status in MB, where the platform has it.
pub fn peak_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}
