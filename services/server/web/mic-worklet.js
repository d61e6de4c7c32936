// AudioWorklet processor: microphone at the context's rate -> 16 kHz mono PCM16 frames.
//
// Runs on the audio thread. Each output sample is the mean of the input samples in its span
// (a box filter: enough anti-aliasing for speech going to a VAD and ASR, and cheap), channels
// are mixed down, and every `frameMs` of output is posted to the page as an Int16 ArrayBuffer
// (transferred, not copied) with the frame's RMS level for the meter.

class PcmFramer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || 16000;
    this.frameLen = Math.round((this.targetRate * (opts.frameMs || 20)) / 1000);
    this.ratio = sampleRate / this.targetRate; // input samples per output sample
    this.frame = new Int16Array(this.frameLen);
    this.filled = 0;
    this.sum = 0; // of the input samples in the current output span
    this.count = 0;
    this.pos = 0; // how far into the current span, in input samples
    this.energy = 0;
  }

  emit(value) {
    const v = Math.max(-1, Math.min(1, value));
    this.frame[this.filled++] = v < 0 ? v * 0x8000 : v * 0x7fff;
    this.energy += v * v;
    if (this.filled === this.frameLen) {
      const level = Math.sqrt(this.energy / this.frameLen);
      this.port.postMessage({ pcm: this.frame.buffer, level }, [this.frame.buffer]);
      this.frame = new Int16Array(this.frameLen);
      this.filled = 0;
      this.energy = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true; // no device yet: keep the node alive
    const channels = input.length;
    const n = input[0].length;
    for (let i = 0; i < n; i++) {
      let x = 0;
      for (let c = 0; c < channels; c++) x += input[c][i];
      this.sum += x / channels;
      this.count += 1;
      this.pos += 1;
      // Downsampling closes one span per ratio input samples; upsampling (a context below
      // 16 kHz) repeats the sample as often as output samples fall within it.
      while (this.pos >= this.ratio) {
        this.pos -= this.ratio;
        this.emit(this.sum / this.count);
        if (this.pos >= this.ratio) continue;
        this.sum = 0;
        this.count = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-framer", PcmFramer);
