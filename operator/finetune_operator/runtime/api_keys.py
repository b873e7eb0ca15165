"""The serving endpoints' API key, read from the namespace's Secret when the operator calls vLLM (the
smoke request, the adapter pool's load/unload/list calls). Never logged, never written anywhere."""

from __future__ import annotations

import base64

from finetune_api.contract.vllm import API_KEY_SECRET, API_KEY_SECRET_KEY

from ..k8s import K8s
from ..settings import OperatorSettings
from .executor import Executor


class ApiKeyMissing(LookupError):
    """The namespace has no usable API key Secret: serving waits for it (and says so in the job's status)."""


class ApiKeys:
    def __init__(self, k8s: K8s, settings: OperatorSettings, executor: Executor) -> None:
        self.k8s = k8s
        self.settings = settings
        self.executor = executor

    async def get(self, namespace: str) -> str | None:
        """The key in `namespace`; None when the endpoints have none (`settings.serving_api_key` off)."""
        if not self.settings.serving_api_key:
            return None
        secret = await self.executor.call(self.k8s.get, "Secret", namespace, API_KEY_SECRET)
        encoded = ((secret or {}).get("data") or {}).get(API_KEY_SECRET_KEY)
        if not encoded:
            raise ApiKeyMissing(f"Secret {namespace}/{API_KEY_SECRET} with key {API_KEY_SECRET_KEY!r} is missing: the "
                                "serving endpoint requires an API key (create it, e.g. kubectl create secret generic "
                                f"{API_KEY_SECRET} --from-literal={API_KEY_SECRET_KEY}=<key>)")
        return base64.b64decode(encoded).decode().strip()
