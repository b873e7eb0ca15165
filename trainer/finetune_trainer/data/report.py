"""The data report: JSON for machines, Markdown for people, and the DataReport status summary.

It says how many rows each split had and kept, which rule dropped or refused which rows, how long the
examples are, what leaked between splits, and roughly what training will cost.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from finetune_api.job import DataReport
from finetune_api.resolved import ArtifactLayout

from .rules import RULES, Findings

# A rough reference accelerator for the cost estimate: bf16 dense peak of an A100 at 40% utilisation.
REFERENCE_FLOPS = 312e12
REFERENCE_MFU = 0.4
MAX_REPORTED_FINDINGS = 1000


def length_histogram(lengths: list[int], max_length: int) -> list[dict[str, int]]:
    """Counts of examples per power-of-two length bucket up to max_length: `{"le": 64, "count": n}`."""
    edges = []
    edge = 16
    while edge < max_length:
        edges.append(edge)
        edge *= 2
    edges.append(max_length)
    counts = [0] * len(edges)
    for n in lengths:
        for i, e in enumerate(edges):
            if n <= e:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
    return [{"le": e, "count": c} for e, c in zip(edges, counts, strict=True)]


def length_stats(lengths: list[int]) -> dict[str, float | int]:
    if not lengths:
        return {"min": 0, "mean": 0, "p50": 0, "p95": 0, "max": 0}
    ordered = sorted(lengths)

    def pct(p: float) -> int:
        return ordered[min(len(ordered) - 1, int(math.ceil(p * len(ordered))) - 1)]

    return {"min": ordered[0], "mean": round(sum(ordered) / len(ordered), 1), "p50": pct(0.5), "p95": pct(0.95), "max": ordered[-1]}


def count_parameters(model_dir: str) -> int | None:
    """Parameters of a safetensors model, from the file headers only (no weights are read)."""
    total = 0
    files = sorted(Path(model_dir).glob("*.safetensors")) if Path(model_dir).is_dir() else []
    for path in files:
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, meta in header.items():
            if name != "__metadata__":
                total += math.prod(meta["shape"])
    return total or None


def cost_estimate(
    params: int | None, train_tokens: int, epochs: float, adapter: str, method: str, gpus: int
) -> dict[str, Any]:
    """FLOPs and time on the reference accelerator: 6·N per trained token for a full fine-tune,
    4·N for an adapter (no weight gradients of the base), plus 2·N for DPO's reference model."""
    if not params:
        return {"available": False, "reason": "parameter count unknown (no safetensors in the model directory)"}
    per_token = (6 if adapter == "full" else 4) * params + (2 * params if method == "dpo" else 0)
    flops = per_token * train_tokens * epochs
    gpu_hours = flops / (REFERENCE_FLOPS * REFERENCE_MFU) / 3600
    return {
        "available": True,
        "parameters": params,
        "trained_tokens": int(train_tokens * epochs),
        "flops": flops,
        "gpu_hours": float(f"{gpu_hours:.3g}"),
        "wall_hours": float(f"{gpu_hours / gpus:.3g}") if gpus else None,
        "assumptions": f"{per_token // params}·N FLOPs per token, {REFERENCE_FLOPS / 1e12:.0f} TFLOP/s peak at {REFERENCE_MFU:.0%} utilisation"
        + ("; GRPO generation not included" if method == "grpo" else ""),
    }


def summary(report: dict[str, Any], report_path: str | None) -> DataReport:
    """The DataReport status summary the prepare phase's termination message carries."""
    splits = report["splits"]
    model = report.get("model") or {}
    return DataReport(
        train_examples=splits.get("train", {}).get("examples", 0),
        validation_examples=splits.get("validation", {}).get("examples", 0),
        eval_examples=splits.get("eval", {}).get("examples", 0),
        dropped=report["dropped"],
        warnings=report["warnings"],
        train_tokens=splits.get("train", {}).get("tokens", 0),
        report_path=report_path,
        message=report["message"],
        sources=report.get("sources", {}),
        model_max_positions=model.get("positions"),
        max_length=model.get("max_length"),
        longest_example=model.get("longest_example"),
        max_model_len=model.get("max_model_len"),
        model_digest=model.get("digest"),
    )


def read_summary(layout: ArtifactLayout) -> DataReport | None:
    """The prepare phase's DataReport from `data/report.json`: later phases read the lengths it
    resolved against the model (maxModelLen). None before prepare ran."""
    try:
        report = json.loads(layout.data_report.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return summary(report, str(layout.data_report))


def build_report(
    *,
    ok: bool,
    message: str,
    splits: dict[str, dict[str, Any]],
    findings: Findings,
    leakage: dict[str, Any],
    estimate: dict[str, Any] | None,
    settings: dict[str, Any],
    timings: dict[str, float],
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The full report as a JSON-ready dict; `model` holds the base model's position limit and the
    lengths resolved against it (maxLength, maxModelLen)."""
    items = findings.items
    return {
        "ok": ok,
        "message": message,
        "settings": settings,
        "model": model or {},
        "splits": splits,
        "dropped": dict(findings.count("dropped")),
        "errors": dict(findings.count("error")),
        "warnings": len(findings.warnings),
        "leakage": leakage,
        "estimate": estimate,
        "timings_seconds": {k: round(v, 3) for k, v in timings.items()},
        "rules": {rid: {"name": r.name, "checks": r.summary} for rid, r in RULES.items()},
        "findings": [f.to_json() for f in items[:MAX_REPORTED_FINDINGS]],
        "findings_total": len(items),
    }


def _bar(count: int, top: int, width: int = 30) -> str:
    return "█" * (round(width * count / top) if top else 0)


def render_markdown(report: dict[str, Any]) -> str:
    """A readable summary of the report."""
    out = [f"# Data report — {'usable' if report['ok'] else 'NOT usable'}", "", report["message"], ""]
    out += ["| split | rows read | examples | tokens | trainable tokens | truncated |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in report["splits"].items():
        out.append(f"| {name} | {s.get('rows', 0)} | {s.get('examples', 0)} | {s.get('tokens', 0)} | {s.get('trainable_tokens', '–')} | {s.get('truncated', 0)} |")
    for title, counts in (("Dropped rows", report["dropped"]), ("Errors", report["errors"])):
        if counts:
            out += ["", f"## {title}", "", "| rule | rows |", "| --- | ---: |"]
            out += [f"| {rid} {RULES[rid].name} | {n} |" for rid, n in sorted(counts.items())]
    train = report["splits"].get("train", {})
    if train.get("histogram"):
        hist = train["histogram"]
        top = max(h["count"] for h in hist)
        out += ["", "## Train example lengths (tokens)", "", "```"]
        out += [f"≤{h['le']:>7} {h['count']:>8} {_bar(h['count'], top)}" for h in hist]
        out += ["```", "", "Length: " + ", ".join(f"{k} {v}" for k, v in train.get("length", {}).items())]
    model = report.get("model") or {}
    if model:
        out += ["", "## Model limits", "", "| | tokens | from |", "| --- | ---: | --- |",
                f"| base model positions | {model.get('positions') or '–'} | {model.get('positions_source') or 'not stated'} |",
                f"| datasets.maxLength | {model.get('max_length')} | {model.get('max_length_source')} |",
                f"| longest example | {model.get('longest_example')} | the data |",
                f"| serving.maxModelLen | {model.get('max_model_len')} | {model.get('max_model_len_source')} |"]
    leak = report["leakage"]
    out += ["", "## Leakage", "", f"Policy `{leak.get('policy')}`: train rows whose prompt is in another split: "
            + (", ".join(f"{k} {v}" for k, v in leak.get("train", {}).items()) or "none")
            + f"; validation∩eval prompts: {leak.get('validation_eval', 0)}."]
    est = report.get("estimate")
    if est and est.get("available"):
        wall = f", about {est['wall_hours']} h on the requested GPUs" if est.get("wall_hours") is not None else ""
        out += ["", "## Cost estimate", "", f"{est['parameters']:,} parameters, {est['trained_tokens']:,} trained tokens: "
                f"{est['flops']:.3g} FLOPs ≈ {est['gpu_hours']} GPU-hours{wall} ({est['assumptions']})."]
    shown = [f for f in report["findings"] if f["severity"] != "dropped"][:50]
    if shown:
        out += ["", "## Findings", ""]
        out += [f"- `{f['file']}:{f['line']}` {f['rule']} {f['name']} ({f['severity']}): {f['message']}" for f in shown]
    return "\n".join(out) + "\n"
