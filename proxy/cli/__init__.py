"""The ``basguard`` command line: one module per group of subcommands."""
