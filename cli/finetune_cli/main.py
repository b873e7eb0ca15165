"""`ftctl` entry point. Subcommands import their dependencies lazily so `validate` stays fast.

Exit codes: `validate` 2 for an invalid manifest; `run` and `serve` 0 passed/served, 1 user error,
2 infrastructure, 3 rejected by a gate (`run`), 128 + the signal when stopped (130 SIGINT, 143
SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_INVALID = 2
POD_PHASES = ("prepare", "train", "eval", "upload", "serve")
"""The `finetune.dev/phase` label values of a job's pods, in pipeline order (`ftctl logs --phase`)."""


def _cmd_validate(args: argparse.Namespace) -> int:
    from .manifests import validate_files

    verdicts = validate_files([Path(p) for p in args.files])
    for v in verdicts:
        label = f"{v.kind}/{v.name}" if v.kind else ""
        if v.ok:
            if not args.quiet:
                print(f"{v.source}: {label}: valid", flush=True)  # in order with the errors on stderr
        else:
            for err in v.errors:
                print(f"{v.source}: {label + ': ' if label else ''}{err}", file=sys.stderr)
    return EXIT_OK if all(v.ok for v in verdicts) else EXIT_INVALID


def _cmd_crds(args: argparse.Namespace) -> int:
    from .crds import render_crds, write_crds

    if args.stdout:
        sys.stdout.write("---\n".join(render_crds().values()))
        return EXIT_OK
    dirs = [Path(args.out)] if args.out else [Path("crds"), Path("charts/finetune-operator/crds")]
    for path in write_crds(dirs):
        print(path)
    return EXIT_OK


def _cmd_api_docs(args: argparse.Namespace) -> int:
    from finetune_api.apidocs import BEGIN, END, render_api_reference

    text = render_api_reference()
    if args.readme:
        readme = Path(args.readme)
        current = readme.read_text()
        start, end = current.index(BEGIN), current.index(END) + len(END) + 1
        readme.write_text(current[:start] + text + current[end:])
    elif args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _settings(args: argparse.Namespace):  # noqa: ANN202 - lazy import keeps start-up fast
    from finetune_operator.settings import OperatorSettings

    settings = OperatorSettings.from_env()
    if getattr(args, "queue_mode", None):
        settings = settings.model_copy(update={"queue_mode": args.queue_mode})
    if getattr(args, "cpu", False):
        settings = settings.model_copy(update={"cpu_runtime": True})
    return settings


def _cmd_render(args: argparse.Namespace) -> int:
    import yaml

    from finetune_operator.builders.render import render_job
    from .manifests import load_job

    try:
        job = load_job(Path(args.file))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    if args.namespace:
        job.metadata.namespace = args.namespace
    job.metadata.namespace = job.metadata.namespace or "default"
    phases = render_job(job, _settings(args))
    out = []
    for phase, objects in phases.items():
        for obj in objects:
            out.append(f"# phase: {phase}\n" + yaml.safe_dump(obj, sort_keys=False, width=120))
    sys.stdout.write("---\n".join(out))
    return EXIT_OK


def _cmd_tiny_model(args: argparse.Namespace) -> int:
    from finetune_trainer.tiny_model import build_model
    from finetune_trainer.zoo import recipe

    try:
        chosen = recipe(args.model)
    except ValueError as exc:
        print(f"--model: {exc}", file=sys.stderr)
        return EXIT_INVALID
    path = build_model(
        chosen, args.dir, steps=args.steps, log=lambda s, t, loss: print(f"pre-train {s}/{t} loss {loss:.3f}"),
    )
    print(path)
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from .local.run import run_from_cli

    return run_from_cli(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from finetune_trainer.serving.local import serve_artifacts

    return serve_artifacts(args.artifacts, port=args.port, block=True) or EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from .cluster import cmd_status

    return cmd_status(args)


def _cmd_logs(args: argparse.Namespace) -> int:
    from .cluster import cmd_logs

    return cmd_logs(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftctl", description="Validate, render, run and serve FineTuneJobs.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check manifests offline, with the API server's verdict")
    p.add_argument("files", nargs="+")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("render", help="print every Kubernetes object the operator creates for a job")
    p.add_argument("file")
    p.add_argument("-n", "--namespace")
    p.add_argument("--queue-mode", choices=["embedded", "kueue", "none"])
    p.add_argument("--cpu", action="store_true", help="render for a CPU-only cluster")
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("crds", help="generate the CRDs from the API models")
    p.add_argument("--out", help="directory to write into (default: crds/ and the chart's crds/)")
    p.add_argument("--stdout", action="store_true")
    p.set_defaults(func=_cmd_crds)

    p = sub.add_parser("api-docs", help="generate the API reference (Markdown) from the models")
    p.add_argument("--out", help="write the reference to this file")
    p.add_argument("--readme", help="replace the generated section of this README (e.g. README.md)")
    p.set_defaults(func=_cmd_api_docs)

    p = sub.add_parser("run", help="run a FineTuneJob end to end on this machine, no cluster")
    p.add_argument("file")
    p.add_argument("--workdir", help="where artifacts and the report go (default: runs/<job>)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    serving = p.add_mutually_exclusive_group()
    serving.add_argument("--no-serve", action="store_true", help="stop after the gates")
    serving.add_argument("--keep-serving", action="store_true",
                         help="after the smoke answer, go on serving until Ctrl-C (like ftctl serve)")
    p.add_argument("--processes", type=int, default=2, help="training processes (default 2)")
    p.add_argument("--plain", action="store_true", help="plain log lines instead of progress bars")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("serve", help="serve a run's artifacts with a local vLLM server")
    p.add_argument("artifacts")
    p.add_argument("--port", type=int)
    p.set_defaults(func=_cmd_serve)

    def cluster_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("job", help="the FineTuneJob's name")
        p.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
        p.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config, as kubectl")
        p.add_argument("--context", help="a kubeconfig context (default: the current one)")

    p = sub.add_parser("status", help="a FineTuneJob on a cluster: phase, progress, evaluation, gates, endpoint")
    cluster_args(p)
    p.set_defaults(func=_cmd_status)
    p = sub.add_parser("logs", help="the logs of a FineTuneJob's pods on a cluster, without pod names")
    cluster_args(p)
    p.add_argument("--phase", choices=POD_PHASES, help="whose pods (default: the job's current phase)")
    p.add_argument("-f", "--follow", action="store_true", help="stream until the container exits")
    p.add_argument("--tail", type=int, help="only the last N lines")
    p.set_defaults(func=_cmd_logs)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    try:
        from .data import add_parser as add_data_check
    except ImportError:  # the data tools need the trainer extra
        pass
    else:
        add_data_check(data)

    dev = sub.add_parser("dev", help="developer tools").add_subparsers(dest="dev_command", required=True)
    p = dev.add_parser("tiny-model", help="build a pre-trained tiny chat model offline (the quickstart's, or a zoo model)")
    p.add_argument("dir")
    p.add_argument("--model", default="tiny-chat", help="tiny-chat (the quickstart's) or a zoo model (docs/zoo.md)")
    p.add_argument("--steps", type=int, help="pre-training steps (default: the model's own)")
    p.set_defaults(func=_cmd_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    from finetune_trainer.process_group import StopRequested, raise_on_stop_signals

    parser = build_parser()
    args = parser.parse_args(argv)
    raise_on_stop_signals()  # SIGTERM and SIGHUP unwind like Ctrl-C: every child is stopped on the way out
    try:
        return int(args.func(args))
    except StopRequested as stop:
        print(f"stopped by {stop}", file=sys.stderr)
        return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
