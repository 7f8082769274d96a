// The console's shell: sign-in, the org picker, the websocket feed, hash routing and the
// shared helpers of the pages (DOM building, errors, confirmation).

import { api, ApiError, Feed, session } from "./api.js";
import { pages } from "./pages.js";

const $ = (id) => document.getElementById(id);

/** Builds an element: h("a", {href: "#"}, "text", child...). Text is never parsed as HTML. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Shows an error: the API's message as it answered it. */
export function showError(error) {
  const box = $("error");
  if (!error) { box.hidden = true; box.textContent = ""; return; }
  const message = error instanceof ApiError
    ? `${error.message} (${error.code})`
    : String(error.message || error);
  box.textContent = message;
  box.hidden = false;
  if (error instanceof ApiError && error.status === 401) signOut(false);
}

/** Runs an action, showing its error if it fails; answers its result or undefined. */
export async function attempt(action) {
  try {
    const result = await action();
    showError(null);
    return result;
  } catch (e) {
    showError(e);
    return undefined;
  }
}

/** Asks the operator to confirm in a modal dialog (Escape cancels). */
export function confirmAction(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const done = (answer) => {
      $("confirm-yes").onclick = null;
      $("confirm-no").onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    $("confirm-yes").onclick = () => done(true);
    $("confirm-no").onclick = () => done(false);
    dialog.onclose = () => done(false);
    dialog.showModal();
    $("confirm-no").focus();
  });
}

/** Opens a page, also when its hash is the current one. */
export function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

export const app = {
  feed: null,
  /** Org ids the token may use, with names when the API lists them. */
  orgs: [],
  isAdmin: false,
  cleanup: null,
};

function setLive(on, text) {
  const live = $("live");
  live.textContent = text;
  live.classList.toggle("on", on);
}

function startFeed() {
  if (app.feed) app.feed.stop();
  app.feed = session.org ? new Feed(session.org, setLive) : null;
}

/**
 * Takes the token out of the fragment (`#token=...`, as `unify token --console` prints it),
 * keeping it in sessionStorage only, and answers whether there was one.
 */
function tokenFromFragment() {
  const hash = location.hash.slice(1);
  if (!hash.startsWith("token=")) return false;
  const params = new URLSearchParams(hash);
  session.token = params.get("token");
  if (params.get("org")) session.org = Number(params.get("org"));
  history.replaceState(null, "", location.pathname + "#/scope");
  return true;
}

/** Opens the session of the token in sessionStorage, or shows the sign-in page. */
async function signIn() {
  if (session.token && (await attempt(enter))) {
    route();
    return;
  }
  $("nav").hidden = true;
  $("session").hidden = true;
  signInPage($("main"));
}

async function loadOrgs() {
  const claims = session.claims() || {};
  app.isAdmin = claims.role === "admin";
  if (claims.role === "root") {
    throw new ApiError(403, "FORBIDDEN", "a root token cannot use organizations; sign in with an admin or agent token");
  }
  if (app.isAdmin) {
    const orgs = await api("GET", "/api/v1/application/cdh/organizations");
    app.orgs = orgs.map((o) => ({ id: o.id, label: `${o.name} (${o.source}, #${o.id})` }));
  } else {
    app.orgs = (claims.org_ids || []).map((id) => ({ id, label: `org #${id}` }));
  }
  if (!app.orgs.some((o) => o.id === session.org)) session.org = app.orgs.length ? app.orgs[0].id : null;
  const select = $("org");
  select.replaceChildren(...app.orgs.map((o) => h("option", { value: o.id, selected: o.id === session.org }, o.label)));
}

function signOut(clearError = true) {
  session.token = null;
  session.org = null;
  if (app.feed) app.feed.stop();
  app.feed = null;
  if (clearError) showError(null);
  location.hash = "#/sign-in";
  route();
}

function signInPage(main) {
  const input = h("textarea", { id: "token", name: "token", autocomplete: "off", spellcheck: "false",
    "aria-describedby": "token-hint" });
  const form = h("form", { class: "card", id: "sign-in" },
    h("h2", {}, "Sign in"),
    h("div", { class: "field" },
      h("label", { for: "token" }, "API token"),
      input,
      h("p", { class: "hint", id: "token-hint" },
        "Paste an admin or agent token, or open the link printed by ",
        h("code", {}, "unify token --role admin --account ID --console"),
        ". The token stays in this tab (sessionStorage) and is sent only in request headers.")),
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    session.token = input.value.trim();
    if (await attempt(enter)) go("#/scope");
  });
  main.replaceChildren(form);
  input.focus();
}

/** Checks the token against the API and opens the session. */
async function enter() {
  await loadOrgs();
  if (!session.org) throw new ApiError(404, "NOT_FOUND", "this token may use no organization");
  $("nav").hidden = false;
  $("session").hidden = false;
  startFeed();
  return true;
}

async function route() {
  const main = $("main");
  if (app.cleanup) { app.cleanup(); app.cleanup = null; }
  const [name, arg] = location.hash.replace(/^#\/?/, "").split("/");
  for (const a of document.querySelectorAll("nav a")) {
    a.toggleAttribute("aria-current", a.getAttribute("href") === `#/${name}`);
    if (a.getAttribute("href") === `#/${name}`) a.setAttribute("aria-current", "page");
  }
  if (!session.token || name === "sign-in") {
    $("nav").hidden = true;
    $("session").hidden = true;
    signInPage(main);
    return;
  }
  const page = pages[name] || pages.scope;
  main.replaceChildren(h("p", { class: "hint" }, "Loading…"));
  document.title = `unify console: ${name || "scope"}`;
  app.cleanup = (await attempt(() => page(main, arg))) || null;
}

async function start() {
  $("sign-out").addEventListener("click", () => signOut());
  $("org").addEventListener("change", (e) => {
    session.org = Number(e.target.value);
    startFeed();
    go("#/scope");
  });
  // A sign-in link opened in a tab already showing the console changes only the fragment.
  window.addEventListener("hashchange", () => (tokenFromFragment() ? signIn() : route()));
  tokenFromFragment();
  signIn();
}

start();
