// gpuq dashboard: blocks inside a shared MIG slot. Uses app.js's drawGpu(), el(), owned(), cell() and colourOf().
//
// A MIG instance in shared mode hands out blocks like a shared GPU does, but of that instance: 100 blocks =
// the instance's SMs (sm_count in /v1/nodes), its memory = the instance's. app.js draws each instance in its
// memory slots; here a shared one gets its 100 blocks drawn inside that slot, each coloured by the project
// holding it (the holders with kind "blocks" and that mig_start), free ones light grey.
"use strict";

function migBlocks(gpu, instance, held) {
  const owners = [];
  for (const h of held) {
    if (h.kind === "blocks" && h.mig_start === instance.start) for (let i = 0; i < h.blocks; i++) owners.push(h);
  }
  const slots = Math.max(1, Math.round((instance.memory_mib || 0) / gpu.memory_mib * 8));
  const columns = Math.min(10, 4 * slots);  // narrow slots get tall grids: 100 blocks always
  const grid = el("div", { className: "mig-blocks", style: {
    display: "grid", gridTemplateColumns: `repeat(${columns}, 1fr)`, gap: "1px", height: "100%",
    writingMode: "horizontal-tb",
  } });
  for (let i = 0; i < 100; i++) grid.append(cell("block", owners[i], false, { style: { borderRadius: "1px" } }));
  return grid;
}

(function drawSharedMigSlots() {
  const plain = drawGpu;
  // Every caller of drawGpu (drawCluster) resolves it through the global binding, so this wraps them all.
  drawGpu = function drawGpuWithSharedMig(gpu, busy) {  // eslint-disable-line no-global-assign
    const box = plain(gpu, busy);
    if (gpu.mode !== "mig") return box;
    const held = (gpu.holders || []).map(owned);
    const slices = box.querySelectorAll(".mig > .slice");
    (gpu.mig_instances || []).forEach((instance, i) => {
      const slice = slices[i];
      if (!slice || instance.mode !== "shared") return;
      slice.className = "slice shared";
      slice.style.background = "";
      slice.style.padding = "1px";
      slice.dataset.mode = "shared";
      slice.dataset.start = String(instance.start);
      delete slice.dataset.job;
      slice.title = `${instance.profile} shared: ${instance.used_blocks || 0}/100 blocks held ` +
        `(100 blocks = its ${instance.sm_count} SMs), ${instance.used_memory_mib || 0}/${instance.memory_mib} MiB`;
      slice.replaceChildren(migBlocks(gpu, instance, held));
    });
    return box;
  };
})();
