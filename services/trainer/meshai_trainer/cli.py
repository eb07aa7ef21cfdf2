"""`meshai train validate CONFIG` and `meshai train run CONFIG ...`: the trainer's tools on local files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="training recipes").add_subparsers(dest="train_cmd", required=True)
    v = train.add_parser("validate", help="check a config (every problem at once) without training")
    v.add_argument("config", help="YAML file or shipped config name (e.g. cpu-smollm2)")
    v.add_argument("--no-model", action="store_true", help="skip the checks that need the base model")
    v.set_defaults(func=cmd_validate)
    r = train.add_parser("run", help="train locally and write adapter/ and merged/")
    r.add_argument("config")
    r.add_argument("--train", required=True, type=Path)
    r.add_argument("--val", type=Path)
    r.add_argument("--output-dir", required=True, type=Path)
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    r.set_defaults(func=cmd_run)


def cmd_validate(args: argparse.Namespace) -> int:
    from meshai_trainer.config import validate_config

    problems = validate_config(args.config, check_model=not args.no_model)
    for p in problems:
        print(p)
    if not problems:
        print(f"{args.config}: valid")
    return 1 if problems else 0


def cmd_run(args: argparse.Namespace) -> int:
    from meshai_common.progress import LocalContext
    from meshai_trainer.config import load_config
    from meshai_trainer.recipe import train

    overrides = dict(item.split("=", 1) for item in args.set)
    cfg = load_config(args.config, overrides)
    metrics = train(cfg, args.train, args.val, args.output_dir, LocalContext(args.output_dir / ".work"))
    print(json.dumps(metrics, indent=2))
    return 0
