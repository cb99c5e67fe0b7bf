// gpuq dashboard: the authority to say no. Uses app.js's api(), el(), currentJob(), refreshJob(), me and token.
//
// On the page of a job that waits in pending_approval, an admin or an approver of the job's project
// (a member token made with approver: true) gets Approve and Deny buttons, with a reason; each is the
// REST call (POST /v1/jobs/{id}/approve | deny), audited and a job event like it. A denial needs a reason.
"use strict";

function mayDecide(job) {
  if (!me) return false;
  return me.role === "admin" || (me.role === "member" && me.approver && (me.projects || []).includes(job.project));
}

async function decide(jobId, action) {
  const reason = document.getElementById("approval-reason").value;
  const out = document.getElementById("approval-result");
  try {
    await api(`/v1/jobs/${jobId}/${action}`, { method: "POST", body: { reason } });
    await refreshJob(jobId);  // "done" only once the page shows the new state
    await drawApproval(jobId);
    out.textContent = `${action}: done`;
    out.className = "ok";
    out.dataset.done = action;
  } catch (err) {
    out.textContent = `${action}: ${err.message || err}`;
    out.className = "error";
  }
}

async function drawApproval(jobId) {
  const job = await api(`/v1/jobs/${jobId}`);
  let section = document.getElementById("approval-section");
  const pending = job.state === "pending_approval" && mayDecide(job);
  if (!pending) { if (section) section.hidden = true; return; }
  if (!section) {
    section = el("section", { id: "approval-section" },
      el("h3", {}, "Waiting for approval ", el("small", {}, "(each decision audited, like the REST call)")),
      el("p", { id: "approval-why" }),
      el("label", {}, "Reason ", el("input", { id: "approval-reason", size: 40, placeholder: "why (a denial needs one)" })),
      el("div", { className: "buttons" },
        el("button", { type: "button", "data-approval": "approve" }, "Approve"),
        el("button", { type: "button", "data-approval": "deny" }, "Deny")),
      el("p", { id: "approval-result", role: "status" }));
    document.getElementById("job-facts").after(section);
    for (const button of section.querySelectorAll("button[data-approval]")) {
      button.addEventListener("click", () => decide(currentJob(), button.dataset.approval));
    }
  }
  section.hidden = false;
  document.getElementById("approval-why").textContent = job.reason;
}

async function refreshApproval() {
  if (!token) return;
  const jobId = currentJob();
  if (!jobId) return;
  try { await drawApproval(jobId); } catch (err) { /* app.js reports the page's own errors */ }
}

window.addEventListener("hashchange", refreshApproval);
refreshApproval();
setInterval(refreshApproval, 5000);
