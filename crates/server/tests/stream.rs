//! The stream gateway as wired into the server: gRPC on the main HTTP port, ticket minted by
//! the server's own key ring, metrics on /metrics.

mod common;

use common::*;
use switchboard_auth::Scope;
use switchboard_proto::inference::inference_client::InferenceClient;
use switchboard_proto::inference::PredictRequest;

#[tokio::test]
async fn stream_predict_on_the_main_port() {
    let s = start(test_config()).await;
    let token = mint(&s, "wired", &[Scope::Grpc]);
    let mut c = InferenceClient::new(channel(&s).await);
    let req = predict_request("t", br#"{"chunks":4,"chunk_bytes":64}"#, &token);
    let mut st = c.stream_predict(req).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(ch) = st.message().await.unwrap() {
        n += 1;
        if ch.done {
            break;
        }
    }
    assert_eq!(n, 5);
    let e = c
        .stream_predict(PredictRequest {
            task_id: "t".into(),
            payload: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let m = scrape(s.http_addr).await;
    assert!(m.contains("switchboard_stream_chunks_total 5"), "{m}");
    assert!(m.contains("switchboard_stream_active 0"));
    s.shutdown().await;
}
