// Microphone capture in the audio thread: mono float32 at the server's rate,
// posted to the page in blocks. When the context runs at another rate, a
// streaming linear-interpolation resampler (after a box low-pass when
// downsampling) converts it.
class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.step = sampleRate / options.processorOptions.targetRate; // input samples per output sample
    this.pos = 0; // position of the next output sample, in input samples since `prev`
    this.prev = 0;
    this.block = [];
    this.blockSize = Math.round(options.processorOptions.targetRate * 0.04); // 40 ms
  }
  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const n = input[0].length;
    const mono = new Float32Array(n);
    for (const ch of input) for (let i = 0; i < n; i++) mono[i] += ch[i] / input.length;
    if (this.step === 1) {
      for (let i = 0; i < n; i++) this.block.push(mono[i]);
    } else {
      const width = Math.max(1, Math.floor(this.step));
      const x = new Float32Array(n + 1);
      x[0] = this.prev;
      for (let i = 0; i < n; i++) {
        let s = 0; // box filter over `width` samples against aliasing
        for (let k = 0; k < width; k++) s += mono[Math.max(0, i - k)];
        x[i + 1] = s / width;
      }
      while (this.pos <= n) {
        const i = Math.floor(this.pos), f = this.pos - i;
        this.block.push(i + 1 <= n ? x[i] * (1 - f) + x[i + 1] * f : x[i]);
        this.pos += this.step;
      }
      this.pos -= n;
      this.prev = x[n];
    }
    while (this.block.length >= this.blockSize) {
      this.port.postMessage(Float32Array.from(this.block.splice(0, this.blockSize)));
    }
    return true;
  }
}
registerProcessor("voxtral-capture", Capture);
