"""What the test suites and the benchmarks share: servers on loopback (``loopback``), the fake
upstream and a scripted model caller for the signals (``fake_upstream``, ``fake_caller``),
basguard's test config and app (``gateway``), one way to wait (``waiting``), metrics and a real
Prometheus (``metrics``, ``prometheus``), the decision store's records and a throwaway PostgreSQL
(``decision_store``, ``postgres_cluster``), the ops console's gateway and keys and a headless
chromium (``admin_console``, ``browser``), and the architecture contracts the import linter
checks (``import_contracts``). Fixtures stay in the ``conftest.py`` files and build on these; no
test module imports another."""
