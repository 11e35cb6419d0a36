//! Signaling over WebSocket, as a browser speaks it: connect with a ticket, send and read JSON.

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The signaling URL of the server at `addr` (`host:port`) with `ticket` in the query.
pub fn signal_url(addr: impl std::fmt::Display, ticket: &str) -> String {
    format!("ws://{addr}/v1/signal?access_token={ticket}")
}

/// A signaling connection to the server at `addr` (`host:port`), presenting `ticket`.
pub async fn connect_ws(addr: impl std::fmt::Display, ticket: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(signal_url(addr, ticket))
        .await
        .expect("websocket connects");
    ws
}

pub async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Next JSON text message within `limit` (pings answered by tungstenite while reading).
pub async fn next_json(ws: &mut Ws, limit: Duration) -> Value {
    loop {
        let m = tokio::time::timeout(limit, ws.next())
            .await
            .unwrap_or_else(|_| panic!("a message within {limit:?}"))
            .expect("stream open")
            .expect("no error");
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}
