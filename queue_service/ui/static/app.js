// gpuq dashboard: plain JS, no build step. It reads the same REST API as the CLI, with the viewer's token
// (from ?token=, else localStorage), so a member sees only their projects' jobs and usage.
"use strict";

const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
const colours = new Map();
function colourOf(project) {
  if (!colours.has(project)) colours.set(project, PALETTE[colours.size % PALETTE.length]);
  return colours.get(project);
}

const params = new URLSearchParams(location.search);
let token = params.get("token") || localStorage.getItem("gpuq-token") || "";

async function api(path) {
  const response = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${(await response.text()).slice(0, 120)}`);
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

// Who holds what: per physical GPU, a list of {project, job, kind, blocks, mig_start, mig_profile}.
function holdings(jobs, nodes) {
  const migToGpu = {};
  for (const n of nodes) for (const g of n.gpus) for (const s of g.mig_layout || []) if (s.uuid) migToGpu[s.uuid] = g.uuid;
  const byGpu = {};
  for (const job of jobs) for (const a of job.allocation || []) {
    if (!a.gpu_uuid) continue;
    const gpu = migToGpu[a.gpu_uuid] || a.gpu_uuid;
    (byGpu[gpu] ||= []).push({ project: job.project, job: job.id, name: job.name, ...a });
  }
  return byGpu;
}

function drawGpu(gpu, held, busy) {
  const box = el("div", { className: "gpu", "data-gpu": gpu.uuid, "data-mode": gpu.mode },
    el("div", { className: "label", title: gpu.uuid }, `#${gpu.index} ${gpu.model} · ${gpu.mode}`));
  const busyShare = busy[gpu.uuid] || 0;
  if (gpu.mode === "mig") {
    // MIG: each instance drawn in its real memory slots (start .. start + size) of the 8 slots.
    const grid = el("div", { className: "mig" });
    for (const s of gpu.mig_layout || []) {
      // Its width in memory slots: its memory over the GPU's, of 8 slots ("3g.40gb" on 80 GB: 4).
      const gb = parseFloat((s.profile.match(/\.(\d+)gb$/) || [0, 0])[1]);
      const span = Math.min(8 - s.start, Math.max(1, Math.round(gb * 1024 / gpu.memory_mib * 8)));
      const owner = held.find(h => h.mig_start === s.start);
      const slice = el("div", {
        className: "slice" + (owner && busyShare > 0.05 ? " busy" : ""), title: owner ? `${s.profile} · ${owner.project}/${owner.name}` : `${s.profile} · free`,
        "data-project": owner ? owner.project : "", "data-profile": s.profile,
        style: { gridColumn: `${s.start + 1} / span ${span}`, background: owner ? colourOf(owner.project) : "" },
      }, s.profile);
      grid.append(slice);
    }
    box.append(grid);
  } else if (gpu.mode === "shared") {
    // Shared: 100 blocks, each coloured by the project holding it; busy blocks hatched in proportion.
    const grid = el("div", { className: "blocks" });
    const owners = [];
    for (const h of held) for (let i = 0; i < h.blocks; i++) owners.push(h);
    const busyBlocks = Math.round(busyShare * 100);
    for (let i = 0; i < 100; i++) {
      const owner = owners[i];
      grid.append(el("div", {
        className: "block" + (owner && i < busyBlocks ? " busy" : ""), "data-project": owner ? owner.project : "",
        title: owner ? `${owner.project}/${owner.name}` : "free", style: { background: owner ? colourOf(owner.project) : "" },
      }));
    }
    box.append(grid);
  } else {
    const owner = held.find(h => h.kind === "gpu");
    box.append(el("div", {
      className: "whole" + (owner && busyShare > 0.05 ? " busy" : ""), "data-project": owner ? owner.project : "",
      title: owner ? `${owner.project}/${owner.name}` : "free", style: { background: owner ? colourOf(owner.project) : "" },
    }));
  }
  return box;
}

function drawCluster(nodes, byGpu, busy) {
  const root = document.getElementById("cluster");
  root.replaceChildren();
  for (const n of nodes) {
    const gpus = el("div", { className: "gpus" });
    for (const g of n.gpus) gpus.append(drawGpu(g, byGpu[g.uuid] || [], busy));
    root.append(el("div", { className: "node", "data-node": n.name },
      el("h3", {}, `${n.name} · ${n.status}${n.cordoned ? " (cordoned)" : ""} · ${n.cpus} CPUs`), gpus));
  }
  const legend = document.getElementById("legend");
  legend.replaceChildren(...[...colours.entries()].flatMap(([p, c]) => [el("span", { className: "swatch", style: { background: c } }), p]));
}

function asks(r) {
  if (r.gpus) return `${r.gpus} GPU`;
  if (r.mig) return `${r.mig_count}× ${r.mig}`;
  if (r.blocks) return `${r.blocks} blocks`;
  return "CPU";
}

function drawQueue(jobs) {
  const body = document.querySelector("#queue tbody");
  body.replaceChildren(...jobs.map(j => el("tr", { "data-job": j.id },
    el("td", {}, j.name), el("td", {}, el("span", { className: "swatch", style: { background: colourOf(j.project) } }), j.project),
    el("td", {}, j.state), el("td", {}, j.priority_class), el("td", {}, asks(j.resources)), el("td", {}, j.reason || ""))));
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

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [nodes, live, queued, metrics, byProject] = await Promise.all([
      api("/v1/nodes"), api("/v1/jobs?state=running&limit=500"), api("/v1/jobs?state=queued&limit=500"),
      api("/metrics").catch(() => ""), api("/v1/usage?group_by=project"),
    ]);
    const byDay = await Promise.all(byProject.projects.map(async p =>
      [p, await api(`/v1/projects/${encodeURIComponent(p)}/usage?group_by=day`)]));
    const admitted = await api("/v1/jobs?state=admitted&limit=500");
    const holding = [...live.data, ...admitted.data];
    for (const p of byProject.projects) colourOf(p);
    drawCluster(nodes, holdings(holding, nodes), busyByGpu(metrics));
    drawQueue([...queued.data, ...admitted.data, ...live.data]);
    drawUsage(byProject, byDay);
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.className = "";
    document.body.dataset.loaded = "1";
  } catch (err) {
    status.textContent = String(err.message || err);
    status.className = "error";
  }
}

document.getElementById("login").addEventListener("submit", ev => {
  ev.preventDefault();
  token = document.getElementById("token").value.trim();
  localStorage.setItem("gpuq-token", token);
  refresh();
});
document.getElementById("token").value = token;
refresh();
setInterval(refresh, 5000);
