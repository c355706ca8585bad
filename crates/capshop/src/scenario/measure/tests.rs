//! The loss check against a real shop in this process: healthy, it finds nothing; when a
//! replica forgets what it applied, both counts find it, by key.

use std::time::Duration;

use serde_json::json;
use shop::service::{Choices, Part, ServiceName};

use crate::scenario::Lab;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_forgot_an_applied_event_is_counted_lost_by_event_and_by_acknowledged_write() {
    let lab = Lab::new(true, false).unwrap();
    let shop = lab.shop("shop", Choices::default()).await.unwrap();
    let changed = shop.put("/api/catalog/products/p-003/price", &json!({ "price_cents": 1234 })).await;
    assert!(changed.ok(), "{changed:?}");
    shop.converge(Duration::from_secs(60)).await.unwrap();
    let healthy = shop.lost().await.unwrap();
    assert_eq!((healthy.lost, healthy.acknowledged), (0, 1), "{healthy:?}");
    assert!(healthy.deliveries > 0, "{healthy:?}");

    // The index forgets the product, as a database restored from an old copy would.
    let search = shop.shop.contexts[&ServiceName::Search].store.clone();
    search
        .transact(|tx| {
            tx.execute("DELETE FROM kit_replica_version WHERE scope = 'product' AND key = 'p-003'", &[])
        })
        .await
        .unwrap();
    let lost = shop.lost().await.unwrap();
    assert_eq!(lost.writes, 1, "{lost:?}");
    assert!(lost.events >= 2, "its ProductAdded and ProductPriceChanged had no effect now: {lost:?}");
    assert_eq!(lost.lost, lost.events + lost.writes);
    assert!(lost.missing.iter().any(|m| m.contains("search.catalog") && m.contains("p-003@")), "{lost:?}");
    assert!(
        lost.missing
            .iter()
            .any(|m| m.starts_with("acknowledged write product/p-003@") && m.contains("search holds none")),
        "{lost:?}"
    );
    shop.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_that_cannot_converge_is_reported_as_a_liveness_failure_with_what_holds_it_back() {
    let lab = Lab::new(true, false).unwrap();
    let shop = lab.shop("shop", Choices::default()).await.unwrap();
    // Search stops consuming; the catalog still publishes.
    let search = Part::Service(ServiceName::Search);
    shop.shop.chaos.stop(search).await.unwrap();
    let changed = shop.put("/api/catalog/products/p-004/price", &json!({ "price_cents": 999 })).await;
    assert!(changed.ok(), "{changed:?}");
    let stuck = shop.converge(Duration::from_millis(500)).await.unwrap_err().to_string();
    assert!(stuck.starts_with("liveness failure"), "{stuck}");
    assert!(stuck.contains("published events not applied"), "{stuck}");

    shop.shop.chaos.start(search).await.unwrap();
    shop.converge(Duration::from_secs(60)).await.unwrap();
    assert_eq!(shop.lost().await.unwrap().lost, 0, "a late delivery is not a loss");
    shop.stop().await.unwrap();
}
