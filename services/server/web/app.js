// The browser client: the live WebSocket protocol of services/server/socket_session.py.
//
// start {persona_id | session_id, media: "binary"} -> session -> listen {sample_rate, mode} ->
// 20 ms PCM16 frames up; captions, JSON events and binary media (player.js) down. Barge-in is
// the server's (`interrupted`) or the Stop button's (`interrupt` with what has played). A lost
// socket reconnects with backoff and resumes the session by its id.

import { Mic, MIC_RATE, SentClock } from "./mic.js";
import { fetchPersonas } from "./personas.js";
import { KIND_AUDIO, KIND_H264, KIND_JPEG, Player, Turn, h264Supported, unpack } from "./player.js";
import * as ui from "./ui.js";

const KEY_STORE = "avatar-serve.api-key";
const MAX_RETRIES = 8;
const CUT_REASONS = { client: "stopped", barge_in: "you spoke", new_turn: "a new question" };

// Counters the end-to-end test reads (and a curious user in the console).
const stats = (window.avatarStats = {
  micFrames: 0, audioScheduled: 0, audioSeconds: 0, audioStalls: 0, framesReceived: 0,
  framesDrawn: 0, framesDropped: 0, framesBad: 0, captions: 0, chips: 0, transcripts: 0,
  interims: 0, turns: 0, interrupted: 0, mediaAfterStop: 0, reconnects: 0, resumed: 0, errors: [],
});

const state = {
  key: localStorage.getItem(KEY_STORE) || "",
  listing: null, persona: null, sessionId: null, resuming: false,
  ws: null, wanted: false, retries: 0, retryAfter: 0,
  mode: "vad", listening: false, pttHeld: false,
  turn: null, turnSeq: 0, user: null, lastUserText: null,
  stopping: false, stopAt: null, bargeCutAt: null, stoppedAt: null,
  sent: new SentClock(), video: "jpeg",
};
// For the end-to-end test: which session this page is in, and a way to lose the connection.
window.avatarClient = {
  sessionId: () => state.sessionId,
  dropConnection: () => state.ws && state.ws.close(4000, "dropped on purpose"),
};
let ctx = null;
let player = null;
let mic = null;

// -- personas ------------------------------------------------------------------------------

async function loadPersonas() {
  state.listing = (await fetchPersonas(state.key)) || state.listing;
  pickPersona();
}

function pickPersona() {
  const id = ui.$("persona").value;
  const personas = (state.listing && state.listing.personas) || [];
  state.persona = personas.find((p) => p.id === id) || null;
  ui.$("persona-greeting").textContent = state.persona ? `“${state.persona.greeting}”` : "";
  ui.setDisclosure(null, state.persona);
}

// -- the socket ----------------------------------------------------------------------------

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
}

function open() {
  const url = new URL("v1/session", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  // Browsers cannot set headers on a WebSocket: the key travels as a subprotocol (auth.py).
  const protocols = ["avatar.v1", ...(state.key ? [`avatar.key.${state.key}`] : [])];
  const ws = new WebSocket(url, protocols);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  ws.onopen = () => {
    const start = { type: "start", media: "binary", video: state.video };
    state.resuming = Boolean(state.sessionId);
    if (state.sessionId) start.session_id = state.sessionId;
    else if (state.persona) start.persona_id = state.persona.id;
    send(start);
  };
  ws.onmessage = (e) => {
    if (ws !== state.ws) return;
    if (typeof e.data === "string") onEvent(JSON.parse(e.data));
    else onMedia(e.data);
  };
  ws.onclose = (e) => onClose(ws, e);
}

function onClose(ws, e) {
  if (ws !== state.ws) return;
  state.listening = false;
  state.ws = null;
  if (state.turn) endTurn("cut", "connection lost");
  if (!state.wanted) return;
  if (e.code === 4401 || e.code === 4403) {
    setConnected(false);
    if (e.code === 4401) ui.$("key-form").hidden = false;
    ui.status(`Disconnected: ${e.reason || "the API key was refused"}.`, "error");
    return;
  }
  if (state.retries >= MAX_RETRIES) {
    setConnected(false);
    ui.status("The connection keeps dropping. Press Start to try again.", "error");
    return;
  }
  const delay = Math.max(state.retryAfter, Math.min(10, 2 ** state.retries));
  state.retries += 1;
  state.retryAfter = 0;
  const why = e.code === 1013 ? "the server is full" : `socket closed, code ${e.code}`;
  ui.status(`Connection lost (${why}). Reconnecting in ${delay} s…`, "warn");
  setTimeout(() => {
    if (!state.wanted) return;
    stats.reconnects++;
    open();
  }, delay * 1000);
}

// -- events --------------------------------------------------------------------------------

function onEvent(ev) {
  switch (ev.type) {
    case "session":
      state.sessionId = ev.session_id;
      state.retries = 0;
      stats.resumed += state.resuming ? 1 : 0;
      ui.status(state.resuming ? "Reconnected: the conversation goes on." : "Connected. Say something.");
      state.resuming = false;
      if (player && ev.fps) player.frameS = 1 / ev.fps;
      ui.setDisclosure(ev.disclosure, state.persona);
      if (mic && mic.node) send({ type: "listen", sample_rate: MIC_RATE, mode: state.mode });
      break;
    case "listening":
      state.listening = true;
      state.sent.reset(); // the server's stream timeline starts at the next frame
      ui.status(state.mode === "vad" ? "Listening (hands-free)." : "Hold the button to talk.");
      break;
    case "speech_started":
      state.user = ui.userLine();
      onSpeechStarted(ev);
      break;
    case "transcript":
      onTranscript(ev);
      break;
    case "speech_stopped":
      state.stoppedAt = performance.now();
      break;
    case "plan": // a persona's sources, before it speaks: the chips go up with the captions
      addChips(currentTurn(), ev.sources);
      break;
    case "reply": {
      const turn = currentTurn();
      turn.sentence(ev.index).text = ev.text;
      break;
    }
    case "audio": {
      const turn = currentTurn();
      turn.rates.set(ev.index, ev.sample_rate);
      turn.sentence(ev.index).start_s = ev.start_s;
      break;
    }
    case "video":
      if (player) player.configureVideo(ev);
      break;
    case "done":
      onDone(ev);
      break;
    case "interrupted":
      onInterrupted(ev);
      break;
    case "error":
      onError(ev);
      break;
    default:
      break; // events of later protocol versions: ignored, not fatal
  }
}

function onTranscript(ev) {
  if (ev.final === false) {
    // Only while an utterance is open: a decode that finishes after the final one is stale.
    if (!state.user) return;
    stats.interims++;
    ui.setUserText(state.user, ev.text, false);
    return;
  }
  // A listener's final transcript (`final: true`), then the turn's own (no `final`): one line.
  const echo = ev.final === undefined && ev.text === state.lastUserText;
  state.lastUserText = ev.final === true ? ev.text : null;
  if (!state.user && echo) return;
  if (!ev.text) {
    // Speech, but no words in it: no turn follows.
    if (state.user) state.user.remove();
    state.user = null;
    return;
  }
  if (!state.user) state.user = ui.userLine();
  ui.setUserText(state.user, ev.text, true);
  stats.transcripts++;
  state.user = null;
}

function currentTurn() {
  if (!state.turn) {
    const turn = (state.turn = new Turn(++state.turnSeq, state.stoppedAt));
    state.stoppedAt = null;
    ui.avatarLine(turn, state.persona && state.persona.name);
    if (player) player.track(turn);
    ui.$("stop").disabled = false;
  }
  return state.turn;
}

function endTurn(cls, note) {
  const turn = state.turn;
  state.turn = null;
  if (!turn) return;
  turn.done = true;
  if (turn.el) turn.el.classList.add("ended"); // played out or cut: the line is final
  if (cls) {
    if (player) player.flush(turn);
    ui.markTurn(turn, cls, note);
  }
}

function onMedia(buf) {
  if (state.stopping) {
    stats.mediaAfterStop++; // sent before the server saw our `interrupt`: not to be played
    return;
  }
  if (!player) return;
  const m = unpack(buf);
  const turn = currentTurn();
  if (m.kind === KIND_AUDIO) player.audio(turn, m.index, m.t, buf);
  else if (m.kind === KIND_JPEG) player.frame(turn, m.t, buf);
  else if (m.kind === KIND_H264) player.h264(turn, m.t, m.flags, buf);
}

function addChips(turn, sources) {
  if (turn.chipped || !sources || !sources.length) return;
  turn.chipped = true;
  stats.chips += ui.addChips(turn, sources, state.persona ? state.persona.documents : null);
}

function onDone(ev) {
  state.stopping = false;
  const turn = currentTurn(); // a reply with no media still gets its line
  const meta = ev.metadata || {};
  addChips(turn, meta.sources); // no-op if the `plan` event already put them up
  if (!turn.sentences.size && ev.reply) ui.addSentence(turn, ev.reply);
  stats.turns++;
  // Stopped here just as the server finished sending it: the reply was still cut short.
  endTurn(turn.cut ? "interrupted" : null, turn.cut ? "interrupted (stopped)" : null);
}

function onSpeechStarted(ev) {
  // The server cuts the reply, then says where the speech that cut it began: barge-in stop is
  // from that onset (as sent from here) to the cut reaching this page.
  const cut = state.bargeCutAt;
  state.bargeCutAt = null;
  if (cut === null || typeof ev.t_s !== "number") return;
  const onset = state.sent.at(ev.t_s);
  if (onset !== null && onset <= cut) ui.hud("stop", cut - onset);
}

function onInterrupted(ev) {
  const turn = state.turn;
  if (ev.reason === "barge_in") state.bargeCutAt = performance.now();
  else if (state.stopAt !== null) ui.hud("stop", performance.now() - state.stopAt);
  state.stopping = false;
  state.stopAt = null;
  stats.interrupted++;
  const who = CUT_REASONS[ev.reason] || ev.reason;
  // What was heard before the cut is what the twin "said" (the history keeps only that).
  const heard = ev.spoken ? `; heard: “${ev.spoken}”` : "";
  if (turn) endTurn("interrupted", `interrupted (${who}) after ${ev.played_s.toFixed(1)} s${heard}`);
  else if (player) player.flush(null);
}

function onError(ev) {
  stats.errors.push(ev.status);
  state.stopping = false;
  if (state.resuming && ev.status === 404) {
    // The session expired while we were away: start a new one with the same persona.
    state.sessionId = null;
    state.resuming = false;
    ui.status("Your earlier session has expired; starting a new one.", "warn");
    send({ type: "start", media: "binary", ...(state.persona ? { persona_id: state.persona.id } : {}) });
    return;
  }
  if (ev.retry_after_s) state.retryAfter = Math.ceil(ev.retry_after_s);
  if (ev.status === 401) ui.$("key-form").hidden = false;
  if (state.turn) endTurn("failed", ui.errorText(ev));
  ui.status(ui.errorText(ev), ev.status >= 500 || ev.status === 429 ? "warn" : "error");
}

// -- controls ------------------------------------------------------------------------------

function onMicFrame(pcm, lvl) {
  ui.level(lvl);
  const ws = state.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN || !state.listening) return;
  if (state.mode === "push_to_talk" && !state.pttHeld) return;
  ws.send(pcm);
  state.sent.add();
  stats.micFrames++;
}

function stopReply() {
  const turn = state.turn;
  state.stopAt = performance.now();
  if (turn && !turn.done) {
    // Silence now; the server confirms with `interrupted` and logs only what was heard.
    state.stopping = true;
    send({ type: "interrupt", played_s: player ? player.position(turn) : 0 });
    player.flush(turn);
  } else if (player && player.speaking()) {
    player.flush(null); // all sent already: only the local tail to silence
    ui.hud("stop", 0);
  }
}

function setConnected(on) {
  state.wanted = on;
  ui.$("connect").textContent = on ? "Hang up" : "Start talking";
  ui.$("persona").disabled = on;
  ui.$("stop").disabled = !on;
}

async function connect() {
  if (state.wanted) {
    setConnected(false);
    if (state.ws) state.ws.close(1000, "hang up");
    if (player) player.flush(state.turn);
    if (mic) mic.close();
    ui.status("Disconnected.");
    return;
  }
  if (!ctx) {
    ctx = new AudioContext({ latencyHint: "interactive" });
    player = new Player(ctx, ui.$("avatar"), stats, {
      onSentence: (turn, index, text) => {
        ui.addSentence(turn, text);
        stats.captions++;
      },
      onFirstAudio: (turn) => turn.stoppedAt && ui.hud("ttfa", turn.firstAudioAt - turn.stoppedAt),
      onFirstFrame: (turn) => turn.stoppedAt && ui.hud("ttff", turn.firstFrameAt - turn.stoppedAt),
    });
    mic = new Mic(ctx, onMicFrame);
    // H.264 (WebCodecs) is a third of JPEG's bytes; `?video=jpeg` asks for JPEG anyway.
    const asked = new URLSearchParams(location.search).get("video");
    state.video = asked || ((await h264Supported()) ? "h264" : "jpeg");
    stats.video = state.video;
    setInterval(() => ui.hudFrames(stats), 500);
  }
  await ctx.resume();
  try {
    await mic.open();
  } catch (e) {
    ui.status(`No microphone (${e.message}): you can still type.`, "warn");
  }
  state.sessionId = null;
  state.retries = 0;
  setConnected(true);
  open();
}

function setMode(mode) {
  state.mode = mode;
  ui.$("ptt").hidden = mode !== "push_to_talk";
  if (state.sessionId && mic && mic.node) send({ type: "listen", sample_rate: MIC_RATE, mode });
}

function ptt(down) {
  if (down === state.pttHeld || state.mode !== "push_to_talk") return;
  state.pttHeld = down;
  ui.$("ptt").classList.toggle("held", down);
  if (down && state.turn) stopReply(); // talking over the avatar stops it
  if (!down) send({ type: "end_of_speech" });
}

function wire() {
  ui.$("persona").addEventListener("change", pickPersona);
  ui.$("connect").addEventListener("click", connect);
  ui.$("stop").addEventListener("click", stopReply);
  ui.$("consent-open").addEventListener("click", ui.showConsent);
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => radio.checked && setMode(radio.value));
  }
  const button = ui.$("ptt");
  button.addEventListener("pointerdown", () => ptt(true));
  for (const up of ["pointerup", "pointerleave", "pointercancel"]) {
    button.addEventListener(up, () => ptt(false));
  }
  const typing = () => document.activeElement && document.activeElement.tagName === "INPUT";
  document.addEventListener("keydown", (e) => e.code === "Space" && !typing() && ptt(true));
  document.addEventListener("keyup", (e) => e.code === "Space" && !typing() && ptt(false));
  ui.$("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.key = ui.$("key").value.trim();
    localStorage.setItem(KEY_STORE, state.key);
    loadPersonas();
  });
  ui.$("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ui.$("text").value.trim();
    if (!text || !state.ws) return;
    send({ type: "text", text });
    ui.$("text").value = "";
  });
}

wire();
loadPersonas();
