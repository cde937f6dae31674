"""The guarded and passed-through services, framework-free: they take parsed requests and the
runtime state and return what the routes send (chat and legacy completions, the Responses API,
passthrough, the Realtime relay)."""
