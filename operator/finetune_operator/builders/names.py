"""Deterministic names of every child object (DESIGN.md §4): same job, same names, every time.

Job names are at most 40 characters (see `ObjectMeta.name`), so `<job>-train-a<N>-<index>` still fits
a 63-character DNS label. Base-model names may hold `_` and `.`, which Service names may not, so pool
names are sanitised and, when too long, shortened with a stable hash.
"""

from __future__ import annotations

import hashlib
import re

MAX_DNS_LABEL = 63


def config_map_name(job_name: str) -> str:
    return f"{job_name}-config"


def prepare_job_name(job_name: str) -> str:
    return f"{job_name}-prepare"


def service_url(service: str, namespace: str, port: int) -> str:
    """`http://<service>.<namespace>.svc:<port>`: a Service as in-cluster clients call it (the namespace's
    search path is not assumed, so it resolves from any namespace)."""
    return f"http://{service}.{namespace}.svc:{port}"


def train_service_name(job_name: str) -> str:
    """The headless Service that gives training pods stable DNS names for the rendezvous."""
    return f"{job_name}-train"


def train_job_name(job_name: str, attempt: int) -> str:
    """Each retry is a new Job (`-a0`, `-a1`, …) so a failed attempt stays inspectable."""
    return f"{job_name}-train-a{attempt}"


def eval_job_name(job_name: str) -> str:
    return f"{job_name}-eval"


def upload_job_name(job_name: str) -> str:
    return f"{job_name}-upload"


def shadow_job_name(job_name: str) -> str:
    """A canary's shadow grading Job."""
    return f"{job_name}-shadow"


def release_job_name(job_name: str) -> str:
    """The Job that drops the job's hold on the source cache."""
    return f"{job_name}-release"


def serve_name(job_name: str) -> str:
    """Deployment and Service of the tuned model (or the job's Service in front of its adapter pool)."""
    return f"{job_name}-serve"


def base_arm_name(job_name: str) -> str:
    """Deployment and Service of the base model in a canary."""
    return f"{job_name}-base"


def stable_service_name(job_name: str) -> str:
    """The canary's stable Service (and HTTPRoute): clients call `<job>` and get either arm."""
    return job_name


POOL_DIGEST_CHARS = 10
"""Hex digits of the base model's digest in its pool's name."""


def pool_name(base_model_name: str, model_digest: str | None = None) -> str:
    """The shared adapter pool of one base model: `vllm-<base>-<digest>` as a valid DNS-1035 label.

    The base's content digest (`status.data.modelDigest`) is what identifies the pool: two bases with
    one name and different weights get two pools; the name is there for people. Without a digest (a
    job validated before digests were reported) the pool is `vllm-<base>`."""
    slug = re.sub(r"[^a-z0-9-]+", "-", base_model_name.lower()).strip("-") or "base"
    suffix = f"-{model_digest.split(':', 1)[-1][:POOL_DIGEST_CHARS]}" if model_digest else ""
    name = f"vllm-{slug}"
    if len(name) + len(suffix) <= MAX_DNS_LABEL:
        return name + suffix
    digest = hashlib.sha256(base_model_name.encode()).hexdigest()[:8]
    return f"{name[: MAX_DNS_LABEL - 9 - len(suffix)].rstrip('-')}-{digest}{suffix}"
