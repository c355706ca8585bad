//! The bus conformance suite against NATS JetStream, each test on a nats-server of its
//! own (skipped loudly when no nats-server 2.10+ is on PATH, failing in CI).

use std::sync::Arc;

use async_trait::async_trait;
use kit::bus::{Bus, BusError, ConsumerSpec, DeadLetter, DeadLetterFilter, Message, Subscription};
use kit::testserver::NatsServer;

/// A bus that keeps its server running for as long as the test holds the bus.
struct ServedBus {
    bus: Arc<dyn Bus>,
    _server: NatsServer,
}

#[async_trait]
impl Bus for ServedBus {
    async fn publish(&self, batch: &[Message]) -> Result<(), BusError> {
        self.bus.publish(batch).await
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn Subscription>, BusError> {
        self.bus.subscribe(spec).await
    }

    async fn stream_head(&self, stream: &str) -> Result<u64, BusError> {
        self.bus.stream_head(stream).await
    }

    async fn retained_from(&self, stream: &str) -> Result<u64, BusError> {
        self.bus.retained_from(stream).await
    }

    async fn recent(&self, stream: &str, limit: usize) -> Result<Vec<Message>, BusError> {
        self.bus.recent(stream, limit).await
    }

    async fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, BusError> {
        self.bus.dead_letters(filter).await
    }

    async fn replay(&self, filter: &DeadLetterFilter) -> Result<usize, BusError> {
        self.bus.replay(filter).await
    }

    async fn discard(&self, filter: &DeadLetterFilter) -> Result<usize, BusError> {
        self.bus.discard(filter).await
    }
}

/// A bus on a fresh nats-server, or `None` when the server binary is missing.
async fn served_bus() -> Option<Arc<dyn Bus>> {
    let server = NatsServer::start().await?;
    let bus = kit::bus::connect(&server.url()).await.expect("the nats bus connects to its server");
    Some(Arc::new(ServedBus { bus, _server: server }))
}

kit::bus_conformance_tests!(real_time_or_skip: served_bus());
