//! Deliberate bugs, to prove that `capshop torture`'s checker catches a broken event path
//! (docs/RELIABILITY.md, "Canaries"). They exist only in a build with the `canary` feature,
//! which release builds never enable (the capshop crate turns it on for its tests through a
//! dev-dependency), and each one is armed at run time by `CAPSHOP_CANARY=<name>`.

/// Whether this build carries the canaries at all.
pub const COMPILED: bool = cfg!(feature = "canary");

/// Every canary, with the bug it plants.
pub const CANARIES: [(&str, &str); 6] = [
    ("inbox-dedup-off", "the inbox lets a redelivered event apply again"),
    ("relay-skip", "the relay marks an event relayed without publishing it"),
    ("version-gate-off", "the version gate admits an older version over a newer one"),
    (
        "outbox-outside-txn",
        "the outbox row is written in a transaction of its own after the business write commits",
    ),
    ("cp-check-off", "in cp, a site reserves without the other site's acknowledgement"),
    ("compensation-off", "in ap, an oversold reservation is never compensated"),
];

/// Whether the canary `name` is armed in this process.
#[cfg(feature = "canary")]
pub fn armed(name: &str) -> bool {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ARMED.get_or_init(|| std::env::var("CAPSHOP_CANARY").ok().filter(|c| !c.is_empty())).as_deref()
        == Some(name)
}
