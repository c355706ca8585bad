//! A service's facts for `capshop reconcile` ([`crate::contracts::facts`]): its own state
//! and the kit's positions (outbox heads, consumers' applied positions), read from its own
//! database in one read transaction; served at `GET /admin/facts`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use kit::bus::DeadLetterFilter;
use kit::clock;
use kit::store::{Dialect, Store, StoreError, Tx};

use super::{Context, Problem};
use crate::contracts::facts::{
    BusFacts, BusStream, ConsumerPosition, DeadLetterFact, OutboxPosition, PartFacts, ServiceFacts, ShopFacts,
};
use crate::contracts::inventory::Site;

/// How a service reads its own state's facts inside a transaction (each service's
/// `facts::read`); the site is the inventory site the database belongs to.
pub type StateReader = fn(&mut Tx<'_>, Option<Site>) -> Result<ServiceFacts, StoreError>;

/// The service's [`StateReader`], handed to the facts route.
#[derive(Clone, Copy)]
pub struct FactsReader(pub StateReader);

/// Reads `part`'s facts from `store` in one transaction: on PostgreSQL a repeatable-read
/// snapshot, on SQLite a transaction that holds the database while it reads.
pub async fn read(
    store: &Store,
    part: String,
    state: StateReader,
    site: Option<Site>,
) -> Result<PartFacts, StoreError> {
    store
        .transact(move |tx| {
            if tx.dialect() == Dialect::Postgres {
                tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", &[])?;
            }
            read_in(tx, part, state, site)
        })
        .await
}

/// Reads `part`'s facts inside the transaction (or snapshot) `tx`.
pub fn read_in(
    tx: &mut Tx<'_>,
    part: String,
    state: StateReader,
    site: Option<Site>,
) -> Result<PartFacts, StoreError> {
    let read_at_ms = clock::now_ms();
    let outbox = outbox_positions(tx)?;
    let consumers = consumer_positions(tx)?;
    let state = state(tx, site)?;
    Ok(PartFacts { part, read_at_ms, outbox, consumers, state })
}

fn outbox_positions(tx: &mut Tx<'_>) -> Result<Vec<OutboxPosition>, StoreError> {
    let rows = tx.query(
        "SELECT h.stream, h.last_seq, coalesce(r.relayed_seq, 0) FROM kit_outbox_head h \
         LEFT JOIN kit_outbox_relayed r ON r.stream = h.stream ORDER BY h.stream",
        &[],
    )?;
    rows.into_iter()
        .map(|mut r| {
            Ok(OutboxPosition {
                stream: r.take(0)?,
                last_seq: r.get(1)?,
                relayed_seq: r.get(2)?,
                bus_head_before: None,
            })
        })
        .collect()
}

/// Every consumer's position per stream: its floor, its highest applied seq, and which
/// seqs above the floor its inbox holds.
fn consumer_positions(tx: &mut Tx<'_>) -> Result<Vec<ConsumerPosition>, StoreError> {
    let mut pairs = BTreeSet::new();
    for table in ["kit_applied", "kit_inbox_floor"] {
        for mut r in tx.query(&format!("SELECT consumer, stream FROM {table}"), &[])? {
            pairs.insert((r.take::<String>(0)?, r.take::<String>(1)?));
        }
    }
    let mut positions = Vec::with_capacity(pairs.len());
    for (consumer, stream) in pairs {
        let params = [consumer.as_str().into(), stream.as_str().into()];
        let seq_of = |row: Option<kit::store::Row>| {
            row.map(|r| r.get::<u64>(0)).transpose().map(Option::unwrap_or_default)
        };
        let floor = seq_of(
            tx.query_opt("SELECT seq FROM kit_inbox_floor WHERE consumer = $1 AND stream = $2", &params)?,
        )?;
        let applied = seq_of(
            tx.query_opt("SELECT seq FROM kit_applied WHERE consumer = $1 AND stream = $2", &params)?,
        )?;
        let above: Vec<u64> = tx
            .query(
                "SELECT seq FROM kit_inbox WHERE consumer = $1 AND stream = $2 AND seq > $3 ORDER BY seq",
                &[consumer.as_str().into(), stream.as_str().into(), floor.into()],
            )?
            .into_iter()
            .map(|r| r.get(0))
            .collect::<Result<_, _>>()?;
        let first_gap =
            above.iter().zip(floor + 1..).find(|(seq, expected)| **seq != *expected).map(|(_, gap)| gap);
        let first_gap = first_gap.filter(|gap| *gap < applied);
        positions.push(ConsumerPosition {
            consumer,
            stream,
            floor,
            applied: applied.max(floor),
            applied_above_floor: above.len() as u64,
            first_gap,
        });
    }
    Ok(positions)
}

/// This part's facts as it runs: the bus head of its stream before its transaction, the
/// transaction, then the bus heads of every stream it produces or consumes and its
/// consumers' dead letters.
pub async fn live(ctx: &Context, state: StateReader) -> Result<ShopFacts, Problem> {
    let own = ctx.instance();
    let mut bus = BusFacts::default();
    // Without the bus the part's own facts still count; the report notes what is missing.
    let before = ctx.bus.stream_head(&own).await.ok();
    let mut part = read(&ctx.store, own.clone(), state, ctx.site).await?;
    for position in part.outbox.iter_mut().filter(|p| p.stream == own) {
        position.bus_head_before = before;
    }
    let streams: BTreeSet<String> =
        part.consumers.iter().map(|c| c.stream.clone()).chain(std::iter::once(own.clone())).collect();
    let viewed = async {
        for stream in streams {
            let head = ctx.bus.stream_head(&stream).await?;
            bus.streams.push(BusStream { stream, head });
        }
        let prefix = format!("{own}.");
        let letters = ctx.bus.dead_letters(&DeadLetterFilter::all()).await?;
        bus.dead_letters =
            letters.into_iter().filter(|d| d.consumer.starts_with(&prefix)).map(dead_letter_fact).collect();
        Ok::<_, kit::bus::BusError>(())
    }
    .await;
    if let Err(e) = viewed {
        bus = BusFacts { unreachable: vec![format!("{own}: {e}")], ..BusFacts::default() };
    } else if before.is_none() {
        bus.unreachable.push(format!("{own}: the bus did not answer before the read"));
    }
    Ok(ShopFacts { live: true, cut: false, parts: vec![part], bus })
}

/// A dead letter as the checker sees it.
pub(crate) fn dead_letter_fact(d: kit::bus::DeadLetter) -> DeadLetterFact {
    DeadLetterFact {
        consumer: d.consumer,
        stream: d.message.stream,
        seq: d.message.seq,
        key: d.message.key,
        event_id: d.message.id,
    }
}

/// What this service's database says for `capshop reconcile`, read in one transaction,
/// with the bus's heads and this service's dead letters.
#[utoipa::path(get, path = "/facts", operation_id = "facts", tag = "admin",
    responses((status = 200, body = ShopFacts),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "the database or the bus is unreachable")))]
pub(super) async fn facts(
    State(ctx): State<Arc<Context>>,
    Extension(FactsReader(state)): Extension<FactsReader>,
) -> Result<axum::Json<ShopFacts>, Problem> {
    Ok(axum::Json(live(&ctx, state).await?))
}
