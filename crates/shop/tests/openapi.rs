//! Each service's OpenAPI document as it serves it at `/openapi.json`: a committed snapshot
//! per service (`snapshots/`), so a change to a route or its documentation is a visible
//! diff; and every operation the document names reaches a handler. The gateway's
//! document (its fault controls) is checked the same way.

mod support;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use shop::inventory::sites::Site;
use shop::service::ServiceName;
use support::{TOKEN, spawn_shop};

async fn document(addr: std::net::SocketAddr) -> Value {
    let response = reqwest::get(format!("http://{addr}/openapi.json")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Every (method, path) `doc` names, path parameters filled in with a placeholder.
fn operations(doc: &Value) -> Vec<(Method, String)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("the document has paths") {
        let concrete = path
            .split('/')
            .map(|part| if part.starts_with('{') { "probe-1" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase().parse::<Method>().expect("an HTTP method");
            found.push((method, concrete.clone()));
        }
    }
    found
}

#[tokio::test]
async fn every_service_serves_the_openapi_document_of_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    for name in ServiceName::ALL {
        let doc = document(shop.services[&name]).await;
        let mut ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values().map(|op| op["operationId"].as_str().unwrap()))
            .collect();
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count, "{name} names each operation once");
        insta::assert_json_snapshot!(name.as_str(), doc);
    }
    insta::assert_json_snapshot!("gateway", document(shop.gateway).await);
    // Both sites serve the same routes, so one snapshot covers them.
    let dc1 = document(shop.sites[&Site::Dc1].addr).await;
    let dc2 = document(shop.sites[&Site::Dc2].addr).await;
    assert_eq!(dc1, dc2);
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn every_documented_operation_is_routed_to_its_handler() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    let client = Client::new();
    for name in ServiceName::ALL {
        let addr = shop.services[&name];
        let doc = document(addr).await;
        let operations = operations(&doc);
        assert!(operations.len() > 3, "{name} documents its own routes besides the common ones");
        for (method, path) in operations {
            let mut request =
                client.request(method.clone(), format!("http://{addr}{path}")).bearer_auth(TOKEN);
            if method == Method::POST || method == Method::PUT {
                request = request.json(&json!({}));
            }
            let response = request.send().await.unwrap_or_else(|e| panic!("{name} {method} {path}: {e}"));
            let status = response.status();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{name} {method} {path}");
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(body["detail"], "no such route", "{name} {method} {path}");
        }
    }
    // The gateway's fault controls: each call names placeholders, so it changes nothing.
    let doc = document(shop.gateway).await;
    for (method, path) in operations(&doc) {
        let mut request = client.request(method.clone(), shop.url(&path)).bearer_auth(TOKEN);
        if method == Method::POST {
            request = request.json(&json!({ "a": "probe-1", "b": "probe-2", "ms": 1, "fraction": 0.0 }));
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("gateway {method} {path}: {e}"));
        assert_ne!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "gateway {method} {path}");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(!detail.starts_with("no such route"), "gateway {method} {path}: {body}");
    }
    shop.stop().await.unwrap();
}
