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
