// The `<video>` element fed by hls.js. hls.js fetches the playlist and the
// ciphertext segments from the server and transmuxes MPEG-TS to fMP4 for
// Media Source Extensions; its key loads go to the key store (keys.js).

// The light build: no EME, subtitles or alternative audio, none of which a
// Tollstream playlist uses; AES-128 decryption is included.
import Hls from 'hls.js/light';
import { keyLoaderClass } from './keys.js';

export class Player {
  /**
   * @param {HTMLVideoElement} video
   * @param {import('./keys.js').KeyStore} keyStore
   * @param {(details: string) => void} onFatal a media error hls.js could not recover from
   */
  constructor(video, keyStore, onFatal) {
    this.video = video;
    this.keyStore = keyStore;
    this.onFatal = onFatal;
    this.hls = null;
    this.stream = null;
    video.addEventListener('seeking', () => this.onSeeking());
  }

  /**
   * hls.js does not give up a segment whose data has arrived but whose key
   * load is still held (its seek handling only cancels downloads), so a
   * seek away from a segment waiting for its key would wait forever.
   * Restarting the loading at the new position releases it.
   */
  onSeeking() {
    const { hls, stream } = this;
    if (!hls || !stream) return;
    const waiting = this.keyStore.lowestWaiting(stream.id);
    if (waiting === null || waiting === this.segmentAt(this.video.currentTime)) return;
    hls.stopLoad();
    hls.startLoad(this.video.currentTime, true);
  }

  static isSupported() {
    return Hls.isSupported();
  }

  /** Loads `stream`'s playlist, starting at `startPosition` seconds. */
  load(stream, startPosition) {
    this.unload();
    this.stream = stream;
    const hls = new Hls({
      loader: keyLoaderClass(this.keyStore, Hls.DefaultConfig.loader),
      startPosition,
      // Keys come one window at a time, as they are paid for: a long
      // forward buffer would only queue loads waiting for keys.
      maxBufferLength: 20,
      backBufferLength: 30,
    });
    let recoveredMedia = false;
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal) return;
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !recoveredMedia) {
        // One decode hiccup is worth a retry before giving up.
        recoveredMedia = true;
        hls.recoverMediaError();
        return;
      }
      console.warn('tollstream: hls.js fatal error', data.type, data.details, data.error);
      this.onFatal(data.details);
    });
    hls.loadSource(new URL(stream.playlist, location.origin).href);
    hls.attachMedia(this.video);
    this.hls = hls;
  }

  unload() {
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
    }
    this.stream = null;
  }

  /** The playlist's segments once loaded: `{segment, start, duration}`. */
  segments() {
    const fragments = this.hls?.levels?.[0]?.details?.fragments ?? [];
    // The media sequence starts at 0, so `sn` is the segment index (§6.6).
    return fragments.map((f) => ({ segment: f.sn, start: f.start, duration: f.duration }));
  }

  /** The segment playing at `time` (seconds), or null before the playlist loads. */
  segmentAt(time) {
    const segments = this.segments();
    if (segments.length === 0) return null;
    for (const s of segments) {
      if (time < s.start + s.duration) return s.segment;
    }
    return segments[segments.length - 1].segment;
  }

  /** The segment being played now. */
  currentSegment() {
    return this.segmentAt(this.video.currentTime);
  }

  /** The number of segments, or null before the playlist loads. */
  segmentCount() {
    const segments = this.segments();
    return segments.length === 0 ? null : segments.length;
  }

  /** Where `segment` starts, in seconds, or null when unknown. */
  segmentStart(segment) {
    return this.segments().find((s) => s.segment === segment)?.start ?? null;
  }

  /** Resolves once the playlist is loaded (at once if it is). */
  ready() {
    if (this.segmentCount() !== null) return Promise.resolve();
    const hls = this.hls;
    return new Promise((resolve) => {
      if (!hls) return;
      hls.once(Hls.Events.LEVEL_LOADED, () => resolve());
    });
  }
}
