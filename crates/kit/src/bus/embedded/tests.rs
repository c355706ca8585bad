use super::{EmbeddedBus, MIGRATIONS};
use crate::bus::{Bus, DeadLetterFilter};
use crate::store::{Migrations, Store};

/// The log's schema before a message waiting behind its key was called parked.
const BEFORE_PARKED: Migrations =
    Migrations { component: "bus", sqlite: &[MIGRATIONS.sqlite[0]], postgres: &[] };

#[tokio::test]
async fn a_log_from_before_the_rename_keeps_its_held_message_parked_behind_its_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.db");
    let old = Store::open(&format!("sqlite:{}", path.display()), &[&BEFORE_PARKED]).await.unwrap();
    old.transact(|tx| {
        tx.execute(
            "INSERT INTO bus_log (pos, id, stream, seq, key, body, published_at_ms) \
             VALUES (1, 'e1', 'orders', 1, 'k', x'7b7d', 0), (2, 'e2', 'orders', 2, 'k', x'7b7d', 0)",
            &[],
        )?;
        tx.execute(
            "INSERT INTO bus_pending (consumer, pos, key, state, attempts, visible_at_ms, error, failed_at_ms) \
             VALUES ('c', 1, 'k', 'dead', 3, 0, 'boom', 1), ('c', 2, 'k', 'held', 0, 0, NULL, NULL)",
            &[],
        )?;
        Ok::<_, crate::store::StoreError>(())
    })
    .await
    .unwrap();
    drop(old);

    let bus = EmbeddedBus::open(path.to_str().unwrap()).await.unwrap();
    let letters = bus.dead_letters(&DeadLetterFilter::all()).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].parked, 1, "the message once held waits, parked, behind the dead letter");
}

mod retention {
    use std::time::Duration;

    use crate::bus::{
        Bus, ConsumerSpec, DeadLetterFilter, Delivery, EmbeddedBus, Message, Retention, Subscription,
    };

    /// Prunes every settled message, however young.
    fn at_once() -> Retention {
        Retention { max_age: Duration::ZERO, ..Retention::default() }
    }

    fn message(seq: u64) -> Message {
        Message {
            id: format!("e-{seq}"),
            stream: "orders".into(),
            seq,
            key: format!("k-{seq}"),
            body: vec![b'x'; 64],
        }
    }

    async fn bus_with(seqs: std::ops::RangeInclusive<u64>) -> EmbeddedBus {
        let bus = EmbeddedBus::open(":memory:").await.unwrap();
        bus.publish(&seqs.map(message).collect::<Vec<_>>()).await.unwrap();
        bus
    }

    async fn attach(bus: &EmbeddedBus, name: &str) -> Box<dyn Subscription> {
        bus.subscribe(&ConsumerSpec::new(name, &["orders"])).await.unwrap()
    }

    /// Fetches exactly `count` deliveries.
    async fn take(subscription: &mut Box<dyn Subscription>, count: usize) -> Vec<Delivery> {
        let mut taken = Vec::new();
        while taken.len() < count {
            taken.extend(subscription.fetch(count - taken.len()).await.unwrap());
        }
        taken
    }

    async fn ack_all(subscription: &mut Box<dyn Subscription>, count: usize) {
        let tags: Vec<_> = take(subscription, count).await.iter().map(|d| d.tag).collect();
        subscription.ack(&tags).await.unwrap();
    }

    #[tokio::test]
    async fn the_log_is_pruned_only_below_what_every_consumer_has_settled() {
        let bus = bus_with(1..=6).await;
        let (mut quick, mut slow) = (attach(&bus, "quick").await, attach(&bus, "slow").await);
        ack_all(&mut quick, 6).await;
        let taken = take(&mut slow, 6).await;
        let settled: Vec<_> = taken.iter().filter(|d| d.message.seq != 3).map(|d| d.tag).collect();
        slow.ack(&settled).await.unwrap();
        slow.reject(taken[2].tag, "poison").await.unwrap();

        assert_eq!(bus.prune(&at_once()).await.unwrap(), 2, "only what is below slow's dead letter goes");
        assert_eq!(bus.messages().await.unwrap(), 4);
        assert_eq!(bus.retained_from("orders").await.unwrap(), 3);
        let letters = bus.dead_letters(&DeadLetterFilter::all()).await.unwrap();
        assert_eq!(letters[0].message, message(3), "a dead letter keeps its message");
    }

    #[tokio::test]
    async fn a_pruned_log_keeps_its_newest_position_and_never_reuses_one() {
        let bus = bus_with(1..=3).await;
        let mut consumer = attach(&bus, "c").await;
        ack_all(&mut consumer, 3).await;
        assert_eq!(bus.prune(&at_once()).await.unwrap(), 2);
        assert_eq!(bus.messages().await.unwrap(), 1, "the newest position stays");
        bus.publish(&[message(4)]).await.unwrap();
        let next = take(&mut consumer, 1).await.remove(0);
        assert_eq!((next.message.seq, next.tag.0), (4, 4), "the next message takes a fresh position");
    }

    #[tokio::test]
    async fn a_consumer_created_after_pruning_starts_at_the_oldest_kept_position() {
        let bus = bus_with(1..=3).await;
        ack_all(&mut attach(&bus, "first").await, 3).await;
        bus.prune(&at_once()).await.unwrap();
        bus.publish(&[message(4)]).await.unwrap();
        let mut late = attach(&bus, "late").await;
        let seqs: Vec<u64> = take(&mut late, 2).await.iter().map(|d| d.message.seq).collect();
        assert_eq!(seqs, [3, 4]);
    }

    #[tokio::test]
    async fn a_copy_of_a_pruned_message_is_dropped_when_published_again() {
        let bus = bus_with(1..=3).await;
        let mut consumer = attach(&bus, "c").await;
        ack_all(&mut consumer, 3).await;
        bus.prune(&at_once()).await.unwrap();
        bus.publish(&[message(1), message(4)]).await.unwrap();
        let next = consumer.fetch(10).await.unwrap();
        let seqs: Vec<u64> = next.iter().map(|d| d.message.seq).collect();
        assert_eq!(seqs, [4], "the republished, pruned seq 1 came back");
    }

    #[tokio::test]
    async fn the_size_bound_prunes_settled_messages_however_young() {
        let bus = EmbeddedBus::open(":memory:").await.unwrap();
        let big: Vec<Message> =
            (1..=200).map(|seq| Message { body: vec![7; 4096], ..message(seq) }).collect();
        bus.publish(&big).await.unwrap();
        ack_all(&mut attach(&bus, "c").await, 200).await;
        assert_eq!(bus.prune(&Retention::default()).await.unwrap(), 0, "young and small: all kept");
        let small = Retention { max_bytes: 128 << 10, ..Retention::default() };
        let pruned = bus.prune(&small).await.unwrap();
        assert!(pruned > 0 && pruned < 200, "pruned {pruned} of 200 to fit 128 KiB");
    }

    #[tokio::test]
    async fn an_embedded_url_sets_the_retention_and_refuses_an_unknown_setting() {
        assert!(crate::bus::connect("embedded::memory:?max_age=5&max_mb=32").await.is_ok());
        for url in ["embedded::memory:?max_age=soon", "embedded::memory:?keep=5"] {
            let refused = crate::bus::connect(url).await.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(refused.contains("unknown or invalid setting"), "{url}: {refused:?}");
        }
    }

    #[tokio::test]
    async fn a_log_without_consumers_is_not_pruned() {
        let bus = bus_with(1..=3).await;
        assert_eq!(bus.prune(&at_once()).await.unwrap(), 0);
        assert_eq!(bus.messages().await.unwrap(), 3);
    }
}
