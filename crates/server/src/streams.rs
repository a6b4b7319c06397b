//! The streams the server sells and the keys of their segments.

use std::collections::BTreeMap;
use tollstream_media::{KeyStore, MasterSecret};
use tollstream_protocol::{B128, SegmentKey, StreamInfo};

/// One stream: its segments and its master secret.
#[derive(Debug, Clone)]
pub struct Stream {
    pub id: String,
    pub title: String,
    /// How many segments exist; payments stop after the last.
    pub segment_count: u64,
    /// Segments one payment window covers.
    pub segments_per_window: u64,
    master: MasterSecret,
}

impl Stream {
    /// The keys of `count` segments from `first`, clipped to the stream's end.
    pub fn keys(&self, first: u64, count: u64) -> Vec<SegmentKey> {
        let end = first.saturating_add(count).min(self.segment_count);
        (first..end)
            .map(|segment| {
                let derived = self.master.segment_key(&self.id, segment);
                SegmentKey { segment, key: B128::from(derived.key), iv: B128::from(derived.iv) }
            })
            .collect()
    }

    pub fn info(&self) -> StreamInfo {
        StreamInfo {
            id: self.id.clone(),
            title: self.title.clone(),
            playlist: format!("/streams/{}/index.m3u8", self.id),
        }
    }
}

/// Every stream, by id.
#[derive(Debug, Clone, Default)]
pub struct StreamCatalog {
    streams: BTreeMap<String, Stream>,
}

impl StreamCatalog {
    /// Streams of whole-window segments, as configured by `--stream ID=N`,
    /// with master secrets from `keys`.
    ///
    /// # Errors
    /// When a master secret cannot be read or created.
    pub fn from_config(streams: &[(String, u64)], keys: &KeyStore) -> Result<Self, tollstream_media::KeyStoreError> {
        let mut catalog = StreamCatalog::default();
        for (id, segment_count) in streams {
            let master = keys.master_secret(id)?;
            catalog.streams.insert(
                id.clone(),
                Stream {
                    id: id.clone(),
                    title: id.clone(),
                    segment_count: *segment_count,
                    segments_per_window: 1,
                    master,
                },
            );
        }
        Ok(catalog)
    }

    pub fn get(&self, id: &str) -> Option<&Stream> {
        self.streams.get(id)
    }

    pub fn infos(&self) -> Vec<StreamInfo> {
        self.streams.values().map(Stream::info).collect()
    }
}
