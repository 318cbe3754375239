"""``tspipe encoder import FILE`` and ``tspipe encoder list``: official weights in the
catalog (and as MLflow model versions), and what the catalog knows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tspipe.doors.options import ParamsOpt, RootOpt, load_run

app = typer.Typer(help="Import and list encoder checkpoints.", no_args_is_help=True)


@app.command("import")
def encoder_import(
    file: Annotated[Path, typer.Argument(help="Checkpoint: plain state_dict, torchvision, "
                                         "TSP/TAC training file, safetensors or tspipe.")],
    arch: Annotated[str | None, typer.Option(help="Encoder name (default: read from the "
                                             "file or inferred from its keys and shapes).")]
    = None,
    origin: Annotated[str, typer.Option(help="official | pretrain | scratch.")] = "official",
    inflate_from: Annotated[Path | None, typer.Option(
        "--inflate-from", help="A 2D Inception-v1 (torchvision GoogLeNet) state_dict: inflate "
        "it to I3D (the paper's ImageNet initialisation), write FILE, import that.")] = None,
    stream: Annotated[str, typer.Option(help="With --inflate-from: rgb (i3d) or flow "
                                        "(i3d_flow, first layer averaged over RGB).")] = "rgb",
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path(),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate a checkpoint (layout, shapes, sha256 prefix of released names) and record it
    in the catalog and as an MLflow model version. With --inflate-from, FILE is written
    first: the 2D weights inflated to I3D (the catalog records the 2D file as its parent)."""
    import dataclasses

    from tspipe.doors.encoders import import_encoder

    p, paths = load_run(params, root)
    result = import_encoder(file, p, paths, arch=arch, origin=origin,
                            inflate_from=inflate_from, stream=stream)
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(result), indent=2))
    else:
        typer.echo(f"{result.sha256[:12]}  {result.arch}  ({result.layout}, {result.loaded} "
                   f"tensors, dropped {len(result.dropped)})  model version "
                   f"{result.model_version}  {result.uri}")


@app.command("list")
def encoder_list(
    arch: Annotated[str | None, typer.Option(help="Only this architecture.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path(),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the encoder checkpoints the catalog knows, oldest first."""
    from tspipe.catalog import to_jsonable
    from tspipe.doors.recording import open_catalog

    p, paths = load_run(params, root)
    with open_catalog(p, paths) as cat:
        rows = cat.checkpoints(arch)
    if as_json:
        typer.echo(json.dumps(to_jsonable(rows), indent=2))
        return
    for r in rows:
        typer.echo(f"{r.sha256[:12]}  {r.arch:<14} {r.origin:<9} {r.uri or ''}")
