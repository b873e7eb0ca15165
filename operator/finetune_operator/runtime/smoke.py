"""The smoke request that makes a deployed endpoint Serving: one chat completion from the served model."""

from __future__ import annotations

import httpx

SMOKE_TIMEOUT_SECONDS = 30.0


def smoke_request(base_url: str, model: str, api_key: str | None = None,
                  timeout: float = SMOKE_TIMEOUT_SECONDS) -> tuple[bool, str]:
    """One chat completion from `model`, as a client calls it (with the endpoint's API key when it has
    one); ok only when a completion comes back from that model."""
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 4, "temperature": 0}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.post(f"{base_url}/v1/chat/completions", json=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        return False, f"smoke request to {base_url} failed: {e}"
    if response.status_code != 200:
        return False, f"smoke request: HTTP {response.status_code}: {response.text[:200]}"
    try:
        answer = response.json()
        content = answer["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return False, f"smoke request: no completion in {response.text[:200]}"
    served = answer.get("model")
    if served not in (model, None) and not str(served).startswith(f"{model}@"):
        return False, f"smoke request answered by model {served!r}, not {model!r}"
    return True, f"model {model} answered {content[:40]!r} at {base_url}"
