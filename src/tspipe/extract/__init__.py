"""Clip features: decode-once window loader, batched inference, HDF5 writer, exporters, GVF.

- :mod:`.preprocess`: frames -> encoder input, ``reference`` (TSP's transform, exactly) or
  ``fast`` (resize while decoding); :class:`Preprocess`.
- :mod:`.loader`: each video decoded once into its ``ClipSampler`` windows, packed into
  full batches across videos, DataLoader workers split by video; :class:`ClipBatch`.
- :mod:`.runner`: :func:`extract_features` (eval, inference mode, AMP/channels-last on
  CUDA), complete videos to a writer, resume by skipping what it has.
- :mod:`.writers`: :class:`H5FeatureWriter` (atomic per-video parts, atomic merge).
- :mod:`.export`: ``.npy`` / ``.csv`` per video, shard merge.
- :mod:`.gvf`: global video features in TSP's released format; :func:`read_gvf`.
- :mod:`.compare`: :func:`compare_modes` (fast vs reference).
- :mod:`.files`: :func:`run_extract`, extraction of video files outside a run directory
  (``tspipe extract FILES``).
- :mod:`.concat`: two streams' features, concatenated per clip (I3D).

Nothing here imports Prefect, MLflow or the catalog; a feature version's id is
:func:`tspipe.provenance.feature_version_id`.
"""

from tspipe.extract.compare import ModeComparison, compare_modes
from tspipe.extract.export import export_csv, export_npy, merge_h5, read_csv_features
from tspipe.extract.gvf import GVFWriter, extract_gvf, pool_features, read_gvf
from tspipe.extract.loader import (
    ClipBatch,
    VideoClip,
    VideoFailure,
    VideoInput,
    WindowDataset,
    make_loader,
    video_clips,
)
from tspipe.extract.preprocess import Preprocess, center_crop_offsets, default_resize
from tspipe.extract.runner import ExtractResult, FeatureWriter, extract_features
from tspipe.extract.writers import (
    H5FeatureWriter,
    MemoryWriter,
    feature_attrs,
    read_attrs,
    read_features,
)

__all__ = [
    "ClipBatch",
    "ExtractResult",
    "FeatureWriter",
    "GVFWriter",
    "H5FeatureWriter",
    "MemoryWriter",
    "ModeComparison",
    "Preprocess",
    "VideoClip",
    "VideoFailure",
    "VideoInput",
    "WindowDataset",
    "center_crop_offsets",
    "compare_modes",
    "default_resize",
    "export_csv",
    "export_npy",
    "extract_features",
    "extract_gvf",
    "feature_attrs",
    "make_loader",
    "merge_h5",
    "pool_features",
    "read_attrs",
    "read_csv_features",
    "read_features",
    "read_gvf",
    "video_clips",
]
