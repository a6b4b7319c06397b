//! The HLS media playlist we serve, written by hand (it is a dozen fixed
//! lines) and parsed with `m3u8-rs`.
//!
//! Every segment carries its own `#EXT-X-KEY` line so a player fetches, and
//! the server sells, one key per segment:
//!
//! ```text
//! #EXTM3U
//! #EXT-X-VERSION:3
//! #EXT-X-TARGETDURATION:2
//! #EXT-X-MEDIA-SEQUENCE:0
//! #EXT-X-PLAYLIST-TYPE:VOD
//! #EXT-X-KEY:METHOD=AES-128,URI="tollstream://demo/0",IV=0x0123456789abcdef0123456789abcdef
//! #EXTINF:2.000000,
//! seg00000.ts
//! …
//! #EXT-X-ENDLIST
//! ```

use crate::error::MediaError;
use m3u8_rs::{KeyMethod, MediaPlaylist};
use std::fmt::Write as _;

/// The scheme of key URIs. Not fetchable on purpose: a player must map it
/// to the key it received in a paid `secret` message.
pub const KEY_URI_SCHEME: &str = "tollstream://";

/// File name of the playlist inside a stream folder.
pub const PLAYLIST_FILE: &str = "index.m3u8";

/// One segment as the playlist describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaylistSegment {
    /// The segment's file, relative to the playlist (`seg00000.ts`).
    pub uri: String,
    /// Its length in seconds, from `#EXTINF`.
    pub duration: f64,
    /// Where a player asks for its key: `tollstream://<stream_id>/<segment>`.
    pub key_uri: String,
    /// The CBC IV from `#EXT-X-KEY`; the `secret` message repeats it.
    pub iv: [u8; 16],
}

/// The file name of segment `index`: `seg` and five or more digits.
pub fn segment_file_name(index: u64) -> String {
    format!("seg{index:05}.ts")
}

/// The key URI of `segment` of `stream_id`.
pub fn key_uri(stream_id: &str, segment: u64) -> String {
    format!("{KEY_URI_SCHEME}{stream_id}/{segment}")
}

/// Splits a key URI into its stream id and segment, or `None` when it is
/// not one this crate writes.
pub fn parse_key_uri(uri: &str) -> Option<(&str, u64)> {
    let (stream_id, segment) = uri.strip_prefix(KEY_URI_SCHEME)?.split_once('/')?;
    // Digits only: `u64::from_str` would also take a leading '+'.
    if stream_id.is_empty() || segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stream_id, segment.parse().ok()?))
}

/// Formats an IV or key the way both HLS and the wire protocol spell it:
/// `0x` and 32 lowercase hex digits.
pub fn hex16(bytes: &[u8; 16]) -> String {
    let mut out = String::with_capacity(34);
    out.push_str("0x");
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Parses `0x` and 32 hex digits (either case), the inverse of [`hex16`].
pub fn parse_hex16(text: &str) -> Option<[u8; 16]> {
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"))?;
    // from_str_radix alone would also take a sign.
    if digits.len() != 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Writes the VOD media playlist of `segments`, in order; segment `i` of
/// the slice is media sequence number `i`.
pub fn write_playlist(segments: &[PlaylistSegment]) -> String {
    let longest = segments.iter().map(|s| s.duration).fold(0.0_f64, f64::max);
    // HLS wants the target at least every EXTINF rounded; the small slack
    // keeps a 2.0000001 from float noise from becoming a target of 3.
    let target = ((longest - 1e-3).ceil() as u64).max(1);
    let mut out = String::new();
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n"
    );
    for segment in segments {
        let _ = write!(
            out,
            "#EXT-X-KEY:METHOD=AES-128,URI=\"{}\",IV={}\n#EXTINF:{:.6},\n{}\n",
            segment.key_uri,
            hex16(&segment.iv),
            segment.duration,
            segment.uri
        );
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

/// Points every segment of a playlist at `base_url/<stream_id>/<segment>`,
/// for segments served from a CDN or object store holding a copy of the
/// media folder. `#` lines, `#EXT-X-KEY` among them, are kept as they are:
/// keys never leave the server's socket. A segment URI that is already
/// absolute (has a scheme) is kept too. `base_url` may end in `/`.
pub fn rewrite_segment_uris(playlist: &str, base_url: &str, stream_id: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let mut out = String::with_capacity(playlist.len() + 64);
    for line in playlist.lines() {
        let uri = line.trim();
        if uri.is_empty() || uri.starts_with('#') || uri.contains("://") {
            out.push_str(line);
        } else {
            let _ = write!(out, "{base}/{stream_id}/{}", uri.trim_start_matches("./"));
        }
        out.push('\n');
    }
    out
}

/// Parses a playlist written by [`write_playlist`] (or any media playlist
/// that gives every segment its own AES-128 key with an explicit IV).
///
/// # Errors
/// [`MediaError::BadPlaylist`] when the text is not a media playlist, does
/// not start at media sequence 0, or has a segment without its own
/// `METHOD=AES-128` key, URI and IV.
pub fn parse_playlist(text: &[u8]) -> Result<Vec<PlaylistSegment>, MediaError> {
    let playlist = parse_media(text)?;
    playlist
        .segments
        .into_iter()
        .enumerate()
        .map(|(i, segment)| {
            let bad = |what: &str| MediaError::BadPlaylist(format!("segment {i} ({}): {what}", segment.uri));
            let key = segment.key.as_ref().ok_or_else(|| bad("no #EXT-X-KEY line of its own"))?;
            if key.method != KeyMethod::AES128 {
                return Err(bad(&format!("key method is {}, not AES-128", key.method)));
            }
            let key_uri = key.uri.clone().ok_or_else(|| bad("key has no URI"))?;
            // m3u8-rs lets a quoted string run over lines; HLS does not (RFC 8216
            // §4.2), and line-based tools such as `rewrite_segment_uris` would
            // then edit the inside of the URI.
            if key_uri.contains(['\r', '\n']) {
                return Err(bad("key URI spans lines"));
            }
            let iv =
                key.iv.as_deref().and_then(parse_hex16).ok_or_else(|| bad("key has no IV of 0x and 32 hex digits"))?;
            Ok(PlaylistSegment { duration: duration(segment.duration), uri: segment.uri, key_uri, iv })
        })
        .collect()
}

/// The segments (URI, duration) of an unencrypted playlist, as ffmpeg's HLS
/// muxer writes it.
pub(crate) fn parse_plain_playlist(text: &[u8]) -> Result<Vec<(String, f64)>, MediaError> {
    Ok(parse_media(text)?.segments.into_iter().map(|s| (s.uri, duration(s.duration))).collect())
}

fn parse_media(text: &[u8]) -> Result<MediaPlaylist, MediaError> {
    let playlist = m3u8_rs::parse_media_playlist_res(text)
        .map_err(|error| MediaError::BadPlaylist(format!("not an HLS media playlist ({error:?})")))?;
    if playlist.media_sequence != 0 {
        // Segment numbers in key URIs and `secret` messages count from 0.
        return Err(MediaError::BadPlaylist(format!("media sequence starts at {}, not 0", playlist.media_sequence)));
    }
    if let Some(segment) = playlist.segments.iter().find(|s| !s.duration.is_finite() || s.duration < 0.0) {
        return Err(MediaError::BadPlaylist(format!("segment {} has duration {}", segment.uri, segment.duration)));
    }
    // m3u8-rs takes a last line that is neither a tag it knows nor ends in a
    // newline for a segment URI, even when it starts with `#`; and it drops a
    // `,` that starts the line after `#EXTINF`, so a URI still starting with
    // one would lose it the next time the playlist is read.
    if let Some(segment) = playlist.segments.iter().find(|s| s.uri.is_empty() || s.uri.starts_with(['#', ','])) {
        return Err(MediaError::BadPlaylist(format!("segment URI {:?} is not a URI line", segment.uri)));
    }
    Ok(playlist)
}

/// m3u8-rs keeps durations as `f32`; rounding to the microsecond gives back
/// the 6-decimal value ffmpeg and [`write_playlist`] wrote, for segment
/// lengths up to a few minutes.
fn duration(seconds: f32) -> f64 {
    (f64::from(seconds) * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments() -> Vec<PlaylistSegment> {
        [2.0, 2.0, 2.04, 0.96]
            .into_iter()
            .enumerate()
            .map(|(i, duration)| PlaylistSegment {
                uri: segment_file_name(i as u64),
                duration,
                key_uri: key_uri("demo", i as u64),
                iv: [i as u8 * 17; 16],
            })
            .collect()
    }

    #[test]
    fn written_playlists_parse_back_to_the_same_segments() {
        let text = write_playlist(&segments());
        assert_eq!(parse_playlist(text.as_bytes()).unwrap(), segments());
    }

    #[test]
    fn the_written_playlist_has_the_promised_lines() {
        let text = write_playlist(&segments());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..8],
            [
                "#EXTM3U",
                "#EXT-X-VERSION:3",
                "#EXT-X-TARGETDURATION:3",
                "#EXT-X-MEDIA-SEQUENCE:0",
                "#EXT-X-PLAYLIST-TYPE:VOD",
                "#EXT-X-KEY:METHOD=AES-128,URI=\"tollstream://demo/0\",IV=0x00000000000000000000000000000000",
                "#EXTINF:2.000000,",
                "seg00000.ts",
            ]
        );
        assert_eq!(lines.last(), Some(&"#EXT-X-ENDLIST"));
        assert_eq!(text.matches("#EXT-X-KEY:").count(), 4);
        assert!(text.contains(
            "URI=\"tollstream://demo/3\",IV=0x33333333333333333333333333333333\n#EXTINF:0.960000,\nseg00003.ts\n"
        ));
    }

    #[test]
    fn the_target_duration_is_the_ceiling_of_the_longest_segment() {
        let mut list = segments();
        list.truncate(2);
        assert!(write_playlist(&list).contains("#EXT-X-TARGETDURATION:2\n"));
        list[1].duration = 2.5;
        assert!(write_playlist(&list).contains("#EXT-X-TARGETDURATION:3\n"));
    }

    #[test]
    fn segments_without_their_own_key_are_refused() {
        let text = write_playlist(&segments());
        let second_key = text.match_indices("#EXT-X-KEY:").nth(1).unwrap().0;
        let line_end = second_key + text[second_key..].find('\n').unwrap() + 1;
        let stripped = format!("{}{}", &text[..second_key], &text[line_end..]);
        assert!(matches!(parse_playlist(stripped.as_bytes()), Err(MediaError::BadPlaylist(_))));

        let shifted = text.replace("#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-MEDIA-SEQUENCE:5");
        assert!(matches!(parse_playlist(shifted.as_bytes()), Err(MediaError::BadPlaylist(_))));
        assert!(parse_playlist(b"not a playlist").is_err());
    }

    /// Found by the `playlist` fuzz target: a trailing `#EXT-X#E` without a
    /// newline came back from m3u8-rs as a segment URI, so the playlist
    /// written from the parsed segments had none.
    #[test]
    fn a_tag_line_is_never_a_segment() {
        let text = "#EXTM3U\n#EXT-X-VERSION:3\n#EXGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
            #EXT-X-PLAYLIST-TYPE:VOD\n\
            #EXT-X-KEY:METHOD=AES-128,URI=\"tollstream://demo/0\",IV=0x000102030405060708090a0b0c0d0e0f\n\
            #31T5\n#EXT-X#E";
        assert!(matches!(parse_playlist(text.as_bytes()), Err(MediaError::BadPlaylist(_))));
        assert!(matches!(parse_plain_playlist(text.as_bytes()), Err(MediaError::BadPlaylist(_))));
    }

    /// Found by the `playlist` fuzz target: m3u8-rs drops the first `,` of the
    /// line after `#EXTINF`, so `,,x` came back as `,x`, and written and read
    /// again as `x`.
    #[test]
    fn a_segment_uri_starting_with_a_comma_is_refused() {
        let text = write_playlist(&segments()).replacen("seg00001.ts", ",,seg00001.ts", 1);
        match parse_playlist(text.as_bytes()) {
            Err(MediaError::BadPlaylist(why)) => assert!(why.contains("not a URI line"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// Found by the `playlist` fuzz target: m3u8-rs read a key URI whose
    /// closing quote was lines later, so rewriting segment URIs edited it.
    #[test]
    fn a_key_uri_over_several_lines_is_refused() {
        let text = write_playlist(&segments()).replacen("tollstream://demo/1\"", "tollstream://demo/1\n", 1);
        assert!(text.contains("URI=\"tollstream://demo/1\n"));
        match parse_playlist(text.as_bytes()) {
            Err(MediaError::BadPlaylist(why)) => assert!(why.contains("key URI spans lines"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn segment_uris_point_at_the_base_and_key_lines_stay() {
        let text = write_playlist(&segments());
        for base in ["https://cdn.example/media", "https://cdn.example/media/"] {
            let rewritten = rewrite_segment_uris(&text, base, "demo");
            let parsed = parse_playlist(rewritten.as_bytes()).unwrap();
            assert_eq!(parsed.len(), 4);
            for (i, (new, old)) in parsed.iter().zip(segments()).enumerate() {
                assert_eq!(new.uri, format!("https://cdn.example/media/demo/seg{i:05}.ts"));
                assert_eq!((&new.key_uri, new.iv, new.duration), (&old.key_uri, old.iv, old.duration));
            }
            // Only the segment lines changed; every other line is as written.
            let kept = |t: &str| t.lines().filter(|l| l.starts_with('#')).map(str::to_owned).collect::<Vec<_>>();
            assert_eq!(kept(&rewritten), kept(&text));
            assert!(rewritten.lines().filter(|l| l.starts_with("#EXT-X-KEY")).all(|l| l.contains("tollstream://")));
            assert!(!rewritten.lines().any(|l| l.starts_with("seg")), "no relative segment line left");
        }
    }

    #[test]
    fn key_uris_and_hex_round_trip() {
        assert_eq!(parse_key_uri(&key_uri("demo-1", 42)), Some(("demo-1", 42)));
        assert_eq!(parse_key_uri("tollstream://demo/+1"), None);
        assert_eq!(parse_key_uri("https://demo/1"), None);
        assert_eq!(parse_key_uri("tollstream:///1"), None);
        let iv: [u8; 16] = std::array::from_fn(|i| (i * 31) as u8);
        assert_eq!(parse_hex16(&hex16(&iv)), Some(iv));
        assert_eq!(parse_hex16(&hex16(&iv).to_uppercase().replacen("0X", "0x", 1)), Some(iv));
        assert_eq!(parse_hex16("0x00"), None);
    }
}
