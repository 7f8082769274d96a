//! The CDH bridge through the HTTP API: a connected account's events reach a local HTTP server
//! standing in for the CDH, in order, and the Admin Center shows and retries deliveries.

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{Server, eventually};
use serde_json::{Value, json};

/// What the stand-in CDH received, and what it answers next.
#[derive(Default)]
struct Cdh {
    batches: Vec<(String, String, Value)>,
    reject: bool,
}

async fn receive(
    State(cdh): State<Arc<Mutex<Cdh>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let mut cdh = cdh.lock().unwrap();
    if cdh.reject {
        return StatusCode::BAD_REQUEST;
    }
    cdh.batches.push((
        common::header(&headers, "authorization"),
        common::header(&headers, "idempotency-key"),
        body,
    ));
    StatusCode::OK
}

async fn start_cdh(reject: bool) -> (String, Arc<Mutex<Cdh>>) {
    let cdh = Arc::new(Mutex::new(Cdh {
        reject,
        ..Cdh::default()
    }));
    let app = axum::Router::new()
        .route("/v1/unify-events", axum::routing::post(receive))
        .with_state(cdh.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, cdh)
}

fn seqs(cdh: &Mutex<Cdh>) -> Vec<u64> {
    cdh.lock()
        .unwrap()
        .batches
        .iter()
        .flat_map(|(_, _, body)| body["events"].as_array().unwrap().clone())
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn connected_events_reach_the_cdh_and_dead_letters_are_retried() {
    let (url, cdh) = start_cdh(true).await;
    let s = Server::start_with(|c| {
        c.cdh.url = Some(url.clone());
        c.cdh.token = Some("cdh-token".into());
        c.cdh.batch_max = 7;
        c.cdh.max_attempts = 2;
        c.cdh.retry_base_ms = 10;
        c.cdh.retry_max_ms = 50;
    })
    .await;
    let t = s.tenant("acme").await;
    let maac = s.org(&t.admin, "maac", "m").await;
    let (status, _) = s
        .post(
            &t.path("/chat/members"),
            &t.admin,
            json!({ "channel_id": t.channel_id, "external_member_id": "before" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, state) = s.get("/api/v1/applications/cdh/sync-state", &t.admin).await;
    assert_eq!(
        state["pending"],
        json!(0),
        "nothing is queued before integrate"
    );

    let (status, _) = s
        .post(
            "/api/v1/applications/cdh/integrate",
            &t.admin,
            json!({ "unify_keys": ["display_email"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for i in 0..20 {
        let (status, _) = s
            .post(
                &format!("/api/v1/orgs/{maac}/chat/members"),
                &t.admin,
                json!({ "external_member_id": format!("m{i}"), "display_email": format!("p{}@x.com", i % 5) }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    // The CDH refuses every batch: they are dead-lettered after two attempts.
    let dead = eventually(|| async {
        let (_, state) = s.get("/api/v1/application/cdh/sync-state", &t.admin).await;
        state["pending"] == json!(0) && state["dead"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert!(dead, "batches are dead-lettered");
    let (_, state) = s.get("/api/v1/applications/cdh/sync-state", &t.admin).await;
    assert_eq!(state["delivered"], json!(0));
    assert!(
        state["last_error"].as_str().unwrap().contains("400"),
        "{state}"
    );
    let dead_count = state["dead"].as_u64().unwrap();

    // The CDH recovers; retry redelivers everything, in order.
    cdh.lock().unwrap().reject = false;
    let (status, requeued) = s
        .post("/api/v1/applications/cdh/sync/retry", &t.admin, Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(requeued, json!({ "requeued": dead_count }));
    let delivered = eventually(|| async {
        let (_, state) = s.get("/api/v1/applications/cdh/sync-state", &t.admin).await;
        state["delivered"] == json!(dead_count) && state["pending"] == json!(0)
    })
    .await;
    assert!(delivered);
    let got = seqs(&cdh);
    assert_eq!(got.len() as u64, dead_count);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    for (auth, key, body) in &cdh.lock().unwrap().batches {
        assert_eq!(auth, "Bearer cdh-token");
        let events = body["events"].as_array().unwrap();
        assert!(events.len() <= 7);
        let scope = body["unify_scope_id"].as_u64().unwrap();
        let first = events[0]["seq"].as_u64().unwrap();
        let last = events[events.len() - 1]["seq"].as_u64().unwrap();
        assert_eq!(key, &format!("{scope}-{first}-{last}"));
    }
    // Agents may not see the delivery state.
    let agent = s.agent(t.account_id, vec![t.org_id]);
    let (status, _) = s.get("/api/v1/applications/cdh/sync-state", &agent).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    s.stop().await;
}
