"""``python -m proxy.cli``: the ``basguard`` command."""

import sys

from proxy.cli.main import main

sys.exit(main())
