"""`meshai models`: the promoted models in the bucket, for the operator.

    meshai models list                              every promoted model: run, when, overall score, GGUF
    meshai models show NAME [--json]                the pointer, its history, the run's lineage, the report
    meshai models rollback NAME [--to RUN_ID] [--reason TEXT]    point NAME back at an earlier promotion
    meshai models export NAME --to DIR              GGUF + Modelfile + SHA256SUMS for `ollama create`

The registry itself (pointer, history, rollback) is meshai_common.registry; a running gateway follows the
pointer within its poll interval, so a rollback needs no restart.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshai_common import registry
from meshai_common.errors import InvalidInput
from meshai_common.manifest import lineage
from meshai_common.modelfile import Modelfile, default_modelfile, parse_modelfile, render_modelfile
from meshai_common.store import ArtifactStore, sha256_file

StoreFactory = Callable[[argparse.Namespace], ArtifactStore]

# PARAMETER names `ollama create` accepts: the json tags of api.Options and api.Runner in Ollama's
# api/types.go (its parser.CreateRequest rejects any other name with "unknown parameter"). The gateway's own
# radio-budget parameters (chunk_bytes, max_chunks) are kept as comments in an exported Modelfile.
OLLAMA_PARAMETERS = frozenset({
    "num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "typical_p", "repeat_last_n", "temperature",
    "repeat_penalty", "presence_penalty", "frequency_penalty", "stop",
    "num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread", "draft_num_predict",
})
_SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.gguf$")


def _when(unix: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(unix)) if unix else "?"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _score(overall: Any) -> str:
    return f"{float(overall):.1f}" if isinstance(overall, (int, float)) else "-"


# -- list / show -----------------------------------------------------------------------------------


def list_rows(store: ArtifactStore) -> list[dict[str, Any]]:
    """One row per promoted model, from its pointer."""
    rows = []
    for name in registry.list_models(store):
        ptr = registry.current(store, name)
        gguf = ptr.get("gguf") or {}
        rows.append({"name": name, "run_id": ptr.get("run_id", ""), "promoted_unix": ptr.get("promoted_unix"),
                     "overall": ptr.get("overall"), "gguf_key": gguf.get("key", ""),
                     "sha256": gguf.get("sha256", ""), "size": int(gguf.get("size") or 0),
                     "rolled_back": bool(ptr.get("rollback"))})
    return rows


def format_list(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no promoted models (a pipeline run promotes one when it passes the gate)"
    head = f"{'NAME':<16} {'RUN':<24} {'PROMOTED':<21} {'OVERALL':>7}  {'GGUF SHA256':<14} {'SIZE':>10}"
    lines = [head]
    for r in rows:
        mark = " (rolled back)" if r["rolled_back"] else ""
        lines.append(f"{r['name']:<16} {r['run_id']:<24} {_when(r['promoted_unix']):<21} {_score(r['overall']):>7}  "
                     f"{r['sha256'][:12] + '…':<14} {_size(r['size']):>10}{mark}")
    return "\n".join(lines)


def describe(store: ArtifactStore, name: str) -> dict[str, Any]:
    """What `models show` prints: pointer, history, the run's stage manifests and its evaluation report."""
    ptr = registry.current(store, name)
    manifests = lineage(store, ptr.get("run_id", "")) if ptr.get("run_id") else []
    report = next((o["key"] for m in manifests for o in m.get("outputs", []) if o["key"].endswith("/report.html")),
                  None)
    return {"pointer": ptr, "history": registry.history(store, name), "lineage": manifests, "report": report}


def format_show(info: dict[str, Any], reports_dir: Path) -> str:
    ptr = info["pointer"]
    gguf = ptr.get("gguf") or {}
    lines = [f"model {ptr.get('name')}: run {ptr.get('run_id')}, promoted {_when(ptr.get('promoted_unix'))}, "
             f"overall {_score(ptr.get('overall'))}",
             f"  gguf       {gguf.get('key')}  sha256 {gguf.get('sha256')}  {int(gguf.get('size') or 0)} bytes"]
    for field in ("modelfile", "eval_results"):
        if ptr.get(field):
            lines.append(f"  {field:<10} {ptr[field]['key']}")
    if ptr.get("rollback"):
        rb = ptr["rollback"]
        lines.append(f"  rolled back {_when(rb.get('rolled_back_unix'))} from run {rb.get('from_run_id')} by "
                     f"{rb.get('by')}: {rb.get('reason') or '(no reason given)'}")
    lines.append("history (oldest first):")
    for e in info["history"]:
        if e.get("schema") == "meshai.rollback/v1":
            lines.append(f"  {_when(e.get('rolled_back_unix'))}  rollback {e.get('from_run_id')} -> "
                         f"{e.get('to_run_id')}  {e.get('reason') or ''}".rstrip())
        else:
            lines.append(f"  {_when(e.get('promoted_unix'))}  promote  {e.get('run_id')}  overall "
                         f"{_score(e.get('overall'))}  gguf {(e.get('gguf') or {}).get('sha256', '')[:12]}")
    lines.append("lineage:" if info["lineage"] else "lineage: no stage manifests for this run")
    for m in info["lineage"]:
        outs = ", ".join(o["key"].rsplit("/", 1)[-1] for o in m["outputs"][:4])
        lines.append(f"  {m['stage']:<9} {len(m['inputs'])} in -> {len(m['outputs'])} out  ({outs}"
                     f"{'…' if len(m['outputs']) > 4 else ''})  code {m['code_version']}")
    if info["report"]:
        local = reports_dir / f"{ptr.get('run_id')}.html"
        lines.append(f"evaluation report: {info['report']}" + (f" (local copy: {local})" if local.exists() else ""))
    return "\n".join(lines)


# -- export ----------------------------------------------------------------------------------------


def ollama_modelfile(stored: str | None, gguf_file: str, source: str = "Modelfile") -> str:
    """The Modelfile an exported model ships with: FROM the GGUF beside it, the stored Modelfile's TEMPLATE,
    SYSTEM, PARAMETER and `# meshai:` lines; parameters only the gateway knows stay as comments."""
    if stored is None:
        return default_modelfile(f"./{gguf_file}")
    mf = parse_modelfile(stored, source)
    for label, value in (("TEMPLATE", mf.template), ("SYSTEM", mf.system)):
        if value is not None and '"""' in value:
            raise InvalidInput(f"{source}: {label} contains '\"\"\"', which an Ollama Modelfile cannot quote")
    kept = {k: v for k, v in mf.parameters.items() if k in OLLAMA_PARAMETERS}
    text = render_modelfile(Modelfile(system=mf.system, template=mf.template, parameters=kept,
                                      extensions=mf.extensions), f"./{gguf_file}")
    gateway_only = [f"# gateway only (Ollama has no such parameter): PARAMETER {k} {v}"
                    for k, v in mf.parameters.items() if k not in OLLAMA_PARAMETERS]
    return text + "".join(line + "\n" for line in gateway_only)


def export_model(store: ArtifactStore, name: str, dest: Path) -> dict[str, Any]:
    """Write DIR/<model>.gguf, DIR/Modelfile and DIR/SHA256SUMS for `ollama create NAME -f DIR/Modelfile`.

    Everything is written into a temporary folder beside DIR and renamed into place at the end: DIR holds the
    whole export or does not exist. An existing DIR must be empty.
    """
    dest = Path(dest).expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidInput(f"--to {dest}: exists and is not an empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    ptr = registry.current(store, name)
    gguf = ptr["gguf"]
    gguf_file = gguf["key"].rsplit("/", 1)[-1]
    if not _SAFE_FILE.match(gguf_file):
        gguf_file = f"{registry.check_model_name(name)}.gguf"
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))
    try:
        store.get_file(gguf["key"], tmp / gguf_file, expected_sha256=gguf["sha256"])
        stored = None
        if ptr.get("modelfile"):
            mf_ref = ptr["modelfile"]
            stored = store.get_bytes(mf_ref["key"]).decode("utf-8")
        text = ollama_modelfile(stored, gguf_file, (ptr.get("modelfile") or {}).get("key", "Modelfile"))
        (tmp / "Modelfile").write_text(text, encoding="utf-8")
        parse_modelfile(text, str(dest / "Modelfile"))  # the gateway reads what Ollama reads
        sums = {gguf_file: gguf["sha256"], "Modelfile": sha256_file(tmp / "Modelfile")}
        (tmp / "SHA256SUMS").write_text("".join(f"{sha}  {fn}\n" for fn, sha in sums.items()), encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the export is meant to be read by an Ollama service too
        os.replace(tmp, dest)  # atomic on one filesystem; replaces an empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"dir": str(dest), "run_id": ptr.get("run_id"), "files": sums,
            "size": int(gguf.get("size") or 0)}


# -- commands --------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction, store_for: StoreFactory,
             reports_dir: Callable[[argparse.Namespace], Path]) -> None:
    """Add `meshai models ...`; `store_for(args)` opens the bucket the way `meshai runs show` does."""
    models = sub.add_parser("models", help="list, inspect, roll back and export promoted models")
    cmds = models.add_subparsers(dest="models_cmd", required=True)

    def run_list(args: argparse.Namespace) -> int:
        rows = list_rows(store_for(args))
        print(json.dumps(rows, indent=2) if args.json else format_list(rows))
        return 0

    def run_show(args: argparse.Namespace) -> int:
        info = describe(store_for(args), args.name)
        print(json.dumps(info, indent=2) if args.json else format_show(info, reports_dir(args)))
        return 0

    def run_rollback(args: argparse.Namespace) -> int:
        ptr = registry.rollback(store_for(args), args.name, to_run_id=args.to, reason=args.reason or "")
        rb = ptr["rollback"]
        print(f"model {args.name}: rolled back from run {rb['from_run_id']} to run {rb['to_run_id']} "
              f"(gguf {ptr['gguf']['sha256'][:12]}…, overall {_score(ptr.get('overall'))}); "
              "a running gateway follows within its poll interval")
        return 0

    def run_export(args: argparse.Namespace) -> int:
        out = export_model(store_for(args), args.name, Path(args.to))
        for fn, sha in out["files"].items():
            print(f"{sha}  {Path(out['dir']) / fn}")
        print(f"run {out['run_id']}; load it into Ollama with:\n"
              f"  ollama create {registry.check_model_name(args.name)} -f {Path(out['dir']) / 'Modelfile'}")
        return 0

    p = cmds.add_parser("list", help="promoted models: run, when, overall score, GGUF sha256 and size")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_list)
    p = cmds.add_parser("show", help="a model's pointer, history, lineage and evaluation report")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_show)
    p = cmds.add_parser("rollback", help="point a model back at an earlier promotion (history is kept)")
    p.add_argument("name")
    p.add_argument("--to", metavar="RUN_ID", help="the promoted run to go back to (default: the one before)")
    p.add_argument("--reason", help="why, recorded in the history entry")
    p.set_defaults(func=run_rollback)
    p = cmds.add_parser("export", help="GGUF + Modelfile + SHA256SUMS for `ollama create NAME -f Modelfile`")
    p.add_argument("name")
    p.add_argument("--to", required=True, metavar="DIR", help="folder to create (must not exist or be empty)")
    p.set_defaults(func=run_export)
