//! The bus conformance suite against the embedded bus, in memory, under paused time.

kit::bus_conformance_tests!(paused_time: async {
    kit::bus::connect("embedded::memory:").await.expect("an in-memory embedded bus opens")
});
