// The microphone: getUserMedia (echo cancellation and noise suppression on) -> AudioWorklet ->
// 20 ms frames of 16 kHz PCM16, handed to `onFrame(ArrayBuffer, level)`.

export const MIC_RATE = 16000;
export const FRAME_MS = 20;

export class Mic {
  constructor(ctx, onFrame) {
    this.ctx = ctx;
    this.onFrame = onFrame;
    this.stream = null;
    this.node = null;
    this.source = null;
  }

  async open() {
    if (this.node) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("this browser gives no microphone access here (it needs https or localhost)");
    }
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    await this.ctx.audioWorklet.addModule(new URL("mic-worklet.js", import.meta.url));
    this.source = this.ctx.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.ctx, "pcm-framer", {
      numberOfInputs: 1,
      numberOfOutputs: 1, // silent; connected so the graph always pulls (processes) it
      channelCountMode: "explicit",
      channelCount: 1,
      processorOptions: { targetRate: MIC_RATE, frameMs: FRAME_MS },
    });
    this.node.port.onmessage = (e) => this.onFrame(e.data.pcm, e.data.level);
    this.source.connect(this.node);
    this.node.connect(this.ctx.destination);
  }

  close() {
    if (this.source) this.source.disconnect();
    if (this.node) {
      this.node.port.onmessage = null;
      this.node.disconnect();
    }
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.stream = this.node = this.source = null;
  }
}

/**
 * When each microphone frame was sent: the server stamps speech with seconds on the stream it
 * received (0 = the first frame after `listen`), and this maps them back to this page's clock.
 */
export class SentClock {
  constructor(size = 4096) {
    this.times = new Float64Array(size); // the last 80 s of 20 ms frames
    this.count = 0;
  }

  reset() {
    this.count = 0;
  }

  add() {
    this.times[this.count % this.times.length] = performance.now();
    this.count += 1;
  }

  /** performance.now() when the frame holding stream second `t_s` was sent, or null. */
  at(t_s) {
    const k = Math.floor((t_s * 1000) / FRAME_MS);
    const kept = k >= 0 && k < this.count && this.count - k <= this.times.length;
    return kept ? this.times[k % this.times.length] : null;
  }
}
