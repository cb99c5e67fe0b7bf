// gpuq dashboard: measured use fed back. Uses app.js's api(), el(), currentJob() and token.
//
// - the overview gets "GPU busy time as a share of allocated time", per project and cluster-wide
//   (GET /v1/usage/efficiency?group_by=project: SM-busy GPU time over the held GPU time samples covered);
// - the job page gets the job's efficiency (busy share, GPU memory peak and mean against what it holds),
//   its idle flag and the right-size hint (GET /v1/jobs/{id}/efficiency).
"use strict";

function pctOf(x) { return x === null || x === undefined ? "–" : `${Math.round(100 * x)} %`; }

function sectionAfter(id, anchor, title) {
  let section = document.getElementById(id);
  if (!section) {
    section = el("section", { id }, el("h2", {}, title), el("div", { className: "body" }));
    anchor.after(section);
  }
  return section.querySelector(".body");
}

function busyBar(share) {
  const width = share === null || share === undefined ? 0 : Math.max(1, Math.round(100 * share));
  return el("span", { className: "busy-bar", title: pctOf(share), style: {
    display: "inline-block", width: "120px", height: "0.8em", background: "#e3e5ea", verticalAlign: "middle",
  } }, el("span", { style: { display: "block", width: `${width}%`, height: "100%", background: "#3b7d4f" } }));
}

async function drawBusyShare() {
  const report = await api("/v1/usage/efficiency?group_by=project");
  const body = sectionAfter("busy-section", document.getElementById("usage-section"),
    "GPU busy time as a share of allocated time");
  const row = (r, total) => el("tr", { "data-busy": r.key, className: total ? "total" : "" },
    el("td", {}, total ? "cluster" : r.key), el("td", {}, busyBar(r.busy_share), " ", pctOf(r.busy_share)),
    el("td", {}, (r.allocated_gpu_s / 3600).toFixed(2)), el("td", {}, (r.used_gpu_s / 3600).toFixed(2)),
    el("td", {}, pctOf(r.coverage)));
  body.replaceChildren(el("table", { id: "busy" },
    el("thead", {}, el("tr", {}, ...["project", "busy / allocated", "allocated GPU h", "busy GPU h", "measured"]
      .map(h => el("th", {}, h)))),
    el("tbody", {}, ...report.rows.map(r => row(r, false)), row(report.total, true))));
}

async function drawJobEfficiency(jobId) {
  const e = await api(`/v1/jobs/${jobId}/efficiency`);
  const facts = document.getElementById("job-facts").closest("section");
  const body = sectionAfter("efficiency-section", facts, "Efficiency");
  if (!e.measured) { body.replaceChildren(el("p", {}, "Not measured: no NVML samples yet.")); return; }
  const memory = `peak ${e.peak_memory_mib} MiB` + (e.mean_memory_mib === null ? "" : `, mean ${Math.round(e.mean_memory_mib)} MiB`) +
    (e.allocated_memory_mib ? ` of ${e.allocated_memory_mib} MiB (${pctOf(e.memory_share)})` : "");
  body.replaceChildren(el("dl", { id: "efficiency" },
    el("dt", {}, "busy"), el("dd", { "data-eff": "busy" }, busyBar(e.busy_share), " ", pctOf(e.busy_share),
      ` of what it held; 90 % of its run at or below ${pctOf(e.p90_busy_share)}`),
    el("dt", {}, "GPU memory"), el("dd", { "data-eff": "memory" }, memory),
    el("dt", {}, "idle"), el("dd", { "data-eff": "idle" }, e.idle ? `yes, since ${new Date(e.idle_since).toLocaleString()}` : "no"),
    el("dt", {}, "right-size"), el("dd", { "data-eff": "hint" }, e.hint || "well sized")));
}

async function refreshEfficiency() {
  if (!token) return;
  try {
    const jobId = currentJob();
    if (jobId) await drawJobEfficiency(jobId); else await drawBusyShare();
  } catch (err) { /* app.js reports errors of the page itself; this block just waits for the next refresh */ }
}

window.addEventListener("hashchange", refreshEfficiency);
refreshEfficiency();
setInterval(refreshEfficiency, 5000);
