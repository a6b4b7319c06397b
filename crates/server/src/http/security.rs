//! Security headers. The player page holds the viewer's session key (in
//! `localStorage`): any script that runs in its origin can sign the
//! channel's remaining balance away to the payee and watch on it. So the
//! page gets a strict Content-Security-Policy built from the server's
//! configuration ([`player_policy`]): scripts and styles only from this
//! server, connections only to this server, the demo's chain node and the
//! segment CDN, nothing inline, no eval, no frames, no plugins. Every other
//! response gets [`FALLBACK_POLICY`], which lets nothing load, and every
//! response gets the static headers of [`with_headers`]. The page also gets
//! [`STRICT_TRANSPORT_SECURITY`] when the server speaks TLS itself.
//!
//! What the page needs, and why each source is there:
//! - `script-src 'self'`, `style-src 'self'`: the bundle `/assets/app.js`
//!   and `/assets/app.css`; the page has no inline script, style or style
//!   attribute, and nothing in the bundle calls `eval` or `Function`.
//! - `connect-src 'self'`: `/demo.json`, the playlists, the segments when
//!   they are served here, and Socket.IO's WebSocket to the same host
//!   (CSP Level 3 lets `'self'` match `ws:`/`wss:` of the page's own host;
//!   browsers older than that, e.g. Safari before 15.4, refuse it). Plus
//!   the origin of the demo's JSON-RPC node (`/demo.json`'s `rpc_url`, the
//!   only chain endpoint the page itself calls: an injected wallet talks to
//!   its own node, outside the page) and of `--segment-base-url`, from
//!   where hls.js fetches the segments.
//! - `media-src blob:`: hls.js feeds the `<video>` through Media Source
//!   Extensions, whose source is a `blob:` URL.
//! - `img-src data:`: the page's empty `data:,` icon, which keeps browsers
//!   from asking for `/favicon.ico`.
//! - `worker-src 'none'`: the bundled hls.js (its ES module build) starts
//!   no worker; it transmuxes on the page's thread.
//! - `require-trusted-types-for 'script'`: no string reaches an HTML or
//!   script sink (`innerHTML`, `eval`, a script's `src`), where browsers
//!   enforce it; the page builds its DOM with `createElement`.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Uri, header};
use tower_http::set_header::SetResponseHeaderLayer;

/// `Strict-Transport-Security` of the page when the server speaks TLS
/// itself: https only, for a year. Not for subdomains, which this server
/// knows nothing of.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";

/// The policy of every response that is not the player page (JSON,
/// playlists, segments, metrics): opened as a document, it may load and run
/// nothing, and be framed by no one.
pub const FALLBACK_POLICY: &str = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The headers every HTTP response gets, unless its handler set them:
/// no MIME sniffing (a segment is never read as a script or a page), no
/// `Referer` to the chain node or the CDN, no framing (with
/// `frame-ancestors`, for browsers that predate it), a browsing context
/// group of its own (no opener that could reach into the page), and
/// [`FALLBACK_POLICY`].
const HEADERS: [(HeaderName, &str); 5] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
    (header::CONTENT_SECURITY_POLICY, FALLBACK_POLICY),
];

/// `router` with [`HEADERS`] on every response, its fallback's included.
pub fn with_headers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    HEADERS.into_iter().fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value)))
    })
}

/// The player page's Content-Security-Policy, for a server whose page calls
/// the JSON-RPC node at `rpc_url` (the demo's; `None` otherwise) and whose
/// playlists point segments at `segment_base_url` (`--segment-base-url`).
/// Only the origins of the URLs are named, never their paths, which may
/// hold an API key. A URL whose origin a policy cannot name (not http or
/// https, or an IPv6 address, which CSP host sources cannot express) is
/// left out: the page then cannot reach it, rather than reach everything.
pub fn player_policy(rpc_url: Option<&str>, segment_base_url: Option<&str>) -> HeaderValue {
    let mut connect = vec!["'self'".to_owned()];
    for origin in [rpc_url, segment_base_url].into_iter().flatten().filter_map(origin_of) {
        if !connect.contains(&origin) {
            connect.push(origin);
        }
    }
    let policy = [
        "default-src 'none'".to_owned(),
        "script-src 'self'".to_owned(),
        "style-src 'self'".to_owned(),
        format!("connect-src {}", connect.join(" ")),
        "media-src blob:".to_owned(),
        "img-src data:".to_owned(),
        "worker-src 'none'".to_owned(),
        "base-uri 'none'".to_owned(),
        "form-action 'none'".to_owned(),
        "frame-ancestors 'none'".to_owned(),
        "require-trusted-types-for 'script'".to_owned(),
    ]
    .join("; ");
    HeaderValue::from_str(&policy).expect("origins are checked to be plain ASCII host sources")
}

/// `scheme://host[:port]` of an http or https URL, lowercased, as a CSP
/// host source; `None` when the URL is not one, or its host is not a name
/// or an IPv4 address (user info, paths and queries are dropped).
fn origin_of(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = uri.host()?.to_ascii_lowercase();
    let is_host_source =
        !host.is_empty() && host.split('.').all(|label| !label.is_empty() && label.bytes().all(is_host_char));
    if !is_host_source {
        return None;
    }
    Some(match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

/// CSP's `host-char`: ALPHA / DIGIT / "-".
fn is_host_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directives(policy: &HeaderValue) -> Vec<String> {
        policy.to_str().unwrap().split("; ").map(str::to_owned).collect()
    }

    fn directive(policy: &HeaderValue, name: &str) -> String {
        directives(policy).into_iter().find(|d| d.split(' ').next() == Some(name)).unwrap_or_default()
    }

    #[test]
    fn the_page_may_reach_itself_the_demo_chain_and_the_cdn_only() {
        let policy = player_policy(Some("http://127.0.0.1:41733"), Some("https://cdn.example/media/"));
        assert_eq!(directive(&policy, "connect-src"), "connect-src 'self' http://127.0.0.1:41733 https://cdn.example");
        assert_eq!(directive(&policy, "script-src"), "script-src 'self'");
        assert_eq!(directive(&policy, "style-src"), "style-src 'self'");
        assert_eq!(directive(&policy, "default-src"), "default-src 'none'");
        for fixed in ["base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'", "media-src blob:"] {
            assert!(directives(&policy).iter().any(|d| d == fixed), "{fixed} missing from {policy:?}");
        }

        let plain = player_policy(None, None);
        assert_eq!(directive(&plain, "connect-src"), "connect-src 'self'");
    }

    #[test]
    fn nothing_inline_nothing_evaluated_nothing_from_anywhere() {
        for policy in [player_policy(Some("https://rpc.example/v3/secret"), None), player_policy(None, None)] {
            let text = policy.to_str().unwrap();
            for forbidden in
                ["unsafe-inline", "unsafe-eval", "unsafe-hashes", "wasm-unsafe-eval", "*", "http: ", "https: "]
            {
                assert!(!text.contains(forbidden), "{forbidden} in {text}");
            }
            // An API key in the node's path stays out of the header.
            assert!(!text.contains("secret"), "{text}");
        }
    }

    #[test]
    fn only_plain_http_origins_are_named() {
        assert_eq!(origin_of("http://127.0.0.1:8545"), Some("http://127.0.0.1:8545".into()));
        assert_eq!(origin_of("HTTPS://RPC.Example/v3/key?x=1"), Some("https://rpc.example".into()));
        assert_eq!(origin_of("https://user:pass@rpc.example:8443/"), Some("https://rpc.example:8443".into()));
        for bad in [
            "ws://127.0.0.1:8545",
            "file:///etc/passwd",
            "http://[::1]:8545",
            "rpc.example",
            "http://a..b/",
            "https://rpc.example; script-src *",
            "https://rpc.exa'mple",
        ] {
            assert_eq!(origin_of(bad), None, "{bad}");
        }
        // An origin that cannot be named is left out, not widened.
        assert_eq!(directive(&player_policy(Some("http://[::1]:8545"), None), "connect-src"), "connect-src 'self'");
    }

    #[tokio::test]
    async fn every_response_gets_the_static_headers_without_overriding_its_own() {
        use axum::routing::get;
        use tower::ServiceExt;

        let app = with_headers(
            Router::new()
                .route("/plain", get(|| async { "x" }))
                .route("/own", get(|| async { ([(header::CONTENT_SECURITY_POLICY, "default-src 'self'")], "x") })),
        );
        let get = |path: &'static str| {
            let app = app.clone();
            async move {
                app.oneshot(axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap()).await.unwrap()
            }
        };
        let plain = get("/plain").await;
        let headers = plain.headers();
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers["cross-origin-opener-policy"], "same-origin");
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], FALLBACK_POLICY);
        assert!(!headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
        let own = get("/own").await;
        assert_eq!(own.headers()[header::CONTENT_SECURITY_POLICY], "default-src 'self'");
        assert_eq!(own.headers().get_all(header::CONTENT_SECURITY_POLICY).iter().count(), 1);
        // Also on a 404 of a path no route knows.
        assert_eq!(get("/nowhere").await.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
