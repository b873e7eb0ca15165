"""Local serving: a vLLM CPU server for a run's artifacts (`ftctl serve`, `ftctl run`)."""
