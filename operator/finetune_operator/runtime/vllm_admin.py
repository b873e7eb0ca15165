"""vLLM's run-time adapter API on one replica (the edge of `reconcile.pool`): list, load, unload.

`POST /v1/load_lora_adapter` and `/v1/unload_lora_adapter` exist when the server runs with
`VLLM_ALLOW_RUNTIME_LORA_UPDATING` (the pool's pods do); every call carries the pool's API key when
one is set (vLLM's `--api-key` guards every `/v1` path)."""

from __future__ import annotations

import httpx

TIMEOUT_SECONDS = 60.0
"""Loading reads the adapter from disk; a large adapter on a slow volume takes seconds."""


class AdapterCallFailed(RuntimeError):
    """A replica refused or did not answer an adapter call; the pool reconcile retries it."""


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def listed_adapters(url: str, api_key: str | None) -> frozenset[str]:
    """The adapter names a replica lists in `/v1/models` (cards with a `parent`: the base has none)."""
    try:
        response = httpx.get(f"{url}/v1/models", headers=_headers(api_key), timeout=TIMEOUT_SECONDS)
    except httpx.HTTPError as e:
        raise AdapterCallFailed(f"GET {url}/v1/models: {e}") from None
    if response.status_code != 200:
        raise AdapterCallFailed(f"GET {url}/v1/models: HTTP {response.status_code}: {response.text[:200]}")
    return frozenset(card["id"] for card in response.json().get("data") or [] if card.get("parent"))


def load_adapter(url: str, name: str, path: str, api_key: str | None) -> None:
    _post(url, "load_lora_adapter", {"lora_name": name, "lora_path": path}, api_key)


def unload_adapter(url: str, name: str, api_key: str | None) -> None:
    _post(url, "unload_lora_adapter", {"lora_name": name}, api_key)


def _post(url: str, endpoint: str, body: dict[str, str], api_key: str | None) -> None:
    try:
        response = httpx.post(f"{url}/v1/{endpoint}", json=body, headers=_headers(api_key), timeout=TIMEOUT_SECONDS)
    except httpx.HTTPError as e:
        raise AdapterCallFailed(f"{endpoint} {body['lora_name']} on {url}: {e}") from None
    if response.status_code != 200:
        what = f"{body['lora_name']} ({body['lora_path']})" if "lora_path" in body else body["lora_name"]
        raise AdapterCallFailed(f"{endpoint} {what} on {url}: HTTP {response.status_code}: {response.text[:300]}")
