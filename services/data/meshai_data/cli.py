"""`meshai data ...`: the data tools, locally, without the stack.

    meshai data prepare --archive F [--archive DIR ...] [--mailboxes F] --output-dir D [--min-pairs N]
                        [--seed S] [--cap] [--strict] [--sharegpt] [--exclude-prompts FILE]
                        [--grounded|--no-grounded] [--suites DIR]
    meshai data validate FILE...        prints `file:line: problem`; exit 1 when there is any
    meshai data inspect FILE [--count N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meshai_common.errors import InvalidInput


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` command group to a parent CLI; each leaf sets `func(args) -> exit code`."""
    from meshai_data.prepare import DEFAULT_MIN_PAIRS

    data = subparsers.add_parser("data", help="prepare, validate and inspect training data")
    sub = data.add_subparsers(dest="data_cmd", required=True)

    p = sub.add_parser("prepare", help="archives + mailboxes + synthetic pairs -> train/val/test JSONL")
    p.add_argument("--archive", action="append", required=True, metavar="PATH",
                   help="messages_archive.json, or a folder of (rotated) archives; repeatable")
    p.add_argument("--mailboxes", metavar="FILE", help="mesh_mailboxes.json")
    p.add_argument("--min-pairs", type=int, default=DEFAULT_MIN_PAIRS,
                   help=f"pairs to write (default {DEFAULT_MIN_PAIRS}); fails if fewer unique pairs exist")
    p.add_argument("--output-dir", default="data/training", help="where train/val/test.jsonl and metadata.json go")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--cap", action="store_true", help="write what exists instead of failing below --min-pairs")
    p.add_argument("--strict", action="store_true", help="fail on the first bad record instead of skipping it")
    p.add_argument("--sharegpt", action="store_true", help="write ShareGPT `conversations` instead of `messages`")
    p.add_argument("--exclude-prompts", metavar="FILE",
                   help="evaluation questions to keep out of the data: a JSON list or one question per line")
    p.add_argument("--grounded", action=argparse.BooleanOptionalAction, default=True,
                   help="user turns carry the catalog lines the server retrieves for the question (default: on)")
    p.add_argument("--suites", metavar="DIR",
                   help="evaluation suites (*.yaml) to decontaminate against (default: the evaluator's suites)")
    p.set_defaults(func=cmd_prepare)

    v = sub.add_parser("validate", help="check datasets: schema, budget, commands, duplicates, leakage")
    v.add_argument("files", nargs="+", metavar="FILE")
    v.set_defaults(func=cmd_validate)

    i = sub.add_parser("inspect", help="print random examples")
    i.add_argument("file", metavar="FILE")
    i.add_argument("--count", type=int, default=5)
    i.add_argument("--seed", type=int, default=0)
    i.set_defaults(func=cmd_inspect)


def _read_prompts(path: str) -> list[str]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"{p}: cannot read: {exc.strerror or exc}") from exc
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{p}: malformed JSON at line {exc.lineno}: {exc.msg}") from exc
        if not all(isinstance(x, str) for x in items):
            raise InvalidInput(f"{p}: expected a JSON list of strings")
        return items
    return [line.strip() for line in text.splitlines() if line.strip()]


def cmd_prepare(args: argparse.Namespace) -> int:
    from meshai_data.prepare import prepare

    meta = prepare(
        [Path(a) for a in args.archive], Path(args.mailboxes) if args.mailboxes else None, Path(args.output_dir),
        seed=args.seed, min_pairs=args.min_pairs, cap=args.cap, strict=args.strict, sharegpt=args.sharegpt,
        exclude_prompts=_read_prompts(args.exclude_prompts) if args.exclude_prompts else (),
        grounded=args.grounded, suites_dir=Path(args.suites) if args.suites else None,
    )
    src = meta["sources"]
    print(f"wrote {meta['total_pairs']} pairs to {args.output_dir}: train {meta['train_size']}, "
          f"val {meta['val_size']}, test {meta['test_size']} "
          f"(archive {src['archive']}, mailboxes {src['mailboxes']}, synthetic {src['synthetic']})")
    if meta["capped"]:
        print(f"capped: only {meta['unique_available']} unique pairs exist (asked for {meta['min_pairs']})")
    bad = meta["bad_records"]
    if bad["archive"] or bad["mailboxes"]:
        print(f"skipped bad records: archive {bad['archive']}, mailboxes {bad['mailboxes']} "
              f"(see metadata.json 'problems')")
    scrubbed = {k: v for k, v in meta["scrub"].items() if v}
    if scrubbed:
        print("scrubbed: " + ", ".join(f"{k} {v}" for k, v in scrubbed.items()))
    if meta["decontaminated"]:
        per_suite = ", ".join(f"{k} {v}" for k, v in meta["decontaminated_by_suite"].items())
        print(f"removed {meta['decontaminated']} pairs matching evaluation questions ({per_suite})")
    elif not meta["suites"]:
        print("no evaluation suites found to decontaminate against (pass --suites DIR)")
    n = max(meta["total_pairs"], 1)
    print(f"grounding {meta['grounding']}: {meta['grounded_prompts']} grounded ({meta['grounded_prompts'] / n:.0%}), "
          f"{meta['meshmaster_prompts'] / n:.0%} Mesh-Master prompts, user turns {meta['avg_user_chars']:.0f} "
          f"characters on average")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from meshai_data.validate import validate

    problems = validate([Path(f) for f in args.files])
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {len({p.file for p in problems})} file(s)", file=sys.stderr)
        return 1
    print(f"ok: {len(args.files)} file(s), no problems")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from meshai_data.validate import inspect

    if args.count < 1:
        raise InvalidInput(f"--count must be >= 1, got {args.count}")
    path = Path(args.file)
    if not path.is_file():
        raise InvalidInput(f"{path}: file not found")
    for ex in inspect(path, args.count, args.seed):
        if "error" in ex:
            print(f"{path}:{ex['line']}: {ex['error']}\n")
            continue
        print(f"--- {path}:{ex['line']}  [{ex['intent']}, {ex['source']}]")
        print(f"Q: {ex['user']}")
        print(f"A: {ex['assistant']}\n")
    return 0
