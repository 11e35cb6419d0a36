//! The two channels of a heavy task, wired together: heavy chunks over gRPC, small progress
//! events for the same `task_id` on the identity's live signaling session.

mod common;

use common::ws::{connect_ws, send_json};
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;
use switchboard_auth::Scope;
use switchboard_proto::inference::inference_client::InferenceClient;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn progress_events_reach_the_same_identitys_signaling_session() {
    let s = start(test_config()).await;
    let mut ws = connect_ws(s.http_addr, &mint(&s, "alice", &[Scope::Webrtc])).await;
    // A second identity's session must not see alice's progress.
    let mut other = connect_ws(s.http_addr, &mint(&s, "bob", &[Scope::Webrtc])).await;
    for w in [&mut ws, &mut other] {
        send_json(w, json!({"type":"join","room_id":"lab"})).await;
    }

    let mut c = InferenceClient::new(channel(&s).await);
    let ticket = mint(&s, "alice", &[Scope::Grpc]);
    let req = predict_request("job-7", br#"{"chunks":6,"chunk_bytes":100}"#, &ticket);
    let mut st = c.stream_predict(req).await.unwrap().into_inner();
    let mut chunks = 0;
    while let Some(ch) = st.message().await.unwrap() {
        if ch.done {
            break;
        }
        chunks += 1;
    }
    assert_eq!(chunks, 6);

    // Read alice's messages until the final progress event.
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let t = match ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                other => panic!("socket ended: {other:?}"),
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "stream_progress" && v["state"] != "running" {
                return v;
            }
        }
    })
    .await
    .expect("final progress event");
    assert_eq!(done["task_id"], "job-7");
    assert_eq!(done["state"], "done");
    // `chunks` counts every PredictChunk relayed, the final `done` marker included.
    assert_eq!(done["chunks"], 7);
    assert!(done["bytes"].as_u64().unwrap() >= 600);

    // Bob got nothing about job-7.
    let leak = tokio::time::timeout(Duration::from_millis(300), async {
        while let Some(Ok(Message::Text(t))) = other.next().await {
            if t.contains("stream_progress") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(!leak, "progress leaked to another identity");
    s.shutdown().await;
}
