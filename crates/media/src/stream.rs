//! Loading packaged streams back from disk, as the server does at start-up.

use crate::error::{MediaError, io_at};
use crate::key_store::is_valid_stream_id;
use crate::package::{PackagedStream, STREAM_FILE, SegmentInfo, StreamFile};
use crate::playlist::{self, PLAYLIST_FILE};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Reads the stream packaged in `dir` (its `stream.json` and `index.m3u8`)
/// and checks that they agree and that every segment file is there.
///
/// # Errors
/// [`MediaError::Io`] when a file is unreadable or a segment is missing,
/// [`MediaError::BadStream`] when `stream.json` is malformed or disagrees
/// with the playlist, and [`MediaError::BadPlaylist`].
pub fn load_stream(dir: &Path) -> Result<PackagedStream, MediaError> {
    let json_path = dir.join(STREAM_FILE);
    let bad = |reason: String| MediaError::BadStream { path: json_path.clone(), reason };
    let json = fs::read(&json_path).map_err(io_at(&json_path))?;
    let file: StreamFile = serde_json::from_slice(&json).map_err(|error| bad(error.to_string()))?;
    if !is_valid_stream_id(&file.id) {
        return Err(bad(format!("stream id {:?} is not a valid stream id", file.id)));
    }
    if !(file.segment_seconds.is_finite() && file.segment_seconds > 0.0) {
        return Err(bad(format!("segment_seconds is {}", file.segment_seconds)));
    }

    let playlist_path = dir.join(PLAYLIST_FILE);
    let text = fs::read(&playlist_path).map_err(io_at(&playlist_path))?;
    let listed = playlist::parse_playlist(&text)
        .map_err(|error| MediaError::BadPlaylist(format!("{}: {error}", playlist_path.display())))?;
    if listed.len() as u64 != file.segment_count {
        return Err(bad(format!("says {} segments, the playlist has {}", file.segment_count, listed.len())));
    }
    let mut segments = Vec::with_capacity(listed.len());
    for (index, segment) in (0u64..).zip(listed) {
        // The server sells key `index` for the file at position `index`;
        // a playlist naming anything else would sell the wrong keys.
        let file_name = playlist::segment_file_name(index);
        let key_uri = playlist::key_uri(&file.id, index);
        if segment.uri != file_name || segment.key_uri != key_uri {
            return Err(bad(format!(
                "playlist entry {index} is {} with key {}, expected {file_name} with key {key_uri}",
                segment.uri, segment.key_uri
            )));
        }
        let path = dir.join(&file_name);
        let meta = fs::metadata(&path).map_err(io_at(&path))?;
        if !meta.is_file() {
            return Err(bad(format!("{} is not a file", path.display())));
        }
        segments.push(SegmentInfo { index, file_name, duration: segment.duration, iv: segment.iv });
    }
    Ok(PackagedStream {
        id: file.id,
        title: file.title,
        segment_seconds: file.segment_seconds,
        segments,
        dir: dir.to_path_buf(),
    })
}

/// Loads every stream in the subfolders of `media_dir` that hold a
/// `stream.json`, sorted by id. Other entries are skipped, so the media
/// folder may also hold sources or work files.
///
/// # Errors
/// [`MediaError::Io`] when `media_dir` is unreadable, any error of
/// [`load_stream`] for a folder that has a `stream.json`, and
/// [`MediaError::DuplicateStream`] when two folders claim the same id.
pub fn load_streams(media_dir: &Path) -> Result<Vec<PackagedStream>, MediaError> {
    let mut folders: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(media_dir).map_err(io_at(media_dir))? {
        let path = entry.map_err(io_at(media_dir))?.path();
        if path.is_dir() && path.join(STREAM_FILE).is_file() {
            folders.push(path);
        }
    }
    // Sorted so that which of two duplicates is "first" does not depend on
    // the directory's order.
    folders.sort();
    let mut streams: BTreeMap<String, PackagedStream> = BTreeMap::new();
    for folder in folders {
        let stream = load_stream(&folder)?;
        if let Some(other) = streams.get(&stream.id) {
            return Err(MediaError::DuplicateStream { id: stream.id, first: other.dir.clone(), second: folder });
        }
        streams.insert(stream.id.clone(), stream);
    }
    Ok(streams.into_values().collect())
}
