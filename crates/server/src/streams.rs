//! The streams the server sells, their files and the keys of their segments.
//!
//! Packaged streams come from the media folder (`tollstream package`); a
//! keys-only stream (`--stream ID=SEGMENTS`) has no files and exists for
//! tests and load runs of the payment protocol.

use crate::error::ServerError;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tollstream_media::{KeyStore, MasterSecret, PackagedStream};
use tollstream_protocol::{B128, SegmentKey, StreamInfo};

/// One stream on sale.
#[derive(Debug, Clone)]
pub struct Stream {
    pub id: String,
    pub title: String,
    /// How many segments exist; payments stop after the last.
    pub segment_count: u64,
    /// Segments one payment window covers.
    pub segments_per_window: u64,
    /// The packaged files, served over HTTP; `None` for a keys-only stream.
    pub files: Option<StreamFiles>,
    master: MasterSecret,
}

#[cfg(test)]
impl Stream {
    /// A keys-only stream of `segments` segments, `per_window` a window,
    /// for tests of the pay loop's rules.
    pub(crate) fn keys_only(id: &str, segments: u64, per_window: u64) -> Stream {
        Stream {
            id: id.to_owned(),
            title: id.to_owned(),
            segment_count: segments,
            segments_per_window: per_window,
            files: None,
            master: MasterSecret([7; 32]),
        }
    }
}

/// Where a packaged stream's files are. Only these names are ever served,
/// so no request path is joined onto the file system.
#[derive(Debug, Clone)]
pub struct StreamFiles {
    pub playlist: PathBuf,
    /// Segment file name → path.
    pub segments: HashMap<String, PathBuf>,
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

    /// The file behind `/streams/<id>/<name>`, if `name` is one of ours.
    pub fn file(&self, name: &str) -> Option<&Path> {
        let files = self.files.as_ref()?;
        if name == tollstream_media::playlist::PLAYLIST_FILE {
            return Some(&files.playlist);
        }
        files.segments.get(name).map(PathBuf::as_path)
    }
}

/// Every stream, by id.
#[derive(Debug, Clone, Default)]
pub struct StreamCatalog {
    streams: BTreeMap<String, Stream>,
}

impl StreamCatalog {
    /// The packaged streams under `media_dir` plus the keys-only ones, with
    /// master secrets from `keys`.
    ///
    /// # Errors
    /// A stream whose segment length does not divide the window, whose
    /// files are inconsistent, or whose key file does not match it; a key
    /// store failure; two streams with one id.
    pub fn load(
        media_dir: &Path,
        keys_only: &[(String, u64)],
        keys: &KeyStore,
        window_seconds: f64,
    ) -> Result<Self, ServerError> {
        let mut catalog = StreamCatalog::default();
        let packaged = if media_dir.is_dir() {
            tollstream_media::load_streams(media_dir).map_err(|e| ServerError::Config(e.to_string()))?
        } else {
            Vec::new()
        };
        for stream in packaged {
            let master = keys.master_secret(&stream.id)?;
            // Selling keys that decrypt nothing would take money for nothing.
            stream.verify_secret(&master).map_err(|e| {
                ServerError::Config(format!(
                    "stream {:?}: {e} (is the key store, DATA_DIR/keys or --keys-dir, the one it was packaged with?)",
                    stream.id
                ))
            })?;
            let segments_per_window = segments_per_window(&stream, window_seconds)?;
            catalog.insert(Stream {
                id: stream.id.clone(),
                title: stream.title.clone(),
                segment_count: stream.segments.len() as u64,
                segments_per_window,
                files: Some(files_of(&stream)),
                master,
            })?;
        }
        for (id, segment_count) in keys_only {
            let master = keys.master_secret(id)?;
            catalog.insert(Stream {
                id: id.clone(),
                title: id.clone(),
                segment_count: *segment_count,
                segments_per_window: 1,
                files: None,
                master,
            })?;
        }
        Ok(catalog)
    }

    fn insert(&mut self, stream: Stream) -> Result<(), ServerError> {
        let id = stream.id.clone();
        if self.streams.insert(id.clone(), stream).is_some() {
            return Err(ServerError::Config(format!("two streams are named {id:?}")));
        }
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Stream> {
        self.streams.get(id)
    }

    pub fn infos(&self) -> Vec<StreamInfo> {
        self.streams.values().map(Stream::info).collect()
    }
}

fn files_of(stream: &PackagedStream) -> StreamFiles {
    StreamFiles {
        playlist: stream.playlist_path(),
        segments: stream.segments.iter().map(|s| (s.file_name.clone(), stream.dir.join(&s.file_name))).collect(),
    }
}

/// A window must buy whole segments: the segment length must be the window
/// length or a whole fraction of it.
fn segments_per_window(stream: &PackagedStream, window_seconds: f64) -> Result<u64, ServerError> {
    let ratio = window_seconds / stream.segment_seconds;
    let whole = ratio.round();
    if whole < 1.0 || (ratio - whole).abs() > 1e-6 {
        return Err(ServerError::Config(format!(
            "stream {:?} has {} s segments, which do not divide the {window_seconds} s window; \
             package it with --segment-seconds {window_seconds} (or a whole fraction of it)",
            stream.id, stream.segment_seconds
        )));
    }
    Ok(whole as u64)
}
