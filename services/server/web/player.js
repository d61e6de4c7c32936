// Reply playback: audio pieces scheduled on the AudioContext's timeline, frames drawn against
// that same clock, captions revealed when their sentence starts playing.
//
// Every reply (a turn, or the greeting) has its own timeline: the server stamps each audio piece
// and frame with seconds from the reply's start (`services/server/media.py`). The first media of
// a reply anchors it: `turn.t0` is the context time of timeline 0, so a piece plays at
// `t0 + t_s` and a frame is shown when the audio clock reaches `t0 + pts_s`. Frames that are
// already past when their turn comes are dropped, never shown late: lip sync cannot drift.

export const KIND_AUDIO = 1;
export const KIND_JPEG = 2;
export const KIND_H264 = 3; // an Annex-B access unit; flags bit 0: a keyframe
const HEADER_BYTES = 16;
const START_LEAD_S = 0.12; // buffer before a reply's first sample: absorbs network jitter
const REBUFFER_S = 0.1; // when a piece arrives after its time: wait this much more, once

/** A binary media message: 16-byte little-endian header `<BBHId`, then the payload. */
export function unpack(buf) {
  const v = new DataView(buf);
  return {
    kind: v.getUint8(0),
    flags: v.getUint8(1),
    index: v.getUint16(2, true),
    seq: v.getUint32(4, true),
    t: v.getFloat64(8, true),
  };
}

/** Whether this browser decodes the server's H.264 (WebCodecs; secure contexts only). */
export async function h264Supported() {
  if (!window.VideoDecoder) return false;
  const probe = { codec: "avc1.42c01e", codedWidth: 384, codedHeight: 384 };
  return VideoDecoder.isConfigSupported(probe).then((r) => r.supported, () => false);
}

/** One reply of the avatar: its timeline anchor, sentences and latency marks. */
export class Turn {
  constructor(id, stoppedAt) {
    this.id = id;
    this.stoppedAt = stoppedAt; // performance.now() of the user's speech_stopped, if any
    this.t0 = null;
    this.rates = new Map(); // sentence index -> sample rate (from its `audio` event)
    this.sentences = new Map(); // index -> {text, start_s, shown}
    this.audioEnd = 0;
    this.firstAudioAt = null;
    this.firstFrameAt = null;
    this.done = false;
    this.cut = false;
    this.el = null; // its caption element (ui.js)
  }

  sentence(index) {
    let s = this.sentences.get(index);
    if (!s) this.sentences.set(index, (s = { text: null, start_s: null, shown: false }));
    return s;
  }
}

export class Player {
  constructor(ctx, canvas, stats, hooks) {
    this.ctx = ctx;
    this.canvas = canvas;
    this.g = canvas.getContext("2d");
    this.stats = stats;
    this.hooks = hooks; // onSentence(turn, index, text), onFirstAudio(turn), onFirstFrame(turn)
    this.out = ctx.createGain();
    this.out.connect(ctx.destination);
    this.sources = new Set();
    this.frames = []; // {turn, pts, bmp}, by pts
    this.turns = new Set(); // turns with captions still to reveal
    this.lastEnd = 0; // context time when all scheduled audio has played
    this.frameS = 1 / 25;
    this.decoder = null; // H.264: a WebCodecs VideoDecoder, configured by the `video` event
    this.videoConfig = null;
    this.decoding = new Map(); // chunk timestamp -> {turn, pts}
    this.chunkSeq = 0;
    this.needKey = true;
    const loop = () => {
      this.tick();
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
    // rAF stops in a hidden tab; captions and frame bookkeeping should not.
    setInterval(() => document.hidden && this.tick(), 100);
  }

  /** The audio clock: the context time being heard now. */
  now() {
    const ctx = this.ctx;
    const ts = ctx.getOutputTimestamp ? ctx.getOutputTimestamp() : null;
    if (ts && ts.contextTime > 0 && ts.performanceTime > 0) {
      const t = ts.contextTime + (performance.now() - ts.performanceTime) / 1000;
      return Math.min(t, ctx.currentTime);
    }
    return Math.max(0, ctx.currentTime - (ctx.outputLatency || 0));
  }

  speaking() {
    return this.sources.size > 0 || this.lastEnd > this.ctx.currentTime;
  }

  /** Seconds of `turn` played so far (what `interrupt` reports as played_s). */
  position(turn) {
    if (!turn || turn.t0 === null) return 0;
    return Math.max(0, Math.min(this.now(), turn.audioEnd || Infinity) - turn.t0);
  }

  track(turn) {
    this.turns.add(turn);
  }

  anchor(turn, t) {
    if (turn.t0 === null) {
      turn.t0 = Math.max(this.ctx.currentTime + START_LEAD_S, this.lastEnd) - t;
    }
  }

  audio(turn, index, t, buf) {
    const pcm = new Int16Array(buf, HEADER_BYTES, (buf.byteLength - HEADER_BYTES) >> 1);
    if (!pcm.length || turn.cut) return;
    const rate = turn.rates.get(index) || 22050;
    const ab = this.ctx.createBuffer(1, pcm.length, rate);
    const ch = ab.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
    this.anchor(turn, t);
    let when = turn.t0 + t;
    const late = this.ctx.currentTime + 0.01 - when;
    if (late > 0) {
      // The reply is produced slower than it plays: pause the timeline (frames and captions
      // follow it) instead of skipping speech.
      turn.t0 += late + REBUFFER_S;
      when += late + REBUFFER_S;
      this.stats.audioStalls++;
    }
    const src = this.ctx.createBufferSource();
    src.buffer = ab;
    src.connect(this.out);
    src.onended = () => this.sources.delete(src);
    src.start(when);
    this.sources.add(src);
    turn.audioEnd = Math.max(turn.audioEnd, when + ab.duration);
    this.lastEnd = Math.max(this.lastEnd, turn.audioEnd);
    this.stats.audioScheduled++;
    this.stats.audioSeconds += ab.duration;
    if (turn.firstAudioAt === null) {
      const ahead = when - this.ctx.currentTime + (this.ctx.outputLatency || 0);
      turn.firstAudioAt = performance.now() + ahead * 1000;
      this.hooks.onFirstAudio(turn);
    }
  }

  frame(turn, t, buf) {
    this.stats.framesReceived++;
    if (turn.cut) return;
    this.anchor(turn, t);
    const blob = new Blob([new Uint8Array(buf, HEADER_BYTES)], { type: "image/jpeg" });
    createImageBitmap(blob).then(
      (bmp) => this.queue(turn, t, bmp),
      () => this.stats.framesBad++,
    );
  }

  /** The `video` event: the codec and size of the H.264 frames that follow. */
  configureVideo(ev) {
    const config = {
      codec: ev.codec, codedWidth: ev.width, codedHeight: ev.height, optimizeForLatency: true,
    };
    if (this.decoder && JSON.stringify(config) === JSON.stringify(this.videoConfig)) return;
    if (!this.decoder) {
      this.decoder = new VideoDecoder({
        output: (vf) => this.decoded(vf),
        error: () => {
          this.stats.framesBad++;
          this.decoder = null; // rebuilt by the next `video` event
        },
      });
    }
    this.videoConfig = config;
    this.decoder.configure(config);
    this.needKey = true;
  }

  h264(turn, t, flags, buf) {
    this.stats.framesReceived++;
    const key = (flags & 1) === 1;
    if (turn.cut || !this.decoder || this.decoder.state !== "configured" || (this.needKey && !key)) {
      this.stats.framesDropped++; // a decoder starts at a keyframe: each sentence begins with one
      return;
    }
    this.needKey = false;
    this.anchor(turn, t);
    const timestamp = ++this.chunkSeq; // unique across replies, whose pts all start at 0
    this.decoding.set(timestamp, { turn, pts: t });
    const data = new Uint8Array(buf, HEADER_BYTES);
    this.decoder.decode(new EncodedVideoChunk({ type: key ? "key" : "delta", timestamp, data }));
  }

  decoded(vf) {
    const meta = this.decoding.get(vf.timestamp);
    this.decoding.delete(vf.timestamp);
    this.queue(meta && meta.turn, meta && meta.pts, vf);
  }

  /** A decoded frame (ImageBitmap or VideoFrame) waits for its moment, unless it has passed. */
  queue(turn, t, bmp) {
    if (!turn || turn.cut || turn.t0 + t < this.now() - this.frameS) {
      bmp.close(); // decoded after its moment: drop it
      this.stats.framesDropped++;
      return;
    }
    const item = { turn, pts: t, bmp };
    let i = this.frames.length;
    while (i > 0 && this.due(this.frames[i - 1]) > this.due(item)) i--;
    this.frames.splice(i, 0, item);
  }

  due(item) {
    return item.turn.t0 + item.pts;
  }

  tick() {
    const now = this.now();
    let show = null;
    while (this.frames.length && this.due(this.frames[0]) <= now) {
      const next = this.frames.shift();
      if (show) {
        show.bmp.close(); // a newer frame is due too: this one's moment has passed
        this.stats.framesDropped++;
      }
      show = next;
    }
    if (show) this.draw(show);
    for (const turn of this.turns) {
      let pending = false;
      for (const [index, s] of turn.sentences) {
        if (s.shown) continue;
        if (s.text !== null && s.start_s !== null && turn.t0 !== null && turn.t0 + s.start_s <= now) {
          s.shown = true;
          this.hooks.onSentence(turn, index, s.text);
        } else pending = true;
      }
      if (!pending && turn.done) this.turns.delete(turn);
    }
  }

  draw({ turn, bmp }) {
    const width = bmp.displayWidth || bmp.width; // a VideoFrame, or an ImageBitmap
    const height = bmp.displayHeight || bmp.height;
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    this.g.drawImage(bmp, 0, 0);
    bmp.close();
    this.stats.framesDrawn++;
    if (turn.firstFrameAt === null) {
      turn.firstFrameAt = performance.now();
      this.hooks.onFirstFrame(turn);
    }
  }

  /** Silence now: stop every scheduled piece, drop queued frames and unrevealed captions. */
  flush(turn) {
    const played = this.position(turn);
    for (const src of this.sources) {
      try {
        src.stop();
      } catch {
        // never started: nothing to stop
      }
    }
    this.sources.clear();
    for (const f of this.frames) f.bmp.close();
    this.frames = [];
    this.turns.clear();
    if (this.decoder && this.decoder.state !== "closed" && this.videoConfig) {
      // Drop what is being decoded; the next sentence starts with a keyframe.
      this.decoder.reset();
      this.decoder.configure(this.videoConfig);
      this.decoding.clear();
      this.needKey = true;
    }
    this.lastEnd = this.ctx.currentTime;
    if (turn) turn.cut = true;
    return played;
  }
}
