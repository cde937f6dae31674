from __future__ import annotations

import os

# litellm (used by the gateway) reaches for the network at import unless told otherwise.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
