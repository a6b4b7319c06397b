//! The browser player page, embedded in the binary: `/` (the page),
//! `/assets/app.js` and `/assets/app.css`, built from `web/` by
//! `npm run build:web` into `web/dist/` (committed, and checked fresh with
//! `node web/build.mjs --check`). The page loads nothing from any other
//! host.
//!
//! The file names carry no content hash, so every response must be
//! revalidated (`no-cache`); an `ETag` makes that a 304 while the binary
//! is the same.
//!
//! The page carries its Content-Security-Policy
//! ([`security::player_policy`]), and `Strict-Transport-Security` when
//! this server speaks TLS itself, on its 304s too: a browser replaces a
//! cached response's headers with those of the 304 that revalidates it.

use super::security;
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::hash::{Hash, Hasher};
use std::sync::LazyLock;

const INDEX_HTML: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/dist/index.html"));
const APP_JS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/dist/app.js"));
const APP_CSS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/dist/app.css"));

/// Revalidate every time: the names stay the same across versions.
const CACHE_CONTROL: &str = "no-cache";

/// One embedded file: its bytes, type and entity tag.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str) -> Asset {
        // The hash only has to differ between builds of different files;
        // DefaultHasher is fixed within one binary, which is all that needs.
        let mut hasher = std::hash::DefaultHasher::new();
        body.hash(&mut hasher);
        let etag = HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish()))
            .expect("a quoted hex string is a valid header value");
        Asset { body, content_type, etag }
    }

    fn respond(&self, request_headers: &HeaderMap) -> Response {
        let not_modified = request_headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == self.etag || tag.trim() == "*"));
        let headers =
            [(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL)), (header::ETAG, self.etag.clone())];
        if not_modified {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        let content_type = (header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        (headers, [content_type], self.body).into_response()
    }
}

static INDEX: LazyLock<Asset> = LazyLock::new(|| Asset::new(INDEX_HTML.as_bytes(), "text/html; charset=utf-8"));
static SCRIPT: LazyLock<Asset> = LazyLock::new(|| Asset::new(APP_JS, "text/javascript; charset=utf-8"));
static STYLE: LazyLock<Asset> = LazyLock::new(|| Asset::new(APP_CSS, "text/css; charset=utf-8"));

/// The page, with the headers of this server's configuration.
async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let rpc_url = state.demo.as_ref().and_then(|demo| demo.get("rpc_url")).and_then(|url| url.as_str());
    let policy = security::player_policy(rpc_url, state.segment_base_url.as_deref());
    with_page_headers(INDEX.respond(&headers), policy, state.tls.is_some())
}

/// `response` with the page's policy and, when `tls` (`--tls-cert`: every
/// listener speaks https), HSTS. Behind a proxy that terminates TLS the
/// server cannot tell, and the proxy must send HSTS.
fn with_page_headers(mut response: Response, policy: HeaderValue, tls: bool) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    if tls {
        headers
            .insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(security::STRICT_TRANSPORT_SECURITY));
    }
    response
}

/// The player's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/assets/app.js", get(|headers: HeaderMap| async move { SCRIPT.respond(&headers) }))
        .route("/assets/app.css", get(|headers: HeaderMap| async move { STYLE.respond(&headers) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(asset: &Asset, if_none_match: Option<&str>) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(tag) = if_none_match {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(tag).unwrap());
        }
        asset.respond(&headers)
    }

    #[test]
    fn serves_the_embedded_files_with_their_types() {
        for (asset, content_type) in [
            (&*INDEX, "text/html; charset=utf-8"),
            (&*SCRIPT, "text/javascript; charset=utf-8"),
            (&*STYLE, "text/css; charset=utf-8"),
        ] {
            let response = get(asset, None);
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[header::CONTENT_TYPE], content_type);
            assert_eq!(response.headers()[header::CACHE_CONTROL], CACHE_CONTROL);
            assert!(!asset.body.is_empty());
        }
        // The page names the assets by the paths served here.
        assert!(INDEX_HTML.contains("/assets/app.js") && INDEX_HTML.contains("/assets/app.css"));
    }

    #[test]
    fn a_matching_etag_is_not_modified() {
        let etag = get(&SCRIPT, None).headers()[header::ETAG].to_str().unwrap().to_owned();
        assert_eq!(get(&SCRIPT, Some(&etag)).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(get(&SCRIPT, Some(&format!("\"other\", {etag}"))).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(get(&SCRIPT, Some("\"other\"")).status(), StatusCode::OK);
    }

    #[test]
    fn the_page_carries_its_policy_and_hsts_over_tls_when_not_modified_too() {
        let policy = security::player_policy(Some("http://127.0.0.1:8545"), None);
        let etag = get(&INDEX, None).headers()[header::ETAG].to_str().unwrap().to_owned();
        for tls in [false, true] {
            for response in [get(&INDEX, None), get(&INDEX, Some(&etag))] {
                let response = with_page_headers(response, policy.clone(), tls);
                assert_eq!(response.headers()[header::CONTENT_SECURITY_POLICY], policy);
                let hsts = response.headers().get(header::STRICT_TRANSPORT_SECURITY);
                assert_eq!(hsts.is_some(), tls, "HSTS only over TLS");
                assert!(hsts.is_none_or(|v| v.to_str().unwrap().starts_with("max-age=")));
            }
        }
    }

    #[test]
    fn the_page_has_nothing_inline_for_the_policy_to_refuse() {
        // The policy allows no inline script, style or event handler.
        let html = INDEX_HTML.to_ascii_lowercase();
        for inline in ["<script>", "<style", " style=", " onload=", " onclick=", "javascript:"] {
            assert!(!html.contains(inline), "the page has {inline}");
        }
        assert!(html.contains("<script defer src=\"/assets/app.js\"></script>"));
    }
}
