//! The demo page and the browser SDK, embedded in the binary so `cargo run` needs no npm.
//!
//! | route | what |
//! |---|---|
//! | `/` | demo: join a room, who is there, chat and live cursors over DataChannels, RTT |
//! | `/sdk/switchboard.js`, `/sdk/chunking.js`, `/sdk/stream.js` | the SDK (`clients/js/src`), plain ES modules |

use crate::app::AppState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../web/index.html");
const SDK_MAIN: &str = include_str!("../../../clients/js/src/switchboard.js");
const SDK_CHUNKING: &str = include_str!("../../../clients/js/src/chunking.js");
const SDK_STREAM: &str = include_str!("../../../clients/js/src/stream.js");

fn js(body: &'static str) -> axum::response::Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub fn routes(state: &AppState) -> Router {
    if !state.config.http.web_ui {
        return Router::new();
    }
    Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    INDEX_HTML,
                )
                    .into_response()
            }),
        )
        .route("/sdk/switchboard.js", get(|| async { js(SDK_MAIN) }))
        .route("/sdk/chunking.js", get(|| async { js(SDK_CHUNKING) }))
        .route("/sdk/stream.js", get(|| async { js(SDK_STREAM) }))
}
