"""Replay of the openb production trace (Alibaba, FGD paper, ATC'23).

Follows /work/shared/traces/openb/README.md exactly:

1. per seed, shuffle the tasks, then append tasks drawn uniformly with
   replacement until the total GPU request would pass 1.3 × capacity;
2. tasks arrive one at a time and never leave; nodes are filtered (free CPU,
   free memory, allowed model, k GPUs each with enough free share), every
   feasible node is scored, the highest wins; a task fitting nowhere is
   dropped but still counts as arrived;
3. ties go to the node first in one random node order drawn per seed;
4. after every arrival the arrived and allocated GPU shares are recorded; the
   figure at X % is the mean allocation ratio over arrivals whose rounded
   arrived percentage is X.

Every GPU behaves as the paper's: a sharing task takes ``gpu_milli`` of one
GPU, a whole-GPU task needs GPUs that are entirely free. GPU memory is not in
the trace and is ignored. ``gpu_milli`` is in thousandths of a GPU; it maps
exactly onto gpuq's blocks (``blocks = gpu_milli / 10``).

Array encoding (:func:`encode_trace`), all 1-D numpy arrays:

* nodes: ``cpu`` int64 milli, ``mem`` int64 MiB, ``ngpu`` int64 (0..8),
  ``model`` int64 (bit index into the model list);
* tasks: ``cpu`` int64, ``mem`` int64, ``ngpu`` int64, ``milli`` int64 (per GPU,
  1000 for whole GPUs, 0 for CPU-only), ``models`` int64 bitmask of allowed
  models (all ones = any);
* target workload shapes: ``cpu``, ``milli``, ``ngpu``, ``models`` as above and
  ``p`` float64 (frequency over all tasks of the original trace).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from partitioner.policies import gpuq_rule

__all__ = ["LEVELS", "Trace", "cli", "cpu_bound", "fgd_prefix", "find_trace_dir", "gpuq_variant", "load_trace",
           "run_policy", "sliver_heavy", "target_shapes", "task_requests", "workload"]

LEVELS = (80, 90, 95, 100, 110, 120)
POLICY_IDS = {"random": 0, "best-fit": 1, "fgd": 2, "gpuq": 3}
KINDS = ("cpu-only", "sharing", "one-gpu", "multi-gpu")
# gpuq's rule per workload lives in partitioner.policies.gpuq_rule (the live Packer takes it from there too)
GPUQ_LEVELS = gpuq_rule.GPUQ_LEVELS  # ⌊30·σ(ΔF/1000)⌋ for the multi-task term (see docs/partitioner.md)
GPUQ_VARIANT = gpuq_rule.VARIANT_SUMMED  # FGD fragment + CPU-bounded multi-task fragment, under the load rule
GPUQ_LEX = gpuq_rule.VARIANT_LEX  # FGD's score first, the multi-task fragment's among its ties (kernels.replay)
GPUQ_LEX_MIN_HALF = gpuq_rule.LEX_MIN_HALF
GPUQ_COVERAGE = gpuq_rule.GPUQ_COVERAGE  # gpuq's target workload covers 98 % of tasks (FGD: 95 %)
GPUQ_PINNED_LIMIT = gpuq_rule.PINNED_LIMIT
ALL_MODELS = np.int64(-1)  # every bit set: any model


SHIPPED_TRACE_DIR = Path(__file__).resolve().parent / "traces" / "openb"  # gzipped CSVs, CC BY 4.0 (its README)


def find_trace_dir() -> Path | None:
    """``$GPUQ_TRACE_DIR``, else the trace shipped in the package, else a ``shared/traces/openb`` walking up."""
    env = os.environ.get("GPUQ_TRACE_DIR")
    if env:
        return Path(env)
    if SHIPPED_TRACE_DIR.is_dir():
        return SHIPPED_TRACE_DIR
    for base in (Path.cwd(), Path(__file__).resolve().parent):
        for parent in (base, *base.parents):
            candidate = parent / "shared" / "traces" / "openb"
            if candidate.is_dir():
                return candidate
    return None


@dataclass(frozen=True)
class Trace:
    """The node list and the task list as arrays (see the module docstring)."""

    node_cpu: np.ndarray
    node_mem: np.ndarray
    node_ngpu: np.ndarray
    node_model: np.ndarray
    task_cpu: np.ndarray
    task_mem: np.ndarray
    task_ngpu: np.ndarray
    task_milli: np.ndarray
    task_models: np.ndarray
    model_names: tuple[str, ...]

    @property
    def capacity_milli(self) -> int:
        """Total GPU capacity in thousandths."""
        return int(self.node_ngpu.sum()) * 1000

    @property
    def task_request(self) -> np.ndarray:
        """GPU request of each task in thousandths."""
        return self.task_ngpu * self.task_milli

    @property
    def task_kind(self) -> np.ndarray:
        """0 cpu-only, 1 sharing, 2 one whole GPU, 3 multi-GPU."""
        kind = np.where(self.task_ngpu == 0, 0, np.where(self.task_ngpu > 1, 3, np.where(self.task_milli < 1000, 1, 2)))
        return kind.astype(np.int64)


def trace_file(trace_dir: Path, name: str) -> Path:
    """``name`` in ``trace_dir``, or its gzipped copy (``name.gz``, as the package ships it)."""
    plain = trace_dir / name
    return plain if plain.exists() or not (trace_dir / f"{name}.gz").exists() else trace_dir / f"{name}.gz"


def open_csv(path: Path) -> IO[str]:
    """A CSV file for reading, gunzipped on the fly when it ends in ``.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def load_trace(nodes_csv: Path, tasks_csv: Path) -> Trace:
    """Read the openb CSVs into a :class:`Trace`."""
    with open_csv(nodes_csv) as fh:
        nodes = list(csv.DictReader(fh))
    with open_csv(tasks_csv) as fh:
        tasks = list(csv.DictReader(fh))
    names = sorted({r["model"] for r in nodes if r.get("model")})
    index = {name: i for i, name in enumerate(names)}
    if len(names) > 62:
        raise ValueError("more than 62 GPU models do not fit the model bitmask")

    def mask(spec: str) -> int:
        if not spec.strip():
            return int(ALL_MODELS)
        bits = 0
        for name in spec.split("|"):
            if name.strip() in index:
                bits |= 1 << index[name.strip()]
        return bits

    ngpu = np.array([int(t["num_gpu"]) for t in tasks], dtype=np.int64)
    milli = np.array([int(t["gpu_milli"]) for t in tasks], dtype=np.int64)
    milli = np.where(ngpu == 0, 0, np.where(ngpu > 1, 1000, milli))
    return Trace(
        node_cpu=np.array([int(r["cpu_milli"]) for r in nodes], dtype=np.int64),
        node_mem=np.array([int(r["memory_mib"]) for r in nodes], dtype=np.int64),
        node_ngpu=np.array([int(r["gpu"]) for r in nodes], dtype=np.int64),
        node_model=np.array([index.get(r["model"], 0) for r in nodes], dtype=np.int64),
        task_cpu=np.array([int(t["cpu_milli"]) for t in tasks], dtype=np.int64),
        task_mem=np.array([int(t["memory_mib"]) for t in tasks], dtype=np.int64),
        task_ngpu=ngpu,
        task_milli=milli,
        task_models=np.array([mask(t.get("gpu_spec", "")) for t in tasks], dtype=np.int64),
        model_names=tuple(names),
    )


def target_shapes(trace: Trace, coverage: float = 0.95) -> dict[str, np.ndarray]:
    """FGD's target workload: most frequent (CPU, share, count, models) shapes covering ``coverage``.

    Frequencies are over all tasks (not renormalised over the kept shapes),
    as the paper's simulator does; ties in frequency keep first-seen order.
    """
    columns = (trace.task_cpu, trace.task_milli, trace.task_ngpu, trace.task_models)
    keys = list(zip(*(column.tolist() for column in columns), strict=True))
    total = len(keys)
    chosen = gpuq_rule.most_common_covering(Counter(keys), coverage)
    return {
        "cpu": np.array([k[0] for k, _ in chosen], dtype=np.int64),
        "milli": np.array([k[1] for k, _ in chosen], dtype=np.int64),
        "ngpu": np.array([k[2] for k, _ in chosen], dtype=np.int64),
        "models": np.array([k[3] for k, _ in chosen], dtype=np.int64),
        "p": np.array([c / total for _, c in chosen], dtype=np.float64),
    }


def workload(shapes: dict[str, np.ndarray]) -> gpuq_rule.TargetWorkload:
    """Target shapes (:func:`target_shapes`) as gpuq's rule reads them (a shape is pinned unless any model will do)."""
    return gpuq_rule.TargetWorkload(p=shapes["p"], ngpu=shapes["ngpu"], milli=shapes["milli"], cpu=shapes["cpu"],
                                    pinned=shapes["models"] != ALL_MODELS)


def pinned_workload(shapes: dict[str, np.ndarray]) -> bool:
    """:func:`partitioner.policies.gpuq_rule.pinned_workload` of ``shapes``."""
    return gpuq_rule.pinned_workload(workload(shapes))


def cpu_bound(trace: Trace, shapes: dict[str, np.ndarray]) -> bool:
    """:func:`partitioner.policies.gpuq_rule.cpu_bound` of ``shapes`` on ``trace``'s cluster (every node's CPU)."""
    return gpuq_rule.cpu_bound(workload(shapes), trace.capacity_milli, int(trace.node_cpu.sum()))


def sliver_heavy(shapes: dict[str, np.ndarray]) -> bool:
    """:func:`partitioner.policies.gpuq_rule.sliver_heavy` of ``shapes``."""
    return gpuq_rule.sliver_heavy(workload(shapes))


def gpuq_variant(trace: Trace, shapes: dict[str, np.ndarray]) -> int:
    """gpuq's rule for a target workload (``shapes``, gpuq's 98 %) on ``trace``'s cluster.

    :func:`partitioner.policies.gpuq_rule.choose_variant`, the function the live ``Packer`` calls too.
    """
    return gpuq_rule.choose_variant(workload(shapes), trace.capacity_milli, int(trace.node_cpu.sum()),
                                    fgd_prefix(trace, shapes) >= 0)


def fgd_prefix(trace: Trace, shapes: dict[str, np.ndarray]) -> int:
    """How many of ``shapes`` are FGD's target workload (its 95 % shapes, a prefix of gpuq's 98 %); -1 if not a prefix.

    gpuq's load rule (``kernels.replay.multi_task_on``) scores with those first shapes only while it is off.
    """
    fgd = target_shapes(trace, gpuq_rule.FGD_COVERAGE)
    n = len(fgd["p"])
    if n > len(shapes["p"]):
        return -1
    same = all(np.array_equal(fgd[c], shapes[c][:n]) for c in ("cpu", "milli", "ngpu", "models", "p"))
    return n if same else -1


def task_requests(trace: Trace, tasks: np.ndarray | None = None) -> list:
    """Tasks ``tasks`` (indices, default all) as live :class:`partitioner.types.Request` values.

    As the queued replay maps them: CPU-only as CPU, a sharing task as ``gpu_milli / 10`` blocks,
    whole-GPU tasks as whole GPUs; model pins become ``gpu_models`` (``trace.model_names``).
    """
    from partitioner.types import Request

    idx = np.arange(trace.task_cpu.shape[0]) if tasks is None else tasks
    out = []
    for t in idx.tolist():
        cpu, mem, ngpu, milli = (int(trace.task_cpu[t]), int(trace.task_mem[t]), int(trace.task_ngpu[t]),
                                 int(trace.task_milli[t]))
        mask = int(trace.task_models[t])
        models = () if mask == ALL_MODELS or ngpu == 0 else tuple(
            name for i, name in enumerate(trace.model_names) if (mask >> i) & 1)
        if ngpu == 0:
            out.append(Request(cpus_milli=cpu, memory_mib=mem))
        elif ngpu == 1 and milli < 1000:
            out.append(Request(blocks=max(1, milli // 10), cpus_milli=cpu, memory_mib=mem, gpu_models=models))
        else:
            out.append(Request(gpus=ngpu, cpus_milli=cpu, memory_mib=mem, gpu_models=models))
    return out


def arrival_order(trace: Trace, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(task indices in arrival order, node order) for ``seed`` (step 1 and 3 of the protocol)."""
    rng = np.random.default_rng(seed)
    n_tasks = trace.task_cpu.shape[0]
    order = rng.permutation(n_tasks)
    request = trace.task_request
    limit = 1.3 * trace.capacity_milli
    total = int(request.sum())
    extra: list[int] = []
    while True:
        i = int(rng.integers(n_tasks))
        if total + request[i] > limit:
            break
        total += int(request[i])
        extra.append(i)
    node_order = rng.permutation(trace.node_cpu.shape[0])
    return np.concatenate([order, np.array(extra, dtype=np.int64)]).astype(np.int64), node_order.astype(np.int64)


def run_policy(trace: Trace, policy: str, seed: int, shapes: dict[str, np.ndarray] | None = None,
               tie_weight: float = GPUQ_LEVELS, variant: int | None = None) -> dict:
    """One replay of ``trace`` under ``policy`` for ``seed``; returns the figures of that run.

    ``variant`` (gpuq's rule) defaults to :func:`gpuq_variant` of the trace and shapes.
    """
    from partitioner.kernels.replay import replay

    if shapes is None:
        shapes = target_shapes(trace, GPUQ_COVERAGE if policy == "gpuq" else 0.95)
    if variant is None:
        variant = gpuq_variant(trace, shapes)
    n_fgd = fgd_prefix(trace, shapes) if policy == "gpuq" else -1
    tasks, node_order = arrival_order(trace, seed)
    out_node = np.full(tasks.shape[0], -1, dtype=np.int64)
    out_gpu = np.full(tasks.shape[0], -1, dtype=np.int64)
    started = time.perf_counter()
    replay(
        trace.node_cpu, trace.node_mem, trace.node_ngpu, trace.node_model, node_order,
        trace.task_cpu[tasks], trace.task_mem[tasks], trace.task_ngpu[tasks], trace.task_milli[tasks],
        trace.task_models[tasks],
        shapes["cpu"], shapes["milli"], shapes["ngpu"], shapes["models"], shapes["p"],
        POLICY_IDS[policy], seed, tie_weight, variant, out_node, out_gpu, n_fgd,
    )
    seconds = time.perf_counter() - started
    return summarize(trace, tasks, out_node, seconds)


def summarize(trace: Trace, tasks: np.ndarray, out_node: np.ndarray, seconds: float) -> dict:
    """Allocation ratio per arrived level and failed fractions per task kind."""
    cap = trace.capacity_milli
    request = trace.task_request[tasks]
    placed = out_node >= 0
    arrived = np.cumsum(request) / cap
    allocated = np.cumsum(np.where(placed, request, 0)) / cap
    level = np.floor(arrived * 100 + 0.5).astype(np.int64)
    ratio = {}
    for x in (*LEVELS, 130):
        sel = level == x
        if sel.any():
            ratio[f"{x / 100:.1f}" if x % 10 == 0 else f"{x / 100:.2f}"] = float(allocated[sel].mean())
    upto = level <= 100
    kind = trace.task_kind[tasks]
    failed = {}
    for i, name in enumerate(KINDS):
        sel = upto & (kind == i)
        failed[name] = float((~placed[sel]).mean()) if sel.any() else 0.0
    return {"allocation_ratio": ratio, "failed_by_kind": failed, "seconds": seconds,
            "placed_milli": np.where(placed, request, 0), "arrived_curve": arrived, "allocated_curve": allocated}


def run_many(trace: Trace, policies: list[str], seeds: list[int]) -> dict[str, dict]:
    """Every policy over every seed; means of the figures."""
    out: dict[str, dict] = {}
    for policy in policies:
        shapes = target_shapes(trace, GPUQ_COVERAGE if policy == "gpuq" else 0.95)
        runs = [run_policy(trace, policy, seed, shapes) for seed in seeds]
        keys = sorted({k for r in runs for k in r["allocation_ratio"]}, key=float)
        out[policy] = {
            "allocation_ratio": {
                k: float(np.mean([r["allocation_ratio"][k] for r in runs if k in r["allocation_ratio"]])) for k in keys
            },
            "failed_by_kind": {k: float(np.mean([r["failed_by_kind"][k] for r in runs])) for k in KINDS},
            "seconds": float(np.mean([r["seconds"] for r in runs])),
            "_curves": [(r["arrived_curve"], r["allocated_curve"]) for r in runs],
        }
    return out


def _plot(results: dict[str, dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy, res in results.items():
        arrived, allocated = res["_curves"][0]
        at_full = res["allocation_ratio"].get("1.0", 0) * 100
        ax.plot(arrived * 100, allocated * 100, label=f"{policy} ({at_full:.2f} % at 100 %)")
    ax.plot([0, 130], [0, 130], color="0.8", lw=0.8, ls="--", label="arrived")
    ax.set_xlim(60, 130)
    ax.set_ylim(60, 100)
    ax.set_xlabel("arrived GPU workload (% of capacity)")
    ax.set_ylabel("GPU allocation ratio (%)")
    ax.set_title("openb replay (first seed)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cli(argv: list[str]) -> int:
    """``gpuq simulate``: replay the openb trace under each policy and print the figures."""
    parser = argparse.ArgumentParser(prog="gpuq simulate", description="Replay the openb trace (FGD paper protocol).")
    parser.add_argument("--nodes", help="node list CSV, or .csv.gz (default: the shipped partitioner/traces/openb)")
    parser.add_argument("--tasks", help="task list CSV, or .csv.gz (default: the shipped partitioner/traces/openb)")
    parser.add_argument("--policies", default="random,best-fit,fgd,gpuq",
                        help="comma-separated: random,best-fit,fgd,gpuq")
    parser.add_argument("--seeds", type=int, default=10, help="number of seeds, from 42 (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--plot", metavar="PNG", help="write allocation ratio vs arrived workload")
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICY_IDS]
    if unknown or args.seeds < 1:
        problem = f"unknown policies {unknown}; choose from {', '.join(POLICY_IDS)}"
        if not unknown:
            problem = "--seeds must be >= 1"
        print(problem, file=sys.stderr)
        return 2
    trace_dir = find_trace_dir()
    nodes = Path(args.nodes) if args.nodes else (
        trace_file(trace_dir, "openb_node_list_gpu_node.csv") if trace_dir else None)
    tasks = Path(args.tasks) if args.tasks else (
        trace_file(trace_dir, "openb_pod_list_default.csv") if trace_dir else None)
    if nodes is None or tasks is None or not nodes.is_file() or not tasks.is_file():
        print("trace not found: pass --nodes and --tasks or set GPUQ_TRACE_DIR", file=sys.stderr)
        return 2
    trace = load_trace(nodes, tasks)
    results = run_many(trace, policies, list(range(42, 42 + args.seeds)))
    if args.plot:
        _plot(results, args.plot)
    if args.json:
        public = {p: {k: v for k, v in r.items() if not k.startswith("_")} for p, r in results.items()}
        print(json.dumps({"policies": public, "seeds": args.seeds}, indent=2))
        return 0
    levels = [f"{x / 100:.1f}" if x % 10 == 0 else f"{x / 100:.2f}" for x in LEVELS]
    print(f"GPU allocation ratio (%) at arrived workload, mean of {args.seeds} seed(s) from 42")
    print("| policy | " + " | ".join(f"{x} %" for x in LEVELS) + " |")
    print("|---" * (len(LEVELS) + 1) + "|")
    for policy, res in results.items():
        cells = [f"{res['allocation_ratio'].get(k, float('nan')) * 100:.2f}" for k in levels]
        print(f"| {policy} | " + " | ".join(cells) + " |")
    print()
    print("failed tasks by kind, arrivals up to 100 % (fraction of that kind)")
    print("| policy | " + " | ".join(KINDS) + " | s/run |")
    print("|---" * (len(KINDS) + 2) + "|")
    for policy, res in results.items():
        cells = [f"{res['failed_by_kind'][k] * 100:.2f} %" for k in KINDS]
        print(f"| {policy} | " + " | ".join(cells) + f" | {res['seconds']:.2f} |")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(cli(sys.argv[1:]))
