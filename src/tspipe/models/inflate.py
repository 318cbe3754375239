"""2D -> 3D inflation, I3D's bootstrapping (Carreira & Zisserman 2017, section 2.4).

A 2D kernel (O, I, kh, kw) becomes (O, I, t, kh, kw): copied t times along time and divided
by t, so on a video that repeats one frame every time position whose receptive field lies
inside the clip sees exactly the 2D activation (the zero "SAME" padding at the clip's ends
breaks this only near the edges). BatchNorm parameters, buffers and biases are copied.

``inflate_inception_v1`` maps torchvision's GoogLeNet state_dict (``torchvision.models.
googlenet``, the layout users hold) onto ``InceptionI3d`` keys:

=====================================  ======================================  ====
torchvision GoogLeNet                  I3D                                     t
=====================================  ======================================  ====
``conv1.{conv,bn}``  7x7 /2            ``Conv3d_1a_7x7.{conv3d,bn}``           7
``conv2``            1x1               ``Conv3d_2b_1x1``                       1
``conv3``            3x3               ``Conv3d_2c_3x3``                       3
``inception3a, 3b``                    ``Mixed_3b, 3c``
``inception4a..4e``                    ``Mixed_4b..4f``
``inception5a, 5b``                    ``Mixed_5b, 5c``
  ``branch1``        1x1                 ``b0``                                1
  ``branch2.0``, ``branch2.1`` 1x1, 3x3  ``b1a``, ``b1b``                      1, 3
  ``branch3.0``, ``branch3.1`` 1x1, 3x3  ``b2a``, ``b2b``                      1, 3
  ``branch4.1``      1x1 (after pool)    ``b3b``                               1
``fc`` (only with include_fc)          ``logits.conv3d`` (1x1x1, with bias)    1
=====================================  ======================================  ====

``branch3.1`` is 3x3 in torchvision (the paper's 5x5 slot; torchvision keeps the 3x3 "known
bug" for weight compatibility), which is what I3D's 3x3x3 ``b2b`` needs. Left out: ``aux1.*``
and ``aux2.*`` (auxiliary classifiers) and, unless asked, ``fc.*`` (its ImageNet classes are
not the video classes). The max-pools have no weights. Two caveats: torchvision's forward
pads symmetrically (conv1 3/3, ceil-mode pools) where I3D pads "SAME" (conv1 2/3), so the
inflated net reproduces a SAME-padded GoogLeNet, not torchvision's forward bit for bit; and
the result is for the RGB stream (3 input channels): the flow stream's 2-channel
``Conv3d_1a_7x7`` needs its own first-layer weights.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from tspipe.errors import TspipeError

BN_FIELDS = ("weight", "bias", "running_mean", "running_var")
OPTIONAL_BN_FIELDS = ("num_batches_tracked",)  # absent from PyTorch <= 0.4 files
DROPPED_PREFIXES = ("aux1.", "aux2.")

_BLOCKS = {
    "inception3a": "Mixed_3b", "inception3b": "Mixed_3c",
    "inception4a": "Mixed_4b", "inception4b": "Mixed_4c", "inception4c": "Mixed_4d",
    "inception4d": "Mixed_4e", "inception4e": "Mixed_4f",
    "inception5a": "Mixed_5b", "inception5b": "Mixed_5c",
}
_BRANCHES = {"branch1": ("b0", 1), "branch2.0": ("b1a", 1), "branch2.1": ("b1b", 3),
             "branch3.0": ("b2a", 1), "branch3.1": ("b2b", 3), "branch4.1": ("b3b", 1)}

# 2D unit (BasicConv2d: conv + bn) -> (I3D Unit3D, time kernel of its conv in I3D).
GOOGLENET_TO_I3D: dict[str, tuple[str, int]] = {
    "conv1": ("Conv3d_1a_7x7", 7),
    "conv2": ("Conv3d_2b_1x1", 1),
    "conv3": ("Conv3d_2c_3x3", 3),
    **{f"{block2d}.{branch2d}": (f"{block3d}.{branch3d}", t)
       for block2d, block3d in _BLOCKS.items()
       for branch2d, (branch3d, t) in _BRANCHES.items()},
}


class InflationError(TspipeError):
    """A 2D state_dict cannot be inflated (unknown or missing keys, bad shapes)."""


def inflate_conv_weight(weight: Tensor, time_kernel: int) -> Tensor:
    """(O, I, kh, kw) -> (O, I, time_kernel, kh, kw): repeated along time, divided by t."""
    if weight.dim() != 4 or time_kernel < 1:
        raise InflationError(f"cannot inflate a tensor of shape {tuple(weight.shape)} to time "
                             f"kernel {time_kernel}: want (O, I, kh, kw) and t >= 1")
    return weight.unsqueeze(2).repeat(1, 1, time_kernel, 1, 1) / time_kernel


def inflate_2d_to_3d(conv2d_state: Mapping[str, Tensor],
                     time_kernel: int | Mapping[str, int]) -> dict[str, Tensor]:
    """Every 4-D tensor (a conv kernel) inflated to ``time_kernel`` (one int for all, or per
    key: then every 4-D key must be named, and only those); other tensors (BN parameters and
    buffers, biases) copied unchanged. Keys are kept."""
    if not isinstance(time_kernel, int):
        conv_keys = {key for key, value in conv2d_state.items() if value.dim() == 4}
        unnamed = sorted(conv_keys - set(time_kernel))
        stray = sorted(set(time_kernel) - conv_keys)
        if unnamed or stray:
            raise InflationError(f"time_kernel must name exactly the conv kernels: missing "
                                 f"{unnamed[:5]}, not conv kernels {stray[:5]}")
    out: dict[str, Tensor] = {}
    for key, value in conv2d_state.items():
        if value.dim() == 4:
            t = time_kernel if isinstance(time_kernel, int) else time_kernel[key]
            out[key] = inflate_conv_weight(value.detach(), t)
        else:
            out[key] = value.detach().clone()
    return out


def inflate_inception_v1(state_2d: Mapping[str, Tensor], *,
                         include_fc: bool = False) -> dict[str, Tensor]:
    """torchvision GoogLeNet state_dict -> ``InceptionI3d`` state_dict (see the module
    docstring for the key table). Without ``include_fc`` the result loads strictly into
    ``i3d(num_classes=None)``; with it, into ``i3d(num_classes=fc.weight.shape[0])``.
    Raises InflationError on a key of neither layout or a missing one."""
    renamed: dict[str, Tensor] = {}
    kernels: dict[str, int] = {}
    used: set[str] = set()
    missing: list[str] = []
    for unit2d, (unit3d, t) in GOOGLENET_TO_I3D.items():
        pairs = [(f"{unit2d}.conv.weight", f"{unit3d}.conv3d.weight", True)]
        pairs += [(f"{unit2d}.bn.{f}", f"{unit3d}.bn.{f}", True) for f in BN_FIELDS]
        pairs += [(f"{unit2d}.bn.{f}", f"{unit3d}.bn.{f}", False) for f in OPTIONAL_BN_FIELDS]
        for key2d, key3d, required in pairs:
            if key2d in state_2d:
                renamed[key3d] = state_2d[key2d]
                used.add(key2d)
            elif required:
                missing.append(key2d)
        kernels[f"{unit3d}.conv3d.weight"] = t
    if include_fc:
        for key in ("fc.weight", "fc.bias"):
            if key not in state_2d:
                missing.append(key)
        if "fc.weight" in state_2d and "fc.bias" in state_2d:
            renamed["logits.conv3d.weight"] = state_2d["fc.weight"][:, :, None, None]
            renamed["logits.conv3d.bias"] = state_2d["fc.bias"]
            kernels["logits.conv3d.weight"] = 1
            used.update(("fc.weight", "fc.bias"))
    if missing:
        raise InflationError(f"GoogLeNet state_dict lacks {len(missing)} keys, e.g. "
                             f"{missing[:5]} (torchvision's googlenet layout expected)")
    dropped = DROPPED_PREFIXES if include_fc else (*DROPPED_PREFIXES, "fc.")
    unknown = sorted(k for k in state_2d if k not in used and not k.startswith(dropped))
    if unknown:
        raise InflationError(f"GoogLeNet state_dict has {len(unknown)} keys of no known "
                             f"layout, e.g. {unknown[:5]}")
    return inflate_2d_to_3d(renamed, kernels)
