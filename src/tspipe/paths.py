"""The run directory: the one place that names every file a stage reads or writes.

All outputs live under ``root`` (the project folder by default), tracked by DVC:
``data/``, ``models/``, ``features/``, ``results/``, ``metrics/``, ``plots/``. State that is
not a product (Prefect's result cache) lives in ``.tspipe/``.

A variant's paths (:meth:`RunPaths.for_variant`: the ``compare.variants`` of params.yaml, and
``base``) keep the shared data (``data/``) and put its products one folder down:
``models/pretrain/<variant>/``, ``features/<variant>/``, ``results/<variant>/``,
``metrics/<variant>/``, ``plots/<variant>/``. Stages never know which variant they run.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from tspipe.io import safe_id


@dataclass(frozen=True)
class RunPaths:
    root: Path
    variant: str | None = None

    def for_variant(self, name: str | None) -> RunPaths:
        """The same run directory, with products under the variant's folders."""
        return dataclasses.replace(
            self, variant=None if name is None else safe_id(name, what="variant name"))

    def _scoped(self, folder: Path) -> Path:
        return folder if self.variant is None else folder / self.variant

    @classmethod
    def at(cls, root: str | Path = ".") -> RunPaths:
        return cls(Path(root).resolve())

    def resolve(self, path: str | Path) -> Path:
        """A path from params.yaml: absolute as given, relative to the run directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.root / p

    def relative(self, path: str | Path) -> str:
        """How a path is written into a record (a report, a manifest): inside the run
        directory, a POSIX path relative to its root, so the record still holds when the
        folder is copied or moved; elsewhere, the absolute path."""
        # abspath, not resolve: ".." folded, symlinks (a data folder linked in) kept.
        p = Path(os.path.abspath(self.resolve(path)))  # noqa: PTH100
        root = Path(os.path.abspath(self.root))  # noqa: PTH100
        return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)

    def to_uri(self, path: str | Path) -> str:
        """A file as the catalog stores it: inside the run directory, relative to its root
        (no scheme: the folder can move); elsewhere an absolute ``file://`` URI."""
        rel = self.relative(path)
        return rel if not Path(rel).is_absolute() else Path(rel).as_uri()

    def resolve_uri(self, uri: str) -> Path:
        """The local file ``uri`` names: a ``file://`` URI's path, an absolute path as is, a
        relative one under the run directory (what :meth:`to_uri` wrote). Another scheme
        (https, s3) names no local file: ValueError."""
        parts = urlsplit(uri)
        if parts.scheme == "file" and parts.netloc in ("", "localhost"):
            return Path(url2pathname(unquote(parts.path)))
        if len(parts.scheme) > 1:  # one letter: a Windows drive
            raise ValueError(f"{uri}: not a local file")
        return self.resolve(uri)

    def resolve_sqlite_url(self, url: str) -> str:
        """``sqlite:///rel.db`` -> ``sqlite:////abs/run/dir/rel.db``; other URLs unchanged."""
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            return prefix + str(self.resolve(url[len(prefix):]))
        return url

    # -- data ------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def annotations_dir(self) -> Path:
        return self.data / "annotations"

    @property
    def annotations(self) -> Path:
        """The ingested, validated annotations (ActivityNet v1.3 JSON, selected subsets)."""
        return self.annotations_dir / "annotations.json"

    @property
    def annotation_report(self) -> Path:
        """Every issue found while reading the annotations: what was kept and what was not."""
        return self.annotations_dir / "report.json"

    @property
    def videos(self) -> Path:
        return self.data / "videos"

    def video(self, video_id: str, ext: str = ".mp4") -> Path:
        return self.videos / f"{safe_id(video_id)}{ext}"

    @property
    def standardized(self) -> Path:
        """Constant-frame-rate copies made by ``decode`` (the originals stay untouched)."""
        return self.data / "standardized"

    @property
    def manifest(self) -> Path:
        return self.data / "manifest" / "downloads.json"

    @property
    def clips(self) -> Path:
        return self.data / "clips"

    @property
    def groundtruth_table(self) -> Path:
        """TSP-style segment rows (action and background) for training: Parquet."""
        return self.clips / "groundtruth.parquet"

    @property
    def windows_table(self) -> Path:
        """Sliding clip windows per video for extraction: Parquet."""
        return self.clips / "windows.parquet"

    @property
    def decode_report(self) -> Path:
        return self.data / "reports" / "decode_report.json"

    @property
    def flow_root(self) -> Path:
        """The flow stage's folder: one quantized flow file per video, its report."""
        return self.data / "flow"

    def flow_file(self, video_id: str) -> Path:
        return self.flow_root / "videos" / f"{safe_id(video_id)}.h5"

    @property
    def flow_report(self) -> Path:
        return self.flow_root / "report.json"

    # -- products --------------------------------------------------------------------
    def model_dir(self, run: str) -> Path:
        return self._scoped(self.root / "models" / safe_id(run, what="run name"))

    @staticmethod
    def staging_dir(folder: Path) -> Path:
        """Where a new version of the product folder ``folder`` is written until it is
        complete, then renamed onto ``folder``: ``.NAME.next`` beside it (outside the folder
        DVC tracks; hidden, so listings and fingerprints of the products skip it)."""
        return folder.with_name(f".{folder.name}.next")

    @staticmethod
    def retired_dir(folder: Path) -> Path:
        """Where ``folder``'s former version waits, between the renames of a swap, to be
        removed: ``.NAME.old`` beside it."""
        return folder.with_name(f".{folder.name}.old")

    @property
    def pretrain_checkpoint(self) -> Path:
        """The pretrain stage's encoder: extraction's default weights."""
        return self.model_dir("pretrain") / "checkpoint.pt"

    @property
    def features_root(self) -> Path:
        return self._scoped(self.root / "features")

    def features_dir(self, version: str) -> Path:
        return self.features_root / safe_id(version, what="feature version")

    @property
    def features_current(self) -> Path:
        """``{"feature_version", "dir"}`` of the extraction that finished last."""
        return self.features_root / "current.json"

    @property
    def gvf_root(self) -> Path:
        return self.data / "gvf"

    @property
    def gvf_file(self) -> Path:
        """The global video features TSP training reads (its released format)."""
        return self.gvf_root / "gvf.h5"

    @property
    def results_root(self) -> Path:
        return self._scoped(self.root / "results")

    def results_dir(self, version: str, method: str) -> Path:
        return (self.results_root / safe_id(version, what="feature version")
                / safe_id(method, what="method"))

    @property
    def metrics_dir(self) -> Path:
        return self._scoped(self.root / "metrics")

    def metrics(self, stage: str) -> Path:
        return self.metrics_dir / f"{safe_id(stage, what='stage')}.json"

    @property
    def plots_dir(self) -> Path:
        return self._scoped(self.root / "plots")

    def plot(self, stage: str, name: str, ext: str = ".csv") -> Path:
        return self.plots_dir / f"{safe_id(stage, what='stage')}_{safe_id(name, what='plot')}{ext}"

    @property
    def reports_dir(self) -> Path:
        """Human-readable summaries (the comparison table): never variant-scoped."""
        return self.root / "reports"

    # -- state -----------------------------------------------------------------------
    @property
    def state(self) -> Path:
        return self.root / ".tspipe"

    @property
    def prefect_results(self) -> Path:
        return self.state / "prefect-results"
