// voxtral's page: microphone -> /v1/realtime (the same protocol as any client),
// file -> /v1/audio/transcriptions (server-sent events). No build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { config: null, ws: null, ctx: null, stream: null, node: null, rtfTimer: null };
// What the page sent, for inspection (tests compare it with offline transcription).
window.voxtral = { sent: [], done: [] };

function setStatus(text) { $("status").textContent = text; }

function key() { return $("key").value.trim(); }

function authHeaders() { return key() ? { Authorization: "Bearer " + key() } : {}; }

function addLine(text) {
  const p = document.createElement("p");
  p.textContent = text;
  $("lines").appendChild(p);
  $("live").textContent = "";
  window.voxtral.done.push(text);
}

async function init() {
  const r = await fetch("/page/config");
  const cfg = state.config = await r.json();
  $("model").textContent = cfg.model;
  for (let ms = cfg.delay.min; ms <= cfg.delay.max; ms += cfg.delay.step) {
    const o = new Option(ms + " ms", ms, ms === cfg.delay.default, ms === cfg.delay.default);
    $("delay").add(o);
  }
  $("key-label").hidden = !cfg.auth_required;
  $("key").value = sessionStorage.getItem("voxtral-key") || "";
  $("key").addEventListener("change", () => sessionStorage.setItem("voxtral-key", key()));
  $("mic").disabled = false;
  $("mic").addEventListener("click", () => (state.ws ? stopMic() : startMic()));
  $("file").addEventListener("change", (e) => e.target.files[0] && upload(e.target.files[0]));
  setStatus("ready");
}

function pcm16Base64(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    pcm[i] = Math.round(s * 32767);
  }
  window.voxtral.sent.push(pcm);
  const bytes = new Uint8Array(pcm.buffer);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

async function openAudio(rate) {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  let ctx, source;
  try { // the browser resamples to the server's rate itself where it can
    ctx = new AudioContext({ sampleRate: rate });
    source = ctx.createMediaStreamSource(stream);
  } catch (e) { // otherwise the worklet does
    if (ctx) ctx.close();
    ctx = new AudioContext();
    source = ctx.createMediaStreamSource(stream);
  }
  await ctx.audioWorklet.addModule("/static/worklet.js");
  const node = new AudioWorkletNode(ctx, "voxtral-capture", { processorOptions: { targetRate: rate } });
  const mute = ctx.createGain();
  mute.gain.value = 0;
  source.connect(node).connect(mute).connect(ctx.destination);
  return { stream, ctx, node };
}

async function startMic() {
  const cfg = state.config;
  $("mic").disabled = true;
  try {
    Object.assign(state, await openAudio(cfg.sample_rate));
  } catch (e) {
    setStatus("microphone: " + e.message);
    $("mic").disabled = false;
    return;
  }
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/realtime";
  // Browsers cannot set headers on a WebSocket: the key travels as a subprotocol, as OpenAI's does.
  const ws = state.ws = new WebSocket(url, key() ? ["realtime", "openai-insecure-api-key." + key()] : ["realtime"]);
  ws.onmessage = (m) => onEvent(JSON.parse(m.data));
  ws.onclose = () => { if (state.ws === ws) { state.ws = null; resetMic(); setStatus("disconnected"); } };
  ws.onerror = () => setStatus("connection failed");
  await new Promise((ok) => { ws.onopen = ok; });
  ws.send(JSON.stringify({ type: "session.update", model: cfg.model, transcription_delay_ms: Number($("delay").value) }));
  ws.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
  state.node.port.onmessage = (m) => {
    if (ws.readyState === WebSocket.OPEN && state.node) {
      ws.send(JSON.stringify({ type: "input_audio_buffer.append", audio: pcm16Base64(m.data) }));
    }
  };
  $("mic").textContent = "Stop";
  $("mic").classList.add("recording");
  $("mic").disabled = false;
  setStatus("listening");
  pollRtf();
}

function releaseAudio() {
  if (state.node) state.node.port.onmessage = null;
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  if (state.ctx) state.ctx.close();
  state.node = state.stream = state.ctx = null;
}

function resetMic() {
  releaseAudio();
  $("mic").textContent = "Start microphone";
  $("mic").classList.remove("recording");
  $("mic").disabled = false;
  clearInterval(state.rtfTimer);
}

function stopMic() {
  releaseAudio();
  $("mic").disabled = true;
  setStatus("finishing…");
  state.ws.send(JSON.stringify({ type: "input_audio_buffer.commit", final: true }));
}

function onEvent(e) {
  if (e.type === "transcription.delta") {
    $("live").textContent += e.delta;
  } else if (e.type === "transcription.done") {
    addLine(e.text);
    const ws = state.ws;
    state.ws = null;
    ws.close();
    resetMic();
    setStatus("done");
  } else if (e.type === "transcription.lag") {
    setStatus("server behind by " + e.backlog_seconds.toFixed(1) + " s");
  } else if (e.type === "error") {
    setStatus("error: " + e.error);
  }
}

function pollRtf() {
  clearInterval(state.rtfTimer);
  const poll = async () => {
    try {
      const text = await (await fetch("/metrics", { headers: authHeaders() })).text();
      const m = text.match(/^voxtral_real_time_factor ([0-9.eE+-]+)$/m);
      if (m) $("rtf").textContent = Number(m[1]).toFixed(2);
    } catch (e) { /* the next poll may work */ }
  };
  poll();
  state.rtfTimer = setInterval(poll, 2000);
}

async function upload(file) {
  const form = new FormData();
  form.append("file", file);
  form.append("model", state.config.model);
  form.append("stream", "true");
  form.append("transcription_delay_ms", $("delay").value);
  setStatus("transcribing " + file.name);
  pollRtf();
  try {
    const r = await fetch("/v1/audio/transcriptions", { method: "POST", body: form, headers: authHeaders() });
    if (!r.ok) throw new Error((await r.json()).error.message);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const data = buf.slice(0, i).replace(/^data: /, "");
        buf = buf.slice(i + 2);
        if (data === "[DONE]") continue;
        const e = JSON.parse(data);
        if (e.type === "transcript.text.delta") $("live").textContent += e.delta;
        else if (e.type === "transcript.text.done") addLine(e.text);
        else if (e.error) throw new Error(e.error.message);
      }
    }
    setStatus("done");
  } catch (e) {
    setStatus("error: " + e.message);
  } finally {
    clearInterval(state.rtfTimer);
  }
}

init().catch((e) => setStatus("cannot load the page's configuration: " + e.message));
