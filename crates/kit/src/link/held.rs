//! What a bus link holds back from its consumer under the faults inside the bus: copies of
//! deliveries to hand out a second time (duplicate), and deliveries held back while later
//! ones overtake them (delay).
//!
//! A copy carries a tag the bus never issued, so settling it is answered by the link and
//! never reaches the bus: the bus settles each message once, as it would when a
//! redelivery crosses the ack of the first delivery. A delayed delivery keeps its own tag
//! and stays unacknowledged with the bus meanwhile; a per-key consumer therefore gets no
//! later message of its key while it is held (the bus parks them), so a delay reorders
//! keys, and only an unordered consumer sees a key's later versions overtake it.
//!
//! A held delivery goes out with the first fetch after its hold, never by cancelling a
//! fetch that waits on the bus (a fetch cancelled while it takes deliveries would leave
//! them taken and unreturned). When the bus has nothing newer meanwhile, it redelivers
//! the held message once its ack wait runs out; the fresh delivery then replaces the held one.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::bus::{Delivery, DeliveryTag};

/// How long a delayed delivery is held back at least: well within the ack wait of the
/// shop's consumers, so on a busy stream it goes out before the bus redelivers it.
pub const DELAY_HOLD: Duration = Duration::from_millis(1500);

/// The deliveries one subscription's link holds back.
#[derive(Debug, Default)]
pub(super) struct Held {
    copies: VecDeque<Delivery>,
    delayed: Vec<(Instant, Delivery)>,
    copy_tags: HashSet<DeliveryTag>,
    /// Issued downwards from `u64::MAX`, far from every tag a bus issues (positions, seqs).
    issued: u64,
}

impl Held {
    /// What is due now, at most `max`: copies first, then delayed deliveries whose hold ran out.
    pub(super) fn due(&mut self, now: Instant, max: usize) -> Vec<Delivery> {
        let mut out: Vec<Delivery> = Vec::new();
        while out.len() < max
            && let Some(copy) = self.copies.pop_front()
        {
            out.push(copy);
        }
        let mut i = 0;
        while i < self.delayed.len() && out.len() < max {
            if self.delayed[i].0 <= now {
                out.push(self.delayed.remove(i).1);
            } else {
                i += 1;
            }
        }
        out
    }

    /// Drops the held deliveries that `fetched` delivers again (their ack wait ran out).
    pub(super) fn redelivered(&mut self, fetched: &[Delivery]) {
        if !self.delayed.is_empty() {
            let tags: HashSet<DeliveryTag> = fetched.iter().map(|d| d.tag).collect();
            self.delayed.retain(|(_, held)| !tags.contains(&held.tag));
        }
    }

    /// Takes a fresh batch from the bus: holds back a `delay` fraction of it, and queues a
    /// copy of a `duplicate` fraction of what is handed out. Answers what goes to the
    /// consumer now.
    pub(super) fn take(
        &mut self,
        fetched: Vec<Delivery>,
        delay: f64,
        duplicate: f64,
        now: Instant,
    ) -> Vec<Delivery> {
        let mut rng = rand::rng();
        let mut out = Vec::with_capacity(fetched.len());
        for delivery in fetched {
            if delay > 0.0 && rng.random_bool(delay) {
                self.delayed.push((now + DELAY_HOLD, delivery));
                continue;
            }
            if duplicate > 0.0 && rng.random_bool(duplicate) {
                self.issued += 1;
                let tag = DeliveryTag(u64::MAX - self.issued);
                self.copy_tags.insert(tag);
                self.copies.push_back(Delivery { tag, ..delivery.clone() });
            }
            out.push(delivery);
        }
        out
    }

    /// Whether `tag` is a copy's (settled by the link, not the bus); forgets it.
    pub(super) fn settle_copy(&mut self, tag: DeliveryTag) -> bool {
        self.copy_tags.remove(&tag)
    }

    /// The tags of `tags` the bus issued (copies stay unsettled).
    pub(super) fn bus_tags(&self, tags: &[DeliveryTag]) -> Vec<DeliveryTag> {
        tags.iter().copied().filter(|tag| !self.copy_tags.contains(tag)).collect()
    }

    /// The tags of `tags` the bus issued, settling the copies' among them.
    pub(super) fn of_bus(&mut self, tags: &[DeliveryTag]) -> Vec<DeliveryTag> {
        tags.iter().copied().filter(|tag| !self.settle_copy(*tag)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Message;

    fn delivery(seq: u64) -> Delivery {
        let message = Message {
            id: format!("e-{seq}"),
            stream: "orders".into(),
            seq,
            key: "k".into(),
            body: Vec::new(),
        };
        Delivery { tag: DeliveryTag(seq), attempt: 1, message }
    }

    #[test]
    fn a_copy_comes_under_a_tag_of_its_own_that_is_settled_by_the_link() {
        let mut held = Held::default();
        let now = Instant::now();
        let out = held.take(vec![delivery(1)], 0.0, 1.0, now);
        assert_eq!(out.len(), 1);
        let copies = held.due(now, 10);
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].message, out[0].message);
        assert_ne!(copies[0].tag, out[0].tag);
        assert_eq!(held.of_bus(&[out[0].tag, copies[0].tag]), [out[0].tag]);
        assert!(!held.settle_copy(copies[0].tag), "a copy is settled once");
    }

    #[test]
    fn a_delayed_delivery_is_due_only_after_its_hold() {
        let mut held = Held::default();
        let now = Instant::now();
        assert!(held.take(vec![delivery(1), delivery(2)], 1.0, 0.0, now).is_empty());
        assert!(held.due(now, 10).is_empty());
        let due = held.due(now + DELAY_HOLD, 1);
        assert_eq!(due.len(), 1, "no more than asked for");
        assert_eq!(held.due(now + DELAY_HOLD, 10).len(), 1);
        assert!(held.due(now + DELAY_HOLD * 2, 10).is_empty());
    }

    #[test]
    fn a_held_delivery_the_bus_delivers_again_is_replaced_by_the_fresh_one() {
        let mut held = Held::default();
        let now = Instant::now();
        held.take(vec![delivery(1), delivery(2)], 1.0, 0.0, now);
        held.redelivered(&[Delivery { attempt: 2, ..delivery(1) }]);
        let due = held.due(now + DELAY_HOLD, 10);
        assert_eq!(due.iter().map(|d| d.message.seq).collect::<Vec<_>>(), [2]);
    }
}
