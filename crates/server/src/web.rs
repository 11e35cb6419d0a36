//! The demo page and the browser SDK, embedded in the binary so `cargo run` needs no npm.

use crate::app::AppState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../web/index.html");

pub fn routes(state: &AppState) -> Router {
    if !state.config.http.web_ui {
        return Router::new();
    }
    Router::new().route(
        "/",
        get(|| async {
            (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                INDEX_HTML,
            )
                .into_response()
        }),
    )
}
