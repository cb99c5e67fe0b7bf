// gpuq dashboard: plain JS, no build step. It reads the same REST API as the CLI with the viewer's token,
// so a member sees only their projects' jobs and usage, and other projects' holdings as "other project".
//
// The token: typed once on the sign-in screen, kept in sessionStorage (this tab only, gone when it closes)
// and sent as an Authorization header. It is never put in a URL (so never in server or proxy logs, history
// or Referer), and a ?token= in the address is ignored and removed.
"use strict";

const TOKEN_KEY = "gpuq-token";
const OTHER = "other project";

// Stable project colours: the hue comes from a hash of the name (FNV-1a), the same for every viewer and
// every page load, whatever projects a viewer can see. Free capacity is light grey, "other project" hatched dark.
function hashOf(text) {
  let h = 0x811c9dc5;
  for (const ch of new TextEncoder().encode(text)) { h ^= ch; h = Math.imul(h, 0x01000193) >>> 0; }
  return h;
}
function colourOf(project) {
  if (project === OTHER) return "#5b6170";
  const h = hashOf(project);
  return `hsl(${h % 360}, ${55 + (h >>> 9) % 25}%, ${45 + (h >>> 17) % 15}%)`;
}

if (new URLSearchParams(location.search).has("token")) {
  history.replaceState(null, "", location.pathname + location.hash);  // never kept, never used
}
let token = sessionStorage.getItem(TOKEN_KEY) || "";
let me = null;  // GET /v1/tokens/me: the viewer's role and projects
let timer = null;

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${token}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET", headers, credentials: "omit",
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (response.status === 401) throw new Unauthorized("the token was refused (401): sign in again");
  if (!response.ok) {
    let detail = await response.text();
    try { detail = JSON.parse(detail).detail || detail; } catch (_) { /* plain text */ }
    throw new Error(`${response.status}: ${String(detail).slice(0, 200)}`);
  }
  return path === "/metrics" ? response.text() : response.json();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") Object.assign(node.style, v); else if (k in node) node[k] = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// SM busy share per GPU, from the Prometheus text (the one place it is published).
function busyByGpu(text) {
  const out = {};
  for (const line of text.split("\n")) {
    const m = line.match(/^gpuq_gpu_busy_ratio\{.*gpu="([^"]+)".*\} ([0-9.eE+-]+)$/);
    if (m) out[m[1]] = parseFloat(m[2]);
  }
  return out;
}

// A GPU's holders from /v1/nodes: always every holding; whose it is only where the viewer may see it.
function owned(h) {
  return { ...h, project: h.project || OTHER, label: h.project ? `${h.project}/${h.job_name}` : OTHER };
}

function cell(className, owner, busy, extra = {}) {
  return el("div", {
    className: className + (owner ? " held" : "") + (owner && owner.project === OTHER ? " other" : "") + (busy ? " busy" : ""),
    "data-project": owner ? owner.project : "", title: owner ? owner.label : "free",
    style: { background: owner ? colourOf(owner.project) : "", ...(extra.style || {}) },
    ...(owner && owner.job_id ? { "data-job": owner.job_id } : {}),
  }, ...(extra.children || []));
}

function drawGpu(gpu, busy) {
  const held = (gpu.holders || []).map(owned);
  const box = el("div", { className: "gpu", "data-gpu": gpu.uuid, "data-mode": gpu.mode },
    el("div", { className: "label", title: gpu.uuid }, `#${gpu.index} ${gpu.model} · ${gpu.mode}`));
  const busyShare = busy[gpu.uuid] || 0;
  if (gpu.mode === "mig") {
    // MIG: each instance drawn in its real memory slots (start .. start + size) of the 8 slots.
    const grid = el("div", { className: "mig" });
    for (const s of gpu.mig_instances || []) {
      const span = Math.min(8 - s.start, Math.max(1, Math.round((s.memory_mib || 0) / gpu.memory_mib * 8)));
      const owner = held.find(h => h.mig_start === s.start) || (s.held ? owned({ project: null }) : null);
      const slice = cell("slice", owner, owner && busyShare > 0.05, {
        style: { gridColumn: `${s.start + 1} / span ${span}` }, children: [s.profile] });
      slice.dataset.profile = s.profile;
      slice.title = `${s.profile} · ${owner ? owner.label : "free"}`;
      grid.append(slice);
    }
    box.append(grid);
  } else if (gpu.mode === "shared") {
    // Shared: 100 blocks, each coloured by the project holding it; busy blocks hatched in proportion.
    const grid = el("div", { className: "blocks" });
    const owners = [];
    for (const h of held) for (let i = 0; i < h.blocks; i++) owners.push(h);
    const busyBlocks = Math.round(busyShare * 100);
    for (let i = 0; i < 100; i++) grid.append(cell("block", owners[i], owners[i] && i < busyBlocks));
    box.append(grid);
  } else {
    const owner = held.find(h => h.kind === "gpu") || (gpu.held_whole ? owned({ project: null }) : null);
    box.append(cell("whole", owner, owner && busyShare > 0.05));
  }
  return box;
}

function nodeStatus(n) {
  if (n.status === "ready" && n.cordoned) return "cordoned";
  if (n.status === "ready" && n.no_work_reason) return n.no_work_reason;
  return n.status;
}

function drawCluster(nodes, busy) {
  const root = document.getElementById("cluster");
  root.replaceChildren();
  const seen = new Set();
  for (const n of nodes) {
    const gpus = el("div", { className: "gpus" });
    for (const g of n.gpus) {
      gpus.append(drawGpu(g, busy));
      for (const h of g.holders || []) seen.add(h.project || OTHER);
    }
    const why = n.no_work_reason ? ` · takes no new work (${n.no_work_reason})` : "";
    root.append(el("div", { className: "node" + (n.schedulable === false ? " unschedulable" : ""), "data-node": n.name,
      "data-status": nodeStatus(n) }, el("h3", {}, `${n.name} · ${nodeStatus(n)} · ${n.cpus} CPUs${why}`), gpus));
  }
  const legend = document.getElementById("legend");
  legend.replaceChildren(...[...seen].sort().flatMap(p => [el("span", { className: "swatch" + (p === OTHER ? " other" : ""),
    style: { background: colourOf(p) } }), p]), el("span", { className: "swatch free" }), "free");
}

function asks(r) {
  if (r.gpus) return `${r.gpus} GPU`;
  if (r.mig) return `${r.mig_count}× ${r.mig}`;
  if (r.blocks) return `${r.blocks} blocks`;
  return "CPU";
}

function jobLink(j) {
  return el("a", { href: `#job/${encodeURIComponent(j.id)}`, title: j.id }, j.name);
}

function drawQueue(jobs) {
  const body = document.querySelector("#queue tbody");
  body.replaceChildren(...jobs.map(j => el("tr", { "data-job": j.id },
    el("td", {}, jobLink(j)), el("td", {}, el("span", { className: "swatch", style: { background: colourOf(j.project) } }), j.project),
    el("td", {}, j.state + (j.held ? " (held)" : "")), el("td", {}, j.priority_class), el("td", {}, asks(j.resources)),
    el("td", {}, j.reason || ""))));
}

function drawUsage(byProject, byDay) {
  const body = document.querySelector("#usage tbody");
  const fmt = (x, d = 2) => (x ?? 0).toFixed(d);
  body.replaceChildren(...byProject.rows.map(r => el("tr", { "data-project": r.key },
    el("td", {}, el("span", { className: "swatch", style: { background: colourOf(r.key) } }), r.key),
    el("td", {}, fmt(r.gpu_equivalent_hours)), el("td", {}, fmt(r.gpu_hours)), el("td", {}, fmt(r.block_hours)),
    el("td", {}, fmt(r.mig_hours)), el("td", {}, fmt(r.cost)), el("td", {}, r.busy_share == null ? "–" : `${Math.round(r.busy_share * 100)}%`))));
  // Usage and cost over time: one column per day, stacked by project (each project's group_by=day).
  const chart = document.getElementById("usage-chart");
  const days = new Map();
  for (const [project, report] of byDay) {
    for (const r of report.rows) {
      if (!days.has(r.key)) days.set(r.key, []);
      days.get(r.key).push({ project, value: r.cost || r.gpu_equivalent_hours, row: r });
    }
  }
  const ordered = [...days.keys()].sort();
  const max = Math.max(1e-9, ...ordered.map(d => days.get(d).reduce((a, x) => a + x.value, 0)));
  chart.replaceChildren(...ordered.map(day => el("div", { className: "day", title: day, "data-day": day },
    ...days.get(day).map(x => el("div", {
      className: "bar", "data-project": x.project,
      title: `${day} ${x.project}: cost ${fmt(x.row.cost)}, ${fmt(x.row.gpu_equivalent_hours)} GPU-equiv h`,
      style: { height: `${Math.max(2, 90 * x.value / max)}px`, background: colourOf(x.project) },
    })))));
}

async function refreshOverview() {
  const [nodes, live, queued, admitted, metrics, byProject] = await Promise.all([
    api("/v1/nodes"), api("/v1/jobs?state=running&limit=500"), api("/v1/jobs?state=queued&limit=500"),
    api("/v1/jobs?state=admitted&limit=500"), api("/metrics").catch(() => ""), api("/v1/usage?group_by=project"),
  ]);
  const byDay = await Promise.all(byProject.projects.map(async p =>
    [p, await api(`/v1/projects/${encodeURIComponent(p)}/usage?group_by=day`)]));
  drawCluster(nodes, busyByGpu(metrics));
  drawQueue([...queued.data, ...admitted.data, ...live.data]);
  drawUsage(byProject, byDay);
}

// -- the job page: facts, timeline (GET /v1/jobs/{id}/events), logs, and the operator's actions ----------
const FACTS = ["id", "project", "workload", "state", "reason", "priority_class", "priority", "priority_override", "held",
  "exit_code", "attempt", "time_limit_s", "workdir", "submitted_at", "started_at", "finished_at"];

async function refreshJob(jobId) {
  const [job, events, logs] = await Promise.all([api(`/v1/jobs/${jobId}`), api(`/v1/jobs/${jobId}/events`),
    api(`/v1/jobs/${jobId}/logs`)]);
  document.getElementById("job-title").replaceChildren(
    el("span", { className: "swatch", style: { background: colourOf(job.project) } }), `${job.name} · ${job.state}`);
  const facts = document.getElementById("job-facts");
  facts.replaceChildren(...FACTS.flatMap(k => [el("dt", {}, k), el("dd", { "data-fact": k }, String(job[k] ?? "–"))]),
    el("dt", {}, "asks"), el("dd", {}, asks(job.resources)),
    el("dt", {}, "command"), el("dd", {}, el("code", {}, JSON.stringify(job.command))),
    el("dt", {}, "labels"), el("dd", { "data-fact": "labels" },
      Object.entries(job.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–"),
    ...(job.volumes || []).map(v => [el("dt", {}, "volume"),
      el("dd", {}, `${v.host_path} → ${v.container_path} (${v.read_only ? "ro" : "rw"})`)]).flat(),
    ...job.allocation.map(a => [el("dt", {}, "allocation"), el("dd", {}, `${a.node} ${a.kind} ${a.gpu_uuid || ""}`)]).flat());
  document.querySelector("#timeline tbody").replaceChildren(...events.data.map(e => el("tr", { "data-event": e.event },
    el("td", {}, new Date(e.at).toLocaleString()), el("td", {}, String(e.attempt)), el("td", {}, e.event),
    el("td", {}, `${e.from_state || "new"} → ${e.to_state}`), el("td", {}, e.actor),
    el("td", {}, [e.cause ? `[${e.cause}] ` : "", e.reason || ""].join("")))));
  document.getElementById("stdout").textContent = logs.stdout;
  document.getElementById("stderr").textContent = logs.stderr;
  document.getElementById("job-actions").hidden = !(me && ["admin", "operator"].includes(me.role));
  document.getElementById("action-priority").placeholder = String(job.priority_override ?? job.priority);
}

async function act(action) {
  const jobId = currentJob();
  const reason = document.getElementById("action-reason").value;
  const out = document.getElementById("action-result");
  try {
    if (action === "priority") {
      const value = document.getElementById("action-priority").value;
      await api(`/v1/jobs/${jobId}`, { method: "PATCH", body: { priority: value === "" ? null : Number(value), reason } });
    } else if (action === "reclaim") {
      await api("/v1/reclaim", { method: "POST", body: { job: jobId, requeue: true, reason } });
    } else {
      await api(`/v1/jobs/${jobId}/${action}`, { method: "POST", body: { reason } });
    }
    await refreshJob(jobId);  // first: "done" means the page already shows what the action changed
    out.textContent = `${action}: done`;
    out.className = "ok";
    out.dataset.done = action;
  } catch (err) {
    out.textContent = `${action}: ${err.message || err}`;
    out.className = "error";
  }
}

// -- routing, sign-in, refresh -------------------------------------------------------------------------
function currentJob() {
  const m = location.hash.match(/^#job\/(.+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

function show(screen) {
  for (const id of ["signin-screen", "overview", "job-page"]) document.getElementById(id).hidden = id !== screen;
  document.getElementById("signout").hidden = screen === "signin-screen";
}

function signedOut(message = "") {
  token = "";
  me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById("who").textContent = "";
  document.getElementById("signin-error").textContent = message;
  document.body.dataset.loaded = "";
  show("signin-screen");
  document.getElementById("token").focus();
}

async function refresh() {
  const status = document.getElementById("status");
  if (!token) return signedOut();
  try {
    me = me || await api("/v1/tokens/me");
    document.getElementById("who").textContent = `${me.name || me.id} · ${me.role}` +
      (me.projects && me.projects.length ? ` · ${me.projects.join(", ")}` : "");
    const jobId = currentJob();
    if (jobId) { show("job-page"); await refreshJob(jobId); } else { show("overview"); await refreshOverview(); }
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.className = "";
    document.body.dataset.loaded = "1";
    document.body.dataset.page = jobId ? "job" : "overview";
  } catch (err) {
    if (err instanceof Unauthorized) return signedOut(err.message);
    status.textContent = String(err.message || err);
    status.className = "error";
  }
}

document.getElementById("signin").addEventListener("submit", ev => {
  ev.preventDefault();
  const input = document.getElementById("token");
  token = input.value.trim();
  input.value = "";  // not left in the page
  me = null;
  sessionStorage.setItem(TOKEN_KEY, token);
  refresh();
});
document.getElementById("signout").addEventListener("click", () => signedOut());
for (const button of document.querySelectorAll("#job-actions button[data-action]")) {
  button.addEventListener("click", () => act(button.dataset.action));
}
window.addEventListener("hashchange", () => { document.body.dataset.loaded = ""; refresh(); });
refresh();
timer = setInterval(() => { if (token) refresh(); }, 5000);
