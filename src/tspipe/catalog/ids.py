"""The feature version id: a content hash of everything that decides the feature numbers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tspipe.errors import CatalogError
from tspipe.io import sha256_json

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Bumped only if the recipe below changes; old ids then stay distinct from new ones.
_RECIPE = "tspipe.feature_version/1"


def check_sha256(value: str, *, field: str) -> str:
    """``value`` lower-cased if it is 64 hex digits, else CatalogError naming ``field``."""
    digest = value.lower() if isinstance(value, str) else value
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise CatalogError(f"{field} {value!r} is not a sha256 (64 hex digits)")
    return digest


def feature_version_id(
    checkpoint_sha256: str,
    extract_params: Mapping[str, Any],
    manifest_sha256: str,
    code_version: str,
) -> str:
    """sha256 of the canonical JSON of the checkpoint, the extraction params, the video
    manifest's hash (ids + file hashes) and the extraction code's version.

    Key order in ``extract_params`` does not matter; any value that changes changes the id.
    """
    if not code_version:
        raise CatalogError("code_version is empty: the extraction code's version is part "
                           "of the feature version id")
    return sha256_json({
        "recipe": _RECIPE,
        "checkpoint_sha256": check_sha256(checkpoint_sha256, field="checkpoint_sha256"),
        "extract_params": dict(extract_params),
        "manifest_sha256": check_sha256(manifest_sha256, field="manifest_sha256"),
        "code_version": code_version,
    })
