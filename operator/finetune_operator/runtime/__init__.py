"""The controller runtime between Kopf's handlers and the pure core: the shared context (one client,
one settings object), the job controller and the embedded queue's admission loop, and the machinery they
use (executor, locks, timers, expectations, the job cache, the smoke request)."""
