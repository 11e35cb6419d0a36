//! The demo page and the browser SDK, embedded in the binary so `cargo run` needs no npm.
//!
//! | route | what |
//! |---|---|
//! | `/` | demo: join a room, who is there, chat and live cursors over DataChannels, RTT |
//! | `/sdk/<module>.js` | the SDK (`clients/js/src`), plain ES modules: every file in [`SDK_MODULES`] |

use crate::state::AppState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../web/index.html");

/// `(name, source)` for each named file of `clients/js/src`, embedded at build time.
macro_rules! sdk_modules {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../clients/js/src/", $name)))),*]
    };
}

/// The SDK's modules, served as `/sdk/<name>`. The entry point is `switchboard.js`; the others
/// are what it imports (browsers load them by relative URL, so each one the SDK imports must be
/// here; the `sdk_imports_are_served` test checks it).
pub const SDK_MODULES: &[(&str, &str)] = sdk_modules![
    "switchboard.js",
    "channels.js",
    "chunking.js",
    "connection.js",
    "emitter.js",
    "link.js",
    "media.js",
    "peer.js",
    "protocol.js",
    "record.js",
    "room.js",
    "sfu.js",
    "stats.js",
    "stream.js",
];

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
    router()
}

/// The demo page and every SDK module.
fn router() -> Router {
    let mut router = Router::new().route(
        "/",
        get(|| async {
            (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                INDEX_HTML,
            )
                .into_response()
        }),
    );
    for &(name, body) in SDK_MODULES {
        router = router.route(
            &format!("/sdk/{name}"),
            get(move || async move { js(body) }),
        );
    }
    router
}

#[cfg(test)]
mod tests {
    use super::{router, SDK_MODULES};
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use tower::ServiceExt;

    /// Every relative module specifier (`'./x.js'` or `"./x.js"`) in `src`: static imports,
    /// re-exports and the string a dynamic `import()` is given.
    fn relative_specifiers(src: &str) -> Vec<String> {
        let mut out = Vec::new();
        for quote in ['\'', '"'] {
            let open = format!("{quote}./");
            let mut rest = src;
            while let Some(i) = rest.find(&open) {
                let tail = &rest[i + open.len()..];
                let Some(end) = tail.find(quote) else { break };
                let name = &tail[..end];
                if name.ends_with(".js") && !name.contains(['/', '\n', ' ']) {
                    out.push(name.to_string());
                }
                rest = &tail[end..];
            }
        }
        out
    }

    #[test]
    fn sdk_imports_are_served() {
        let served: Vec<&str> = SDK_MODULES.iter().map(|(name, _)| *name).collect();
        assert!(
            served.contains(&"switchboard.js"),
            "the entry point is served"
        );
        let mut checked = 0;
        for (module, src) in SDK_MODULES {
            for spec in relative_specifiers(src) {
                assert!(
                    served.contains(&spec.as_str()),
                    "{module} imports ./{spec}, which is not in web::SDK_MODULES (not served under /sdk/)"
                );
                checked += 1;
            }
        }
        assert!(checked > 0, "found no imports at all: the parser is broken");
    }

    #[test]
    fn relative_specifiers_are_found() {
        let src = "import { a,\n  b } from './one.js';\nexport { c } from \"./two.js\";\n\
                   const p = './three.js'; import(p);\n// see ./four.js\nimport x from 'pkg';\n";
        assert_eq!(
            relative_specifiers(src),
            ["one.js", "three.js", "two.js"].map(String::from).to_vec()
        );
    }

    #[test]
    fn sdk_module_names_are_unique() {
        let mut names: Vec<&str> = SDK_MODULES.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SDK_MODULES.len());
    }

    #[tokio::test]
    async fn every_sdk_module_is_served_as_javascript() {
        let app = router();
        for (name, src) in SDK_MODULES {
            let req = Request::get(format!("/sdk/{name}"))
                .body(Body::empty())
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "/sdk/{name}");
            let h = resp.headers();
            assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            assert_eq!(body, src.as_bytes(), "/sdk/{name} body");
        }
        let req = Request::get("/sdk/missing.js").body(Body::empty()).unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}
