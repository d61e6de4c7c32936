// What the page shows: the AI disclosure and consent record, captions with citation chips,
// the latency HUD and status messages. No protocol here (app.js), no media (player.js).

export const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

// -- status --------------------------------------------------------------------------------

export function status(text, kind = "info") {
  const box = $("status");
  box.textContent = text;
  box.className = `status ${kind}`;
}

const ERROR_TEXT = {
  400: "The server could not read that",
  401: "The API key is missing, wrong or revoked",
  403: "This API key may not do that",
  404: "Not found",
  409: "That does not fit this session",
  410: "This persona's consent was revoked: it is no longer available",
  413: "That was too long",
  415: "The server cannot decode that audio",
  422: "The server rejected that request",
  429: "This API key has reached its limit",
  500: "The avatar hit an error",
  503: "The avatar is busy right now",
};

/** A person-readable message for an `error` event. */
export function errorText(ev) {
  const head = ERROR_TEXT[ev.status] || `Error ${ev.status}`;
  const retry = ev.retry_after_s ? ` Try again in ${Math.ceil(ev.retry_after_s)} s.` : "";
  return `${head} (${ev.status}: ${ev.reason}).${retry}`;
}

// -- disclosure and consent ----------------------------------------------------------------

const PLAIN_NOTICE = "You are talking to an AI. Its voice and face are synthetic.";
let consentRecord = null;

/** `disclosure`: the session's (server) or one built from the persona listing before it. */
export function setDisclosure(disclosure, persona) {
  const name = (disclosure && disclosure.display_name) || (persona && persona.name);
  const notice =
    (disclosure && disclosure.notice) ||
    (name ? `You are talking to an AI version of ${name}, not the person.` : PLAIN_NOTICE);
  $("disclosure-text").textContent = notice;
  const consent = (disclosure && disclosure.consent) || (persona && persona.consent) || null;
  consentRecord = consent ? { consent, name, summary: persona && persona.consent_summary } : null;
  $("consent-open").hidden = !consentRecord;
}

export function showConsent() {
  const body = $("consent-body");
  body.replaceChildren();
  if (!consentRecord) {
    body.append(el("p", null, "This session speaks for no real person."));
  } else {
    const { consent, name, summary } = consentRecord;
    if (summary) body.append(el("p", null, summary));
    const dl = el("dl");
    const rows = [
      ["Twin of", name],
      ["Granted by", consent.granted_by],
      ["Granted on", consent.granted_at],
      ["Covers", (consent.scope || []).join(", ")],
      ["Expires", consent.expires_at || "no expiry"],
      ["Signed record", consent.document || "not given"],
    ];
    for (const [k, v] of rows) dl.append(el("dt", null, k), el("dd", null, v));
    body.append(dl);
  }
  $("consent").showModal();
}

// -- captions ------------------------------------------------------------------------------

function scrollCaptions() {
  const list = $("captions");
  list.scrollTop = list.scrollHeight;
}

/** A line for what the user says, interim until `finalUser`. */
export function userLine() {
  const li = el("li", "user interim");
  li.append(el("span", "who", "You"), el("span", "text", "…"));
  $("captions").append(li);
  scrollCaptions();
  return li;
}

export function setUserText(li, text, final) {
  li.querySelector(".text").textContent = text || "…";
  li.classList.toggle("interim", !final);
  scrollCaptions();
}

export function avatarLine(turn, name) {
  const li = el("li", "avatar");
  li.append(el("span", "who", name || "Avatar"), el("span", "text"), el("div", "chips"));
  $("captions").append(li);
  turn.el = li;
  scrollCaptions();
}

export function addSentence(turn, text) {
  const span = el("span", "sentence", text + " ");
  turn.el.querySelector(".text").append(span);
  scrollCaptions();
}

/** Citation chips for the statements a reply came from: file, statement id, date if known. */
export function addChips(turn, sources, documents) {
  const box = turn.el.querySelector(".chips");
  for (const src of sources || []) {
    const doc = (documents && documents[src.source]) || {};
    const [, statement] = String(src.id).split("#");
    const label = [src.source, statement ? `#${statement}` : null, doc.date].filter(Boolean);
    const chip = el(doc.url ? "a" : "span", "chip", label.join(" · "));
    if (doc.url) {
      chip.href = doc.url;
      chip.target = "_blank";
      chip.rel = "noopener";
    }
    chip.title = `${doc.title || src.title || src.source}: "${src.text}"`;
    chip.dataset.statement = src.id;
    box.append(chip);
  }
  scrollCaptions();
  return box.children.length;
}

export function markTurn(turn, cls, note) {
  if (!turn || !turn.el) return;
  turn.el.classList.add(cls);
  if (note) turn.el.append(el("div", "note", note));
  scrollCaptions();
}

// -- HUD -----------------------------------------------------------------------------------

export function hud(name, ms) {
  $(`hud-${name}`).textContent = ms === null ? "–" : `${Math.round(ms)} ms`;
}

export function hudFrames(stats) {
  $("hud-frames").textContent = `${stats.framesDrawn} drawn / ${stats.framesDropped} dropped`;
}

export function level(value) {
  $("level").value = value;
}
