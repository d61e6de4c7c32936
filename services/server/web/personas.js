// The persona picker: `GET /v1/personas` with the API key, if any, into the <select>.

import * as ui from "./ui.js";

/** The listing ({personas, default, plain_chat}), or null after telling the user why not. */
export async function fetchPersonas(key) {
  let response;
  try {
    response = await fetch("v1/personas", { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  } catch (e) {
    ui.status(`Cannot reach the server (${e.message}).`, "error");
    return null;
  }
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 || response.status === 403) {
    ui.$("key-form").hidden = false;
    ui.status(`This server needs an API key: ${body.error || response.status}.`, "warn");
    return null;
  }
  if (!response.ok) {
    ui.status(ui.errorText({ status: response.status, reason: body.error || "" }), "error");
    return null;
  }
  ui.$("key-form").hidden = true;
  const select = ui.$("persona");
  select.replaceChildren();
  for (const p of body.personas) {
    select.append(new Option(`${p.name} — ${p.role}`, p.id, false, p.id === body.default));
  }
  // Without a persona the server would pick its default one: offer plain chat only if none.
  if (body.plain_chat && !body.default) select.append(new Option("No persona (plain chat)", ""));
  ui.$("connect").disabled = select.options.length === 0;
  if (select.options.length) ui.status("Pick who to talk to, then press Start talking.");
  else ui.status("This API key may talk to no persona here.", "warn");
  return body;
}
