"""The stage contract shared by every door (CLI, DVC, Prefect).

A stage reads its inputs from files, writes its outputs atomically and returns a small
typed result. It imports no Prefect, MLflow or SQLAlchemy. Each stage module declares
its :class:`Stage` (``STAGE``, at its end) beside its ``run``: what the doors need to know
about it: which params sections it reads (DVC ``params:``,
cache keys, MLflow params), which files decide its output (cache keys), which files it
writes (cache validity, DVC ``outs:``) and which modules hold its code (code version).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tspipe.config import Params
from tspipe.errors import StageError
from tspipe.io import result_dict, sha256_file, sha256_json
from tspipe.paths import RunPaths
from tspipe.provenance import code_version
from tspipe.reporting import Reporter


class StageResult(Protocol):
    def metrics(self) -> dict[str, float]:
        """Numbers worth tracking (MLflow metrics, DVC metrics file)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (artifacts, catalog)."""


@dataclass(frozen=True)
class Batch:
    """A unit of a stage with many videos, a group of whole videos (``--shard`` deals
    them out; not a batch of clips: those are :class:`tspipe.extract.loader.ClipBatch`):
    which ids, and a content hash of what decides their output (their annotation entries,
    their files' sha256). The gvf and extract stages write one HDF5 shard per Batch."""

    ids: tuple[str, ...]
    key: str


@dataclass(frozen=True)
class Batching:
    """How a stage with many units splits: the Prefect door runs one cached task per batch
    and then ``finalize``; the CLI (and so DVC) runs every batch, then ``finalize``."""

    batches: Callable[[Params, RunPaths], list[Batch]]
    run_batch: Callable[[Params, RunPaths, Batch, Reporter], Any]
    batch_done: Callable[[Params, RunPaths, Batch], bool]
    finalize: Callable[[Params, RunPaths, Reporter], Any]
    # Every batch and whether it is done, in one pass, for a stage that must load something
    # to answer (the gvf and extract stages: the encoder, to know the version): loaded once,
    # not once per batch. None: ``batch_done`` of each batch.
    status: Callable[[Params, RunPaths], list[tuple[Batch, bool]]] | None = None

    def plan(self, params: Params, paths: RunPaths) -> list[tuple[Batch, bool]]:
        """Every batch, in order, and whether it is done."""
        if self.status is not None:
            return self.status(params, paths)
        return [(b, self.batch_done(params, paths, b)) for b in self.batches(params, paths)]

    def run_all(self, params: Params, paths: RunPaths, reporter: Reporter,
                shard: tuple[int, int] | None = None) -> Any:
        """Every batch, then ``finalize``. ``shard=(i, n)`` runs only batches ``i-1, i-1+n,
        ...`` (``i`` in 1..n), and finalizes only once every batch is done."""
        batches = [b for b, _ in self.plan(params, paths)]
        if shard is None:
            mine = batches
        else:
            i, n = shard
            if not 1 <= i <= n:
                raise StageError(f"--shard {i}/{n}: i must be in 1..{n}")
            mine = batches[i - 1::n]
        for batch in mine:
            self.run_batch(params, paths, batch, reporter)
        if shard is not None:
            done = sum(d for _, d in self.plan(params, paths))
            if done < len(batches):
                return PartialRun(shard=f"{shard[0]}/{shard[1]}", batches=len(batches),
                                  ran=len(mine), done=done)
        return self.finalize(params, paths, reporter)


@dataclass(frozen=True)
class PartialRun:
    """What ``--shard i/n`` returns while other shards are still to run: nothing is
    finalized or recorded yet; the run that completes the last shard finalizes."""

    shard: str
    batches: int
    ran: int
    done: int

    def metrics(self) -> dict[str, float]:
        return {"batches": float(self.batches), "ran": float(self.ran),
                "done": float(self.done)}

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


@dataclass(frozen=True)
class DisabledResult:
    """What a disabled stage's run wrote: ``reason`` (the params key) and its markers."""

    reason: str
    markers: list[Path]

    def metrics(self) -> dict[str, float]:
        return {"enabled": 0.0}

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    sections: tuple[str, ...]
    inputs: Callable[[Params, RunPaths], list[Path]]
    outputs: Callable[[Params, RunPaths], list[Path]]
    code: tuple[str, ...]  # modules whose source decides the output
    run_whole: Callable[[Params, RunPaths, Reporter], Any] | None = None
    batching: Batching | None = None
    enabled: Callable[[Params], bool] = lambda params: True
    # Single keys of other sections the stage reads (DVC ``params:`` beside ``sections``).
    extra_params: tuple[str, ...] = ()
    # Runs once per ``compare.variants`` entry, as ``NAME@VARIANT`` (DVC's foreach names),
    # with that variant's params and paths (see :func:`tspipe.stages.bind`).
    per_variant: bool = False
    # The params and paths the stage runs with, from the pipeline's (the base stage: the
    # pretrain section updated by ``base.pretrain``, products under ``base/``).
    scope: Callable[[Params, RunPaths], tuple[Params, RunPaths]] | None = None
    # The recorder (tspipe.doors.recording) of its result, when not the stage's own name.
    record_as: str | None = None
    # Writes the outputs as markers of a disabled stage, so that DVC (which runs every
    # foreach variant and every stage in dvc.yaml) finds what it declared; see
    # :meth:`run_disabled`. None: the stage runs whatever ``enabled`` says.
    disabled: Callable[[Params, RunPaths], DisabledResult] | None = None

    def run_disabled(self, params: Params, paths: RunPaths) -> DisabledResult | None:
        """When ``params`` disable the stage and it has a ``disabled`` writer: its markers,
        written (no MLflow run, no catalog row: nothing was made). Else None: run it."""
        if self.disabled is None or self.enabled(params):
            return None
        return self.disabled(params, paths)

    def run(self, params: Params, paths: RunPaths, reporter: Reporter,
            shard: tuple[int, int] | None = None) -> Any:
        """Run the whole stage now (no cache): what `tspipe stage NAME` does."""
        if self.batching is not None:
            return self.batching.run_all(params, paths, reporter, shard)
        if shard is not None:
            raise StageError(f"stage {self.name} has no shards (--shard is for stages that "
                             "run in batches)")
        assert self.run_whole is not None, self.name
        return self.run_whole(params, paths, reporter)

    def batch_key(self, params: Params, batch: Batch) -> str:
        return sha256_json({"stage": self.name, "params": params.section_hash(*self.sections),
                            "code": self.code_version(), "batch": batch.key})

    def code_version(self) -> str:
        """Hash of the package version and the source of the stage's modules."""
        return code_version(self.code)

    def input_hash(self, params: Params, paths: RunPaths) -> str:
        """Content hash of everything that decides this stage's output."""
        return sha256_json({
            "stage": self.name,
            "params": params.section_hash(*self.sections),
            "code": self.code_version(),
            "inputs": [[str(p.relative_to(paths.root)) if p.is_relative_to(paths.root) else str(p),
                        tree_hash(p)] for p in self.inputs(params, paths)],
        })

    def outputs_present(self, params: Params, paths: RunPaths) -> bool:
        return all(p.exists() for p in self.outputs(params, paths))


def tree_hash(path: Path) -> str | None:
    """sha256 of a file, or of a folder's (relative name, sha256) list; None if absent."""
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        return sha256_json([[str(p.relative_to(path)), sha256_file(p)] for p in files])
    return None


def files_hash(paths: Iterable[Path]) -> str:
    return sha256_json([tree_hash(p) for p in paths])
