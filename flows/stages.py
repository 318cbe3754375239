"""Deployment entry points: one flow per stage (see flows/prefect.yaml)."""

from tspipe.doors.prefect_stages import STAGE_FLOWS

synth = STAGE_FLOWS["synth"]
ingest = STAGE_FLOWS["ingest"]
download = STAGE_FLOWS["download"]
decode = STAGE_FLOWS["decode"]
flow = STAGE_FLOWS["flow"]
base = STAGE_FLOWS["base"]
gvf = STAGE_FLOWS["gvf"]
pretrain = STAGE_FLOWS["pretrain"]
extract = STAGE_FLOWS["extract"]
evaluate = STAGE_FLOWS["evaluate"]
compare = STAGE_FLOWS["compare"]

__all__ = ["base", "compare", "decode", "download", "evaluate", "extract", "flow", "gvf",
           "ingest", "pretrain", "synth"]
