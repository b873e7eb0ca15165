"""Load and validate FineTuneJob / FineTuneQueue manifests offline, with the API server's verdict.

Three checks, each declared once: the pydantic models (the CRD schema is generated from them), the
CRD's CEL rules (evaluated offline from the same text, `admission.py`), and, for a job, the operator's
builders (admitted means buildable: a spec the operator cannot render is refused here, with the
builder's message). Every message starts with the field path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from finetune_api import API_VERSION, FineTuneJob, FineTuneQueue
from finetune_api.common import ApiModel

from .admission import cel_errors

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster than the pure-Python parser
KINDS: dict[str, type[ApiModel]] = {"FineTuneJob": FineTuneJob, "FineTuneQueue": FineTuneQueue}


@dataclass
class Verdict:
    """The outcome of validating one document."""

    source: str
    kind: str = ""
    name: str = ""
    errors: list[str] = field(default_factory=list)
    obj: BaseModel | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def format_validation_error(exc: ValidationError) -> list[str]:
    """Pydantic errors as `field.path: message`, the way the API server words them."""
    messages = []
    for err in exc.errors(include_url=False):
        loc = _path(tuple(err["loc"]))
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
            head = msg.split(" ", 1)[0]
            if head.startswith(".") and head.endswith(":"):  # a sub-field of this location
                loc, msg = loc + head[:-1], msg[len(head) + 1 :]
            elif head.endswith(":"):  # cross-field rules carry their full field path
                messages.append(msg)
                continue
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        if err["type"] == "literal_error":
            msg = f"Unsupported value: {err['input']!r}: {msg}"
        messages.append(f"{loc}: {msg}" if loc else msg)
    return messages


def validate_document(doc: Any, source: str) -> Verdict:
    """Validate one parsed YAML document."""
    if not isinstance(doc, dict):
        return Verdict(source, errors=["document is not a mapping"])
    kind = doc.get("kind", "")
    verdict = Verdict(source, kind=str(kind), name=str((doc.get("metadata") or {}).get("name", "")))
    if doc.get("apiVersion") != API_VERSION:
        verdict.errors.append(f"apiVersion: must be {API_VERSION}, got {doc.get('apiVersion')!r}")
        return verdict
    model = KINDS.get(kind)
    if model is None:
        verdict.errors.append(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
        return verdict
    try:
        obj = model.model_validate(doc, by_alias=True, by_name=False)
    except ValidationError as exc:
        verdict.errors.extend(format_validation_error(exc))
        return verdict
    verdict.errors.extend(cel_errors(kind, obj.to_api()))
    if not verdict.errors and isinstance(obj, FineTuneJob):
        verdict.errors.extend(build_errors(obj))
    if not verdict.errors:
        verdict.obj = obj
    return verdict


def build_errors(job: FineTuneJob) -> list[str]:
    """The builders' refusals: every object of every phase is rendered, as the operator would."""
    from finetune_operator.builders.render import render_job
    from finetune_operator.settings import OperatorSettings

    job = job.model_copy(deep=True)
    job.metadata.namespace = job.metadata.namespace or "default"
    try:
        render_job(job, OperatorSettings.from_env())
    except ValueError as exc:
        return [str(exc)]
    return []


def load_documents(path: Path) -> list[tuple[Any, str]]:
    """YAML documents of a file with a `file#index` label each; a YAML error is raised as ValueError."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        docs = [d for d in yaml.load_all(text, Loader=_LOADER) if d is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    return [(doc, f"{path}#{i}" if len(docs) > 1 else str(path)) for i, doc in enumerate(docs)]


def validate_files(paths: list[Path]) -> list[Verdict]:
    """Validate every document of every file."""
    verdicts: list[Verdict] = []
    for path in paths:
        try:
            documents = load_documents(path)
        except ValueError as exc:
            verdicts.append(Verdict(str(path), errors=[str(exc)]))
            continue
        verdicts.extend(validate_document(doc, source) for doc, source in documents)
    return verdicts


def load_job(path: Path) -> FineTuneJob:
    """The single FineTuneJob in a file, or ValueError with every problem."""
    verdicts = [v for v in validate_files([path]) if v.kind == "FineTuneJob" or not v.ok]
    bad = [f"{v.source}: {e}" for v in verdicts for e in v.errors]
    if bad:
        raise ValueError("\n".join(bad))
    jobs = [v.obj for v in verdicts if isinstance(v.obj, FineTuneJob)]
    if len(jobs) != 1:
        raise ValueError(f"{path}: expected exactly one FineTuneJob, found {len(jobs)}")
    return jobs[0]
