//! The HLS media playlist parser of `tollstream-media`
//! (`playlist::parse_playlist`), fed any bytes.
//!
//! Checks that parsing never panics; that every segment it accepts has a
//! finite, non-negative duration; that what it accepts, written back with
//! `write_playlist`, parses to the same segments (durations to the
//! microsecond and `f32` precision, as `m3u8-rs` keeps them); and that
//! rewriting segment URIs for a CDN keeps every key line and segment count.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollstream_media::playlist::{parse_key_uri, parse_playlist, rewrite_segment_uris, write_playlist};

fuzz_target!(|data: &[u8]| {
    let Ok(segments) = parse_playlist(data) else { return };
    for segment in &segments {
        assert!(segment.duration.is_finite() && segment.duration >= 0.0, "{segment:?}");
        let _ = parse_key_uri(&segment.key_uri);
    }

    let written = write_playlist(&segments);
    let again = match parse_playlist(written.as_bytes()) {
        Ok(again) => again,
        Err(error) => panic!("{segments:?} writes\n{written}\nwhich does not parse: {error}"),
    };
    assert_eq!(again.len(), segments.len(), "{written}");
    for (before, after) in segments.iter().zip(&again) {
        assert_eq!((&before.uri, &before.key_uri, before.iv), (&after.uri, &after.key_uri, after.iv), "{written}");
        // Written with six decimals, read back as f32.
        let tolerance = 1e-6 + before.duration * f64::from(f32::EPSILON);
        assert!((before.duration - after.duration).abs() <= tolerance, "{before:?} became {after:?}");
    }

    let rewritten = rewrite_segment_uris(&written, "https://cdn.example/media/", "demo");
    let moved = match parse_playlist(rewritten.as_bytes()) {
        Ok(moved) => moved,
        Err(error) => panic!("{written}\nrewritten as\n{rewritten}\ndoes not parse: {error}"),
    };
    assert_eq!(moved.len(), again.len(), "{rewritten}");
    for (before, after) in again.iter().zip(&moved) {
        assert_eq!((&before.key_uri, before.iv), (&after.key_uri, after.iv), "{rewritten}");
    }
});
