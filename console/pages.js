// The console's pages. Each renders into `main`, reads only the public API, follows the
// websocket feed where its data can change, and returns a function that unsubscribes it.

import { api, org, touches } from "./api.js";
import { app, attempt, confirmAction, h } from "./app.js";
import { drawGraph } from "./graph.js";

const ATTRIBUTES = ["display_email", "display_mobile", "custom_id", "line_id", "connect_id", "external_member_id"];
const EDITABLE = ATTRIBUTES.filter((a) => a !== "external_member_id");
const FIELDS = ["display_name", "display_email", "display_mobile", "custom_id", "line_id", "connect_id"];

const memberLink = (id) => h("a", { href: `#/member/${id}` }, `#${id}`);
const profileLink = (id, text) => h("a", { href: `#/profile/${id}` }, text || `profile of #${id}`);

function table(headers, rows, attrs = {}) {
  return h("div", { class: "table-wrap" },
    h("table", attrs,
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))
        : h("tr", {}, h("td", { colspan: headers.length, class: "hint" }, "none")))));
}

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

function memberName(m) {
  return m.display_name || m.original_name || m.external_member_id;
}

// ---------------------------------------------------------------------------------------
// Scope: keys, integrate status, merge progress, event feed, hot values, dry run, CDH sync.

async function scope(main) {
  const [setting, merge, hot] = await Promise.all([
    api("GET", org("/organization/unify-scope-setting")),
    api("GET", org("/organization/unify-scope-setting/merge-state")),
    api("GET", org("/organization/unify-scope-setting/hot-values")),
  ]);
  let admin = null;
  let sync = null;
  if (app.isAdmin) {
    admin = await api("GET", "/api/v1/applications/cdh/unify-scope-setting").catch(() => null);
    if (admin && admin.unify_scope_id !== setting.unify_scope_id) admin = null;
    sync = await api("GET", "/api/v1/applications/cdh/sync-state").catch((e) => ({ error: e.message }));
  }
  const distinct = admin ? admin.distinct_key : null;

  const progress = h("progress", { id: "merge-progress", max: 1, value: merge.is_finished ? 1 : 0,
    "aria-label": "Merge progress" });
  const progressText = h("span", { id: "merge-text", role: "status" },
    merge.is_finished ? "finished" : "re-unification running");
  const feed = h("ol", { id: "feed", "aria-label": "Scope events, newest first", reversed: true });

  const keysList = setting.unify_keys.length
    ? h("ol", { class: "keys", id: "keys" }, setting.unify_keys.map((k) =>
      h("li", {}, h("code", {}, k), k === distinct ? h("span", { class: "badge warn" }, " distinct") : "")))
    : h("p", { class: "hint", id: "keys" }, "No unify keys: every member is its own profile.");

  const dryInput = h("input", { id: "dry-keys", name: "dry-keys", size: 40,
    value: setting.unify_keys.map((k) => (k === distinct ? k + "!" : k)).join(", "),
    "aria-describedby": "dry-hint" });
  const dryResult = h("div", { id: "dry-result", role: "status" });
  const dryForm = h("form", { id: "dry-run" },
    h("div", { class: "field" }, h("label", { for: "dry-keys" }, "Key list to try"), dryInput,
      h("p", { class: "hint", id: "dry-hint" },
        "Attributes in priority order, comma separated; mark the distinct one with !. Nothing is changed.")),
    h("button", { type: "submit" }, "Dry run"));
  dryForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const unify_keys = dryInput.value.split(",").map((s) => s.trim()).filter(Boolean)
      .map((s) => ({ attribute: s.replace(/!$/, ""), is_distinct: s.endsWith("!") }));
    const d = await attempt(() => api("POST", org("/organization/unify-scope-setting/dry-run"), { unify_keys }));
    if (d) {
      dryResult.replaceChildren(table(["", "before", "after"], [
        ["profiles", d.profiles_before, d.profiles_after],
      ]), kv([["members moved", d.members_moved], ["profiles merged", d.profiles_merged],
        ["profiles split", d.profiles_split]]));
    }
  });

  main.replaceChildren(
    h("h2", {}, `Scope #${setting.unify_scope_id}`),
    h("div", { class: "grid" },
      h("section", { "aria-labelledby": "keys-h" }, h("h3", { id: "keys-h" }, "Unify keys (priority order)"),
        keysList,
        kv([["distinct key", distinct ?? (app.isAdmin ? "none" : "shown to admins")],
          ["CDH integrated", setting.is_cdh_connected ? "yes" : "no"],
          ["orgs", setting.orgs.map((o) => `#${o.id} ${o.source}`).join(", ")]])),
      h("section", { "aria-labelledby": "merge-h" }, h("h3", { id: "merge-h" }, "Merge state"),
        progress, progressText,
        h("h3", {}, "CDH sync"),
        sync ? (sync.error ? h("p", { class: "hint" }, sync.error)
          : kv([["pending", sync.pending], ["delivered", sync.delivered], ["dead", sync.dead],
            ["last error", sync.last_error], ["last delivered", sync.last_delivered_at]]))
          : h("p", { class: "hint" }, "Shown to admins."))),
    h("section", { "aria-labelledby": "feed-h" }, h("h3", { id: "feed-h" }, "Live events"), feed),
    h("div", { class: "grid" },
      h("section", { "aria-labelledby": "hot-h" }, h("h3", { id: "hot-h" }, "Hot values (do not link)"),
        table(["attribute", "value", "members"], hot.map((v) => [v.attribute, v.value, v.members]), { id: "hot" })),
      h("section", { "aria-labelledby": "dry-h" }, h("h3", { id: "dry-h" }, "Dry run"), dryForm, dryResult)),
  );

  return app.feed.on((frame) => {
    if (frame.type === "merge_progress") {
      progress.max = Math.max(1, frame.total);
      progress.value = frame.is_finished ? progress.max : frame.done;
      progressText.textContent = frame.is_finished ? "finished" : `${frame.done} / ${frame.total}`;
    }
    const line = frame.type === "resync_required" ? "resync required: state re-read"
      : frame.type === "lagged" ? "lagged: reconnecting" : JSON.stringify(frame);
    feed.prepend(h("li", {}, line));
    while (feed.children.length > 100) feed.lastChild.remove();
  });
}

// ---------------------------------------------------------------------------------------
// Find: by external id (on a channel) or by a unify-key value.

async function find(main) {
  const channels = await api("GET", org("/channels"));
  const by = h("select", { id: "find-by", name: "by" },
    h("option", { value: "external_member_id" }, "external member id"),
    EDITABLE.map((a) => h("option", { value: a }, a)));
  const channel = h("select", { id: "find-channel", name: "channel" },
    channels.map((c) => h("option", { value: c.id }, `${c.name} (${c.type})`)),
    h("option", { value: "" }, "no channel (maac)"));
  const value = h("input", { id: "find-value", name: "value", required: true, size: 30 });
  const results = h("div", { id: "find-results", role: "status" });
  const channelField = h("div", { class: "field" }, h("label", { for: "find-channel" }, "Channel"), channel);
  by.addEventListener("change", () => { channelField.hidden = by.value !== "external_member_id"; });
  const form = h("form", { id: "find", class: "row" },
    h("div", { class: "field" }, h("label", { for: "find-by" }, "Find by"), by),
    channelField,
    h("div", { class: "field" }, h("label", { for: "find-value" }, "Value"), value),
    h("div", { class: "field" }, h("button", { type: "submit" }, "Find")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (by.value === "external_member_id") {
      q.set("external_member_id", value.value);
      if (channel.value) q.set("channel_id", channel.value);
    } else {
      q.set("attribute", by.value);
      q.set("value", value.value);
    }
    const page = await attempt(() => api("GET", org(`/chat/members?${q}`)));
    if (!page) return;
    results.replaceChildren(h("p", {}, `${page.members.length} member(s)`),
      table(["member", "name", "email", "mobile", "profile"], page.members.map((m) => [
        memberLink(m.id), memberName(m), m.display_email, m.display_mobile, profileLink(m.id, `#${m.profile_id}`),
      ]), { id: "find-table" }));
  });
  main.replaceChildren(h("h2", {}, "Find a member"),
    h("section", {}, form,
      h("p", { class: "hint" }, "Key values are normalized as for linking: ",
        h("code", {}, "0912 345 678"), " finds ", h("code", {}, "+886912345678"), ".")),
    results);
  value.focus();
  return null;
}

// ---------------------------------------------------------------------------------------
// Profile: members, merged view, graph with explanation paths. Keyed by one member's id,
// since profile ids change as members merge and split.

async function profile(main, arg) {
  const memberId = Number(arg);
  const heading = h("h2", {}, `Profile of member #${memberId}`);
  const summary = h("section", { id: "profile-summary", "aria-labelledby": "merged-h" });
  const graphBox = h("div", { id: "graph", role: "img", "aria-label": "Graph of the cluster" });
  const graphText = h("div", { id: "graph-text" });
  const explainBox = h("div", { id: "explain-result", role: "status" });
  const selA = h("select", { id: "explain-a", name: "a" });
  const selB = h("select", { id: "explain-b", name: "b" });
  const explainForm = h("form", { id: "explain", class: "row" },
    h("div", { class: "field" }, h("label", { for: "explain-a" }, "Member"), selA),
    h("div", { class: "field" }, h("label", { for: "explain-b" }, "and member"), selB),
    h("div", { class: "field" }, h("button", { type: "submit" }, "Explain")));
  const graphNote = h("p", { id: "graph-note", class: "hint", role: "status" });
  main.replaceChildren(heading, summary,
    h("section", { "aria-labelledby": "graph-h" }, h("h3", { id: "graph-h" }, "Graph of the cluster"),
      h("p", { class: "hint" }, "Members (circles) and key nodes (squares); a link joins a member to a key value it holds. Click two members, or pick them below, to highlight why they are, or are not, one profile."),
      h("div", { class: "legend" }, h("span", {}, "link"), h("span", { class: "l-refused" }, "refused link"),
        h("span", { class: "l-path" }, "explanation path")),
      graphNote, graphBox, explainForm, explainBox,
      h("details", {}, h("summary", {}, "Graph as text"), graphText)));

  let ids = new Set([memberId]);
  let graph = null;

  async function explain(a, b) {
    const e = await attempt(() => api("GET", org(`/chat/members/${a}/unification/explain?other=${b}`)));
    if (!e) return;
    graph.highlight(e.path);
    const steps = e.path.map((s, i) => i === 0 ? `#${s.member_id}`
      : `— ${s.attribute} ${s.value} → #${s.member_id}`).join(" ");
    explainBox.replaceChildren(h("p", {}, e.same_profile ? "One profile: " : "Different profiles. ", steps || "not linked"),
      e.refused ? h("p", { id: "explain-refused" }, `Refused link: member #${e.refused.member_id} holds ${e.refused.attribute} ${e.refused.value}, `
        + `but joining profile #${e.refused.other_profile_id} was refused (${e.refused.reason}).`) : "");
  }

  explainForm.addEventListener("submit", (e) => {
    e.preventDefault();
    if (selA.value && selB.value) explain(selA.value, selB.value);
  });

  async function load() {
    const [p, others, g] = await Promise.all([
      api("GET", org(`/chat/members/${memberId}/unify-profile`)),
      api("GET", org(`/chat/members/${memberId}/unification`)),
      api("GET", org(`/chat/members/${memberId}/unify-profile/graph`)),
    ]);
    ids = new Set([memberId, p.profile_id, ...p.member_ids]);
    for (const n of g.nodes) if (n.kind === "member") ids.add(n.member_id);
    heading.textContent = `Profile #${p.profile_id}`;
    summary.replaceChildren(
      h("h3", { id: "merged-h" }, "Merged view"),
      kv([...FIELDS.map((f) => [f, p[f]]), ["updated", p.updated_at]]),
      h("h3", {}, h("span", {}, "Members "), h("span", { id: "profile-size", class: "badge" }, p.member_ids.length)),
      table(["member", "source", "channel", "external id", "name", "last message"],
        [[memberLink(memberId), "", "", "", "this member", ""],
          ...others.unify_members.map((m) => [memberLink(m.member_id), m.source, m.channel_name,
            m.external_member_id, m.original_name, m.last_message_at])], { id: "profile-members" }));
    const members = g.nodes.filter((n) => n.kind === "member");
    const options = () => members.map((n) => h("option", { value: n.member_id }, `#${n.member_id} ${n.display_name || n.external_member_id}`));
    selA.replaceChildren(...options());
    selB.replaceChildren(...options());
    if (members.length > 1) selB.value = String(members[1].member_id);
    graphNote.textContent = g.truncated
      ? `The cluster is larger than the graph's bound: the ${members.length} nearest members are shown.`
      : `${members.length} member(s), ${g.nodes.length - members.length} key node(s), ${g.refused.length} refused link(s).`;
    if (graph) graph.destroy();
    graph = drawGraph(graphBox, g, memberId, (a, b) => { selA.value = a; selB.value = b; explain(a, b); });
    graphText.replaceChildren(
      h("ul", {}, g.edges.map((e) => h("li", { class: "graph-edge" }, `${e.from} — ${e.to}`)),
        g.refused.map((e) => h("li", { class: "graph-refused" }, `${e.from} ✕ ${e.to} (${e.reason})`))));
  }

  await load();
  // Any profile change may grow or cut the cluster the graph draws, not only changes of the
  // members on the page: re-read once a burst of events is over.
  let timer = null;
  const stop = app.feed.on((frame) => {
    if (frame.type === "merge_progress" || frame.type === "lagged") return;
    const soon = frame.type === "resync_required" || touches(frame, ids);
    clearTimeout(timer);
    timer = setTimeout(() => attempt(load), soon ? 50 : 300);
  });
  return () => { stop(); clearTimeout(timer); if (graph) graph.destroy(); };
}

// ---------------------------------------------------------------------------------------
// Member: attributes, manual lock, change / cancel unification, release of the lock.

async function member(main, arg) {
  const memberId = Number(arg);
  const setting = await api("GET", org("/organization/unify-scope-setting"));
  const body = h("div", {});
  main.replaceChildren(h("h2", {}, `Member #${memberId}`), body);
  let current = null;

  async function act(text, method, path, payload) {
    if (!(await confirmAction(text))) return;
    const m = await attempt(() => api(method, org(path), payload));
    if (m) render(m);
  }

  function render(m) {
    current = m;
    const keyChoices = setting.unify_keys.filter((k) => k !== "external_member_id");
    const key = h("select", { id: "change-key", name: "unify_key" },
      (keyChoices.length ? keyChoices : EDITABLE).map((k) => h("option", { value: k }, k)));
    const value = h("input", { id: "change-value", name: "value", required: true });
    const change = h("form", { id: "change", class: "row" },
      h("div", { class: "field" }, h("label", { for: "change-key" }, "Key"), key),
      h("div", { class: "field" }, h("label", { for: "change-value" }, "Value"), value),
      h("div", { class: "field" }, h("button", { type: "submit" }, "Change unification")));
    change.addEventListener("submit", (e) => {
      e.preventDefault();
      act(`Clear member #${m.id}'s keys and editable columns, set ${key.value} to "${value.value}" and lock its unification?`,
        "POST", `/chat/members/${m.id}/change-unification`, { unify_key: key.value, value: value.value });
    });
    body.replaceChildren(
      h("div", { class: "grid" },
        h("section", { "aria-labelledby": "attrs-h" }, h("h3", { id: "attrs-h" }, "Attributes"),
          kv([["source", m.source], ["channel", m.channel_id], ["external id", m.external_member_id],
            ["original name", m.original_name], ["username", m.username],
            ...FIELDS.map((f) => [f, m[f]]),
            ["profile", profileLink(m.id, `#${m.profile_id}`)],
            ["last message", m.last_message_at], ["updated", m.updated_at]])),
        h("section", { "aria-labelledby": "lock-h" }, h("h3", { id: "lock-h" }, "Unification"),
          h("p", {}, "Manual lock: ", h("span", { id: "lock", class: m.manual_unification ? "badge warn" : "badge" },
            m.manual_unification ? "locked by an operator" : "automatic")),
          change,
          h("div", { class: "row" },
            h("button", { type: "button", id: "cancel-unification", class: "danger",
              onclick: () => act(`Cancel member #${m.id}'s unification? Its unify keys are cleared and it becomes a profile of its own.`,
                "POST", `/chat/members/${m.id}/cancel-unification`) }, "Cancel unification"),
            h("button", { type: "button", id: "release-lock", class: "secondary", disabled: !m.manual_unification,
              onclick: () => act(`Release the lock on member #${m.id}? Automatic enrichment may write its keys again.`,
                "PATCH", `/chat/members/${m.id}`, { manual_unification: false }) }, "Release lock")))));
  }

  render(await api("GET", org(`/chat/members/${memberId}`)));
  return app.feed.on(async (frame) => {
    if (frame.type === "resync_required" || touches(frame, new Set([memberId, current && current.profile_id]))) {
      const m = await attempt(() => api("GET", org(`/chat/members/${memberId}`)));
      if (m) render(m);
    }
  });
}

// ---------------------------------------------------------------------------------------
// Import: upload NDJSON, follow the job.

async function importPage(main) {
  const file = h("input", { type: "file", id: "import-file", name: "file", accept: ".ndjson,.jsonl,application/x-ndjson",
    required: true, "aria-describedby": "import-hint" });
  const status = h("div", { id: "import-status", role: "status" });
  let stopped = false;
  const form = h("form", { id: "import" },
    h("div", { class: "field" }, h("label", { for: "import-file" }, "NDJSON file"), file,
      h("p", { class: "hint", id: "import-hint" }, "One member object (the body of POST /chat/members) per line.")),
    h("button", { type: "submit" }, "Upload"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!file.files.length) return;
    const accepted = await attempt(() => api("POST", org("/chat/members/import"), file.files[0], "application/x-ndjson"));
    if (!accepted) return;
    const progress = h("progress", { max: 1, value: 0, "aria-label": "Import progress" });
    const text = h("p", {});
    const errors = h("div", {});
    status.replaceChildren(h("h3", {}, `Job #${accepted.job_id}`), progress, text, errors);
    while (!stopped) {
      const job = await attempt(() => api("GET", org(`/imports/${accepted.job_id}`)));
      if (!job) return;
      progress.max = Math.max(1, job.total);
      progress.value = job.done + job.failed;
      text.textContent = `${job.status}: ${job.done} imported, ${job.failed} refused, ${job.total} read`;
      errors.replaceChildren(job.errors.length ? table(["line", "code", "message"],
        job.errors.slice(0, 20).map((x) => [x.line, x.code, x.message]), { id: "import-errors" }) : "");
      if (job.status !== "running") return;
      await new Promise((r) => setTimeout(r, 500));
    }
  });
  main.replaceChildren(h("h2", {}, "Import members"), h("section", {}, form), status);
  return () => { stopped = true; };
}

export const pages = { scope, find, profile, member, import: importPage };
