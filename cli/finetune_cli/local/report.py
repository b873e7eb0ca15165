"""The local run's report: `report.md`, a loss curve and a base-vs-tuned metrics chart (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_api.contract.progress import ProgressEvent, read_events
from finetune_api.job import DataReport


def read_progress(path: Path) -> list[ProgressEvent]:
    """Progress events the trainer appended to `progress.jsonl`; unreadable lines are skipped."""
    if not path.exists():
        return []
    return read_events(path.read_text().splitlines())


def loss_curves(events: list[ProgressEvent]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, training loss) and (step, validation loss) points."""
    train = [(e.step, e.loss) for e in events if e.loss is not None]
    validation = [(e.step, e.eval_loss) for e in events if e.eval_loss is not None]
    return train, validation


def plot_loss(events: list[ProgressEvent], out: Path) -> Path | None:
    """Training loss by step, and the validation loss at its evaluation steps."""
    train, evals = loss_curves(events)
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss", color="#1f77b4")
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation loss", color="#ff7f0e")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_metrics(metrics: list[dict[str, Any]], out: Path) -> Path | None:
    """Base vs tuned per metric, with the tuned model's confidence interval of the difference."""
    rows = [m for m in metrics if m.get("name") != "output_length" and m.get("tuned") is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m["name"] for m in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(rows)), 3.5), dpi=110)
    width = 0.38
    base = [m.get("base") or 0.0 for m in rows]
    tuned = [m["tuned"] for m in rows]
    ax.bar([i - width / 2 for i in x], base, width, label="base", color="#9e9e9e")
    ax.bar([i + width / 2 for i in x], tuned, width, label="tuned", color="#2ca02c")
    ax.set_xticks(list(x), names, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_title("Held-out evaluation: base vs tuned")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def write_report(
    workdir: Path,
    job_name: str,
    verdict: str,
    data: DataReport | None,
    evaluation: dict[str, Any],
    phases: list[tuple[str, float, str]],
    endpoint: str | None,
    answer: str | None,
    notes: list[str],
    progress_log: Path,
) -> Path:
    """Write report.md (and its PNGs) into `workdir`; returns the report path. `verdict` covers every
    phase (e.g. `PASSED gates, SERVING FAILED`), not the gates alone."""
    loss_png = plot_loss(read_progress(progress_log), workdir / "loss.png")
    metrics_png = plot_metrics(evaluation.get("metrics", []), workdir / "metrics.png")
    lines = [f"# FineTuneJob `{job_name}` — {verdict}", ""]
    if notes:
        lines += ["## Not applied on this machine", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Phases", "", "| phase | seconds | result |", "| --- | --- | --- |"]
    lines += [f"| {name} | {secs:.1f} | {result} |" for name, secs, result in phases]
    lines += ["", "## Data", ""]
    if data is not None:
        counts = data.to_api()
        lines += [f"- {key}: {counts[key]}" for key in
                  ("trainExamples", "validationExamples", "evalExamples", "trainTokens", "warnings",
                   "modelMaxPositions", "maxLength", "longestExample", "maxModelLen", "message") if key in counts]
        lines += [f"- dropped by {rule}: {count}" for rule, count in data.dropped.items()]
    lines += ["", "## Evaluation (held-out set)", ""]
    if evaluation:
        lines += ["| metric | base | tuned | delta | CI low | CI high | P(tuned > base) |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for m in evaluation.get("metrics", []):
            lines.append(
                f"| {m.get('name')} | {_fmt(m.get('base'))} | {_fmt(m.get('tuned'))} | {_fmt(m.get('delta'))} | "
                f"{_fmt(m.get('ciLow'))} | {_fmt(m.get('ciHigh'))} | {_fmt(m.get('pBetter'))} |"
            )
        lines += ["", "## Gates", ""]
        for g in evaluation.get("gates", []):
            lines.append(f"- {'PASS' if g.get('passed') else 'FAIL'}: {g.get('message') or g.get('metric')}")
    else:
        lines.append("Not evaluated (no evaluation ran: disabled, or the run ended before it).")
    if loss_png:
        lines += ["", "## Loss", "", f"![loss]({loss_png.name})"]
    if metrics_png:
        lines += ["", "## Base vs tuned", "", f"![metrics]({metrics_png.name})"]
    if endpoint:
        lines += ["", "## Serving", "", f"- endpoint: {endpoint}", f"- answer to a held-out prompt: `{answer}`"]
    path = workdir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
