//! Fetching a stream's ciphertext and decrypting it with the keys bought:
//! what `tollstream watch -o` writes out as playable MPEG-TS.

use std::collections::BTreeMap;
use tollstream_media::playlist::{PlaylistSegment, parse_key_uri, parse_playlist};
use tollstream_media::{SegmentKey, decrypt_segment};
use tollstream_protocol::SegmentKey as WireKey;

use crate::root_cause;
use crate::tls::Tls;

/// Why media could not be fetched or decrypted.
#[derive(Debug, thiserror::Error)]
pub enum PlayerError {
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the playlist at {url} is unusable: {reason}")]
    Playlist { url: String, reason: String },
    #[error("segment {0} is not in the playlist")]
    NoSuchSegment(u64),
    #[error("segment {segment}: {reason}")]
    Decrypt { segment: u64, reason: String },
}

/// One stream's playlist and the ciphertext fetched so far.
pub struct MediaFetcher {
    http: reqwest::Client,
    base: url::Url,
    stream_id: String,
    segments: Vec<PlaylistSegment>,
    ciphertext: BTreeMap<u64, Vec<u8>>,
}

impl MediaFetcher {
    /// Reads the playlist at `playlist` (a path on `server`, as
    /// `publicKey.streams[].playlist` gives it).
    ///
    /// # Errors
    /// When the playlist cannot be fetched or parsed, or does not key every
    /// segment for `stream_id`.
    pub async fn open(server: &str, stream_id: &str, playlist: &str) -> Result<Self, PlayerError> {
        Self::open_with(Tls::system(), server, stream_id, playlist).await
    }

    /// [`open`](Self::open), trusting what `tls` trusts for https.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub async fn open_with(tls: &Tls, server: &str, stream_id: &str, playlist: &str) -> Result<Self, PlayerError> {
        let http = tls
            .http_client_builder()
            .build()
            .map_err(|e| PlayerError::Fetch { url: server.to_owned(), reason: root_cause(&e) })?;
        let url = url::Url::parse(server)
            .and_then(|base| base.join(playlist))
            .map_err(|e| PlayerError::Playlist { url: playlist.to_owned(), reason: e.to_string() })?;
        let text = fetch(&http, &url).await?;
        let bad = |reason: String| PlayerError::Playlist { url: url.to_string(), reason };
        let segments = parse_playlist(&text).map_err(|e| bad(e.to_string()))?;
        for (index, segment) in (0u64..).zip(&segments) {
            if parse_key_uri(&segment.key_uri) != Some((stream_id, index)) {
                return Err(bad(format!("segment {index} is keyed by {:?}", segment.key_uri)));
            }
        }
        Ok(MediaFetcher { http, base: url, stream_id: stream_id.to_owned(), segments, ciphertext: BTreeMap::new() })
    }

    pub fn segment_count(&self) -> u64 {
        self.segments.len() as u64
    }

    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Downloads the ciphertext of `count` segments from `first` (those not
    /// fetched yet), so a window is paid for only once its segments are here.
    ///
    /// # Errors
    /// When a segment is not in the playlist or cannot be fetched.
    pub async fn prefetch(&mut self, first: u64, count: u64) -> Result<(), PlayerError> {
        for index in first..first.saturating_add(count) {
            if self.ciphertext.contains_key(&index) {
                continue;
            }
            let segment = self.segments.get(index as usize).ok_or(PlayerError::NoSuchSegment(index))?;
            let url = self
                .base
                .join(&segment.uri)
                .map_err(|e| PlayerError::Fetch { url: segment.uri.clone(), reason: e.to_string() })?;
            let bytes = fetch(&self.http, &url).await?;
            self.ciphertext.insert(index, bytes);
        }
        Ok(())
    }

    /// Decrypts one segment with the key a `secret` carried, fetching its
    /// ciphertext first if needed, and forgets the ciphertext.
    ///
    /// # Errors
    /// When the segment cannot be fetched, the IV disagrees with the
    /// playlist's, or decryption fails.
    pub async fn decrypt(&mut self, key: &WireKey) -> Result<Vec<u8>, PlayerError> {
        let index = key.segment;
        let listed = self.segments.get(index as usize).ok_or(PlayerError::NoSuchSegment(index))?;
        if listed.iv != key.iv.0 {
            return Err(PlayerError::Decrypt { segment: index, reason: "the IV differs from the playlist's".into() });
        }
        self.prefetch(index, 1).await?;
        let ciphertext = self.ciphertext.remove(&index).ok_or(PlayerError::NoSuchSegment(index))?;
        decrypt_segment(&SegmentKey { key: key.key.0, iv: key.iv.0 }, &ciphertext)
            .map_err(|e| PlayerError::Decrypt { segment: index, reason: e.to_string() })
    }
}

async fn fetch(http: &reqwest::Client, url: &url::Url) -> Result<Vec<u8>, PlayerError> {
    let failed = |reason: String| PlayerError::Fetch { url: url.to_string(), reason };
    let response = http.get(url.clone()).send().await.map_err(|e| failed(root_cause(&e)))?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status())));
    }
    Ok(response.bytes().await.map_err(|e| failed(root_cause(&e)))?.to_vec())
}
