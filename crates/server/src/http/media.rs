//! `GET /streams/{id}/{file}`: a packaged stream's playlist and ciphertext
//! segments, for players and CDNs. Only the files a stream lists are
//! served: the request path is looked up, never joined onto a folder, so
//! `..`, encoded slashes and stray files are unreachable; symlinks are
//! refused too.

use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

/// Segments never change once packaged: a CDN may keep them for a year.
const SEGMENT_CACHE: &str = "public, max-age=31536000, immutable";
/// The playlist changes only when a stream is packaged again.
const PLAYLIST_CACHE: &str = "public, max-age=60";

pub async fn serve(
    State(state): State<AppState>,
    Path((stream_id, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    let Some(path) = state.streams.get(&stream_id).and_then(|stream| stream.file(&name)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match tokio::fs::symlink_metadata(path).await {
        Ok(meta) if meta.file_type().is_file() => {}
        _ => return StatusCode::NOT_FOUND.into_response(),
    }
    let is_playlist = name.ends_with(".m3u8");
    if let (true, Some(base)) = (is_playlist, &state.segment_base_url) {
        return rewritten_playlist(path, base, &stream_id).await;
    }
    let (mime, cache) =
        if is_playlist { ("application/vnd.apple.mpegurl", PLAYLIST_CACHE) } else { ("video/mp2t", SEGMENT_CACHE) };
    let mime = mime.parse::<mime::Mime>().expect("static MIME types parse");
    // ServeFile answers Range requests, HEAD and conditional requests.
    match ServeFile::new_with_mime(path, &mime).oneshot(request).await {
        Ok(response) => {
            let mut response = response.map(Body::new);
            if response.status().is_success() {
                response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
                // Players on other origins (a CDN page) may fetch these.
                response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            }
            response
        }
        Err(error) => {
            tracing::warn!(%error, stream = %stream_id, file = %name, "cannot serve media file");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The playlist at `path` with its segments pointed at `base`
/// (`--segment-base-url`), rewritten on every request so the file on disk
/// stays as packaged. A playlist is a few kilobytes: no Range support.
async fn rewritten_playlist(path: &std::path::Path, base: &str, stream_id: &str) -> Response {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(text) => text,
        Err(error) => {
            tracing::warn!(%error, stream = %stream_id, "cannot read playlist");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let body = tollstream_media::playlist::rewrite_segment_uris(&text, base, stream_id);
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.apple.mpegurl")),
            (header::CACHE_CONTROL, HeaderValue::from_static(PLAYLIST_CACHE)),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollstream_media::playlist::{PlaylistSegment, key_uri, segment_file_name, write_playlist};

    #[tokio::test]
    async fn a_served_playlist_points_segments_at_the_base_and_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.m3u8");
        let segments: Vec<PlaylistSegment> = (0..3)
            .map(|i| PlaylistSegment {
                uri: segment_file_name(i),
                duration: 2.0,
                key_uri: key_uri("demo", i),
                iv: [i as u8; 16],
            })
            .collect();
        let packaged = write_playlist(&segments);
        std::fs::write(&path, &packaged).unwrap();

        let response = rewritten_playlist(&path, "https://cdn.example/media/", "demo").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/vnd.apple.mpegurl");
        assert_eq!(response.headers()[header::CACHE_CONTROL], PLAYLIST_CACHE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let served = tollstream_media::parse_playlist(&body).unwrap();
        let uris: Vec<&str> = served.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(
            uris,
            [
                "https://cdn.example/media/demo/seg00000.ts",
                "https://cdn.example/media/demo/seg00001.ts",
                "https://cdn.example/media/demo/seg00002.ts"
            ]
        );
        assert!(served.iter().zip(&segments).all(|(s, p)| s.key_uri == p.key_uri && s.iv == p.iv));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), packaged, "the file on disk stays as packaged");
    }
}
