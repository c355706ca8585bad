//! The copies a bus link hands its consumer a second time under the duplicate fault.
//!
//! A copy carries a tag the bus never issued, so settling it is answered by the link and
//! never reaches the bus: the bus settles each message once, as it would when a
//! redelivery crosses the ack of the first delivery.

use std::collections::{HashSet, VecDeque};

use crate::bus::{Delivery, DeliveryTag};

/// The copies one subscription's link still owes its consumer, and the tags of those out.
#[derive(Debug, Default)]
pub(super) struct Copies {
    queued: VecDeque<Delivery>,
    tags: HashSet<DeliveryTag>,
    /// Issued downwards from `u64::MAX`, far from every tag a bus issues (positions, seqs).
    issued: u64,
}

impl Copies {
    /// The queued copies, at most `max`.
    pub(super) fn due(&mut self, max: usize) -> Vec<Delivery> {
        let n = self.queued.len().min(max);
        self.queued.drain(..n).collect()
    }

    /// Queues a copy of `delivery` under a tag of its own.
    pub(super) fn queue(&mut self, delivery: &Delivery) {
        self.issued += 1;
        let tag = DeliveryTag(u64::MAX - self.issued);
        self.tags.insert(tag);
        self.queued.push_back(Delivery { tag, ..delivery.clone() });
    }

    /// Whether `tag` is a copy's (settled by the link, not the bus); forgets it.
    pub(super) fn settle(&mut self, tag: DeliveryTag) -> bool {
        self.tags.remove(&tag)
    }

    /// The tags of `tags` the bus issued (copies stay unsettled).
    pub(super) fn bus_tags(&self, tags: &[DeliveryTag]) -> Vec<DeliveryTag> {
        tags.iter().copied().filter(|tag| !self.tags.contains(tag)).collect()
    }

    /// The tags of `tags` the bus issued, settling the copies' among them.
    pub(super) fn of_bus(&mut self, tags: &[DeliveryTag]) -> Vec<DeliveryTag> {
        tags.iter().copied().filter(|tag| !self.settle(*tag)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Message;

    #[test]
    fn a_copy_comes_under_a_tag_of_its_own_that_is_settled_by_the_link_once() {
        let message =
            Message { id: "e-1".into(), stream: "orders".into(), seq: 1, key: "k".into(), body: Vec::new() };
        let original = Delivery { tag: DeliveryTag(1), attempt: 1, message };
        let mut copies = Copies::default();
        copies.queue(&original);
        let due = copies.due(10);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].message, original.message);
        assert_ne!(due[0].tag, original.tag);
        assert!(copies.due(10).is_empty(), "a copy is handed out once");
        assert_eq!(copies.bus_tags(&[original.tag, due[0].tag]), [original.tag]);
        assert_eq!(copies.of_bus(&[original.tag, due[0].tag]), [original.tag]);
        assert!(!copies.settle(due[0].tag), "and settled once");
    }
}
