"""``gpuq workload list|set``, ``gpuq coexistence show|set``, ``gpuq allowlist show|set``: governance beyond
priority classes (admins change them; every change is audited)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from queue_service.cli.base import Api, JsonOpt, ReasonOpt, ServerOpt, TokenOpt, app, emit, fail, limit_text, table

workload_app = typer.Typer(help="Workload classes: what a job declares it is, and the defaults it gets.",
                           no_args_is_help=True)
coexistence_app = typer.Typer(help="Which workload classes may share a GPU or a node.", no_args_is_help=True)
allowlist_app = typer.Typer(help="The images a project may run and the host volumes it may mount.",
                            no_args_is_help=True)
app.add_typer(workload_app, name="workload")
app.add_typer(coexistence_app, name="coexistence")
app.add_typer(allowlist_app, name="allowlist")


def _opt(value: Any) -> str:
    return "-" if value is None else str(value)


@workload_app.command("list")
def workload_list(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """The workload classes and their defaults."""
    data = Api(server, token).call("GET", "/v1/workload-classes")

    def human(rows: list[dict]) -> str:
        return table([[c["name"], _opt(c["priority_class"]), _opt(c["preemptible"]),
                       limit_text(c["default_time_limit_s"]), limit_text(c["max_time_limit_s"]),
                       "yes" if c["may_share_gpu"] else "no"] for c in rows],
                     ["workload", "priority class", "preemptible", "default limit", "max limit", "shares GPU"])

    emit(data, as_json, human)


@workload_app.command("set")
def workload_set(
    name: str,
    priority_class: Annotated[str | None, typer.Option("--priority-class")] = None,
    preemptible: Annotated[bool | None, typer.Option("--preemptible/--not-preemptible")] = None,
    default_time_limit_s: Annotated[int | None, typer.Option("--default-time-limit-s")] = None,
    max_time_limit_s: Annotated[int | None, typer.Option("--max-time-limit-s")] = None,
    share_gpu: Annotated[bool, typer.Option("--share-gpu/--alone-on-gpu")] = True,
    reason: ReasonOpt = "",
    server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create or change workload class NAME (admins)."""
    body = {"priority_class": priority_class, "preemptible": preemptible,
            "default_time_limit_s": default_time_limit_s, "max_time_limit_s": max_time_limit_s,
            "may_share_gpu": share_gpu, "reason": reason}
    data = Api(server, token).call("PUT", f"/v1/workload-classes/{name}", json=body)
    emit(data, as_json, lambda d: f"workload class {d['name']} set")


def rules_text(rules: dict[str, dict[str, list[str]]]) -> str:
    """The two tables, one line per class: what it may share a GPU and a node with."""
    names = sorted(set(rules["gpu"]) | set(rules["node"]))
    rows = [[n, " ".join(rules["gpu"].get(n, ["*"])) or "(alone)", " ".join(rules["node"].get(n, ["*"])) or "(alone)"]
            for n in names]
    return table(rows, ["workload", "may share a GPU with", "may share a node with"])


@coexistence_app.command("show")
def coexistence_show(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Which workload classes may share one physical GPU (MPS blocks, MIG instances of it) and one node."""
    emit(Api(server, token).call("GET", "/v1/coexistence"), as_json, rules_text)


@coexistence_app.command("set")
def coexistence_set(
    workload: str,
    gpu: Annotated[list[str] | None, typer.Option("--gpu", help="a class it may share a GPU with (repeatable; "
                                                                "* for any, none for no class)")] = None,
    node: Annotated[list[str] | None, typer.Option("--node", help="a class it may share a node with (repeatable)")
                    ] = None,
    reason: ReasonOpt = "",
    server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Set WORKLOAD's rows (admins). A rule holds both ways: set the other class's row too, or it is refused."""
    if gpu is None and node is None:
        fail("give --gpu, --node or both")
    body: dict[str, Any] = {"reason": reason}
    if gpu is not None:
        body["gpu"] = {workload: [c for c in gpu if c != "none"]}
    if node is not None:
        body["node"] = {workload: [c for c in node if c != "none"]}
    emit(Api(server, token).call("PUT", "/v1/coexistence", json=body), as_json, rules_text)


def _lists_text(d: dict) -> str:
    images = "any" if d["images"] is None else (", ".join(d["images"]) or "none (host processes only are refused)")
    volumes = ", ".join(f"{v['host_path']} ({'ro' if v['read_only'] else 'rw'})" for v in d["volumes"]) or "none"
    return f"project {d['project']}\n  images:  {images}\n  volumes: {volumes}"


@allowlist_app.command("show")
def allowlist_show(project: str, server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """The images PROJECT's jobs may run and the host volumes they may mount."""
    emit(Api(server, token).call("GET", f"/v1/projects/{project}/allowlists"), as_json, _lists_text)


@allowlist_app.command("set")
def allowlist_set(
    project: str,
    image: Annotated[list[str] | None, typer.Option(
        "--image", help="an image pattern, e.g. 'registry.internal/vision/*' (repeatable)")] = None,
    any_image: Annotated[bool, typer.Option("--any-image", help="no image list (any image, host jobs too)")] = False,
    volume: Annotated[list[str] | None, typer.Option("--volume", help="HOST_DIR[:ro|rw] a job may mount, or below "
                                                                      "it (repeatable; default ro)")] = None,
    reason: ReasonOpt = "",
    server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Replace PROJECT's allow-lists (admins): both lists as given."""
    if any_image and image:
        fail("--any-image and --image exclude each other")
    volumes = []
    for item in volume or []:
        path, _, mode = item.partition(":")
        if mode not in ("", "ro", "rw"):
            fail(f"--volume wants HOST_DIR[:ro|rw], got {item!r}")
        volumes.append({"host_path": path, "read_only": mode != "rw"})
    body = {"images": None if any_image or image is None else image, "volumes": volumes, "reason": reason}
    emit(Api(server, token).call("PUT", f"/v1/projects/{project}/allowlists", json=body), as_json, _lists_text)
