// The console's client of the public API (/api/v1) and of the websocket (SPEC 4, 5).
// The token lives in sessionStorage only: it is gone when the tab closes.

const TOKEN_KEY = "unify.token";
const ORG_KEY = "unify.org";

/** An error answered by the API: its status, code and message (SPEC 4.2). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
  },
  get org() { const v = sessionStorage.getItem(ORG_KEY); return v ? Number(v) : null; },
  set org(value) {
    if (value) sessionStorage.setItem(ORG_KEY, String(value)); else sessionStorage.removeItem(ORG_KEY);
  },
  /** The token's claims (not verified here: the server does that on every call). */
  claims() {
    const token = this.token;
    if (!token) return null;
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    } catch {
      return null;
    }
  },
};

/** Calls the API; answers the parsed JSON body (null when empty) or throws an ApiError. */
export async function api(method, path, body, contentType = "application/json") {
  const headers = { Authorization: `Bearer ${session.token}` };
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType;
    payload = contentType === "application/json" ? JSON.stringify(body) : body;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload });
  } catch (e) {
    throw new ApiError(0, "NETWORK", `the server did not answer (${e.message})`);
  }
  const text = await response.text();
  let json = null;
  if (text) {
    try { json = JSON.parse(text); } catch { json = null; }
  }
  if (!response.ok) {
    const error = json && json.error;
    throw new ApiError(response.status, error ? error.code : "HTTP_" + response.status,
      error ? error.message : `${response.status} ${response.statusText}`);
  }
  return json;
}

export const org = (rest) => `/api/v1/orgs/${session.org}${rest}`;

/**
 * One websocket subscription of the org's scope events, kept open across pages. It resumes
 * with `since` = the last seq received after `lagged` or any close, and tells its listeners
 * to re-read their state after `resync_required` (README, "Websocket").
 */
export class Feed {
  constructor(orgId, onStatus) {
    this.orgId = orgId;
    this.onStatus = onStatus;
    this.listeners = new Set();
    this.lastSeq = null;
    this.stopped = false;
    this.retry = 500;
    this.open();
  }

  on(listener) { this.listeners.add(listener); return () => this.listeners.delete(listener); }

  open() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const params = new URLSearchParams({ access_token: session.token });
    if (this.lastSeq !== null) params.set("since", String(this.lastSeq));
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/orgs/${this.orgId}/ws?${params}`);
    this.socket = socket;
    const reconnect = this.opened;
    socket.onopen = () => {
      this.retry = 500;
      this.opened = true;
      this.onStatus(true, "live");
      // Without a seq to resume from, what happened while closed is unknown: re-read.
      if (reconnect && this.lastSeq === null) this.dispatch({ type: "resync_required" });
    };
    socket.onmessage = (message) => {
      let frame;
      try { frame = JSON.parse(message.data); } catch { return; }
      if (typeof frame.seq === "number") this.lastSeq = frame.seq;
      if (frame.type === "resync_required" && typeof frame.oldest_seq === "number") {
        this.lastSeq = Math.max(0, frame.oldest_seq - 1);
      }
      this.dispatch(frame);
    };
    socket.onclose = (event) => {
      if (this.stopped) return;
      if (event.code === 1008 && /expired/.test(event.reason)) {
        this.onStatus(false, "token expired: sign in again");
        return;
      }
      this.onStatus(false, event.reason === "lagged" ? "catching up" : "reconnecting");
      setTimeout(() => { if (!this.stopped) this.open(); }, this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    };
  }

  dispatch(frame) {
    for (const listener of this.listeners) {
      try { listener(frame); } catch (e) { console.error(e); }
    }
  }

  stop() {
    this.stopped = true;
    if (this.socket) this.socket.close();
    this.onStatus(false, "offline");
  }
}

/** Whether an event of the feed concerns any of the given member or profile ids. */
export function touches(frame, ids) {
  const all = [frame.member_id, frame.profile_id, frame.merged_into,
    ...(frame.member_ids || []), ...(frame.previous_profile_ids || [])];
  return all.some((id) => id !== undefined && id !== null && ids.has(id));
}
