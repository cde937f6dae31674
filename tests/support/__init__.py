"""What the test suites share: servers on loopback, the fake upstream, waiting helpers and the
architecture contracts the import linter checks."""
