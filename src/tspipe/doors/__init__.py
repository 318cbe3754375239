"""Every way into tspipe, and nothing else: each parses, calls a stage, records the result.

- :mod:`.cli`: the ``tspipe`` command (Typer); mounts the sub-apps below. ``dvc.yaml``
  calls ``tspipe stage NAME``.
- :mod:`.cli_catalog` (``tspipe catalog``), :mod:`.cli_encoder` (``tspipe encoder``),
  :mod:`.cli_eval` (``tspipe eval``), :mod:`.cli_probe` (``tspipe probe``),
  :mod:`.cli_extract` (``tspipe extract FILES``).
- :mod:`.runner`: run one stage now and record it (the CLI's and DVC's path).
- :mod:`.prefect_stages`, :mod:`.prefect_pipeline`: the Prefect flows (one per stage, and
  the pipeline); deployments' entry points are the top-level ``flows/*.py``.
- :mod:`.recording`: what a stage returned, into the catalog (one recorder per stage).
- :mod:`.encoders`: ``tspipe encoder import`` (official weights into the catalog).
- :mod:`.train`: ``torchrun -m tspipe.doors.train``: one training on several GPUs.

Doors import stages, tracking and the catalog; nothing below imports a door
(``tests/test_layers.py``).
"""

import os

# Without this, Prefect's ephemeral server logs an ERROR line about telemetry offline.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
