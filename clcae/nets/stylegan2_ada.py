"""StyleGAN2-ADA PyTorch snapshots (``network-snapshot-*.pkl``) read as data, never run.

NVlabs' snapshots are plain pickles of ``dict(G=..., D=..., G_ema=..., augment_pipe=...,
training_set_kwargs=...)`` whose networks are ``torch_utils.persistence`` objects: each carries its
class's source code (``module_src``) and is rebuilt by importing that source. Loading one with
``pickle`` or NVlabs' ``legacy.load_network_pkl`` executes code from the file. Here a restricted
unpickler maps the few globals such a file needs to data-only stand-ins:

- ``torch_utils.persistence._reconstruct_persistent_obj`` -> :class:`Persistent` (the class name,
  the embedded source as text, never executed, and the object's state: parameters, buffers,
  submodules, constructor kwargs);
- ``torch.storage._load_from_bytes`` (every tensor's bytes, a nested ``torch.save``) -> a
  weights-only ``torch.load`` of those bytes;
- the tensor rebuild functions, ``OrderedDict``, ``dnnlib.util.EasyDict`` (-> dict), sets, torch
  dtypes and numeric numpy values; any other global refuses the file, naming it.

:func:`ada_to_rosinality` then maps ``G_ema`` (not ``G``: the EMA weights are the published
generator) to the rosinality layout this project loads (``{'g_ema': state, 'latent_avg': w_avg}``),
with the mapping network rescaled from its learning-rate multiplier to rosinality's 0.01 and the
snapshot's ``conv_clamp`` kept beside it.
"""
from __future__ import annotations

import io
import math
import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from clcae.io import CheckpointError, UnsafeCheckpointError

ROSINALITY_LR_MLP = 0.01


@dataclass
class Persistent:
    """A ``torch_utils.persistence`` object as data: its class name, source text and state."""
    class_name: str
    module_src: str
    state: dict
    version: int | None = None

    @property
    def kwargs(self) -> dict:
        """The constructor's keyword arguments (persistence records them as ``_init_kwargs``)."""
        return dict(self.state.get("_init_kwargs") or {})

    def params(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Every parameter and buffer below this object, by dotted name (as ``state_dict()``)."""
        out: dict[str, torch.Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if value is not None:
                    out[prefix + name] = value.detach() if isinstance(value, torch.Tensor) else value
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, Persistent):
                out.update(child.params(f"{prefix}{name}."))
            elif child is not None:
                raise CheckpointError(f"submodule {prefix}{name} is a {type(child).__name__}, not a network "
                                      f"the snapshot reader knows")
        return out

    def child(self, name: str) -> Persistent:
        return self.state["_modules"][name]


class EasyDict(dict):
    """``dnnlib.util.EasyDict`` as a plain dict (attribute access is all it adds)."""


def _persistent(meta: dict) -> Persistent:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise CheckpointError(f"a persistent object of an unknown kind: {type(meta).__name__}")
    return Persistent(str(meta.get("class_name")), str(meta.get("module_src") or ""), meta.get("state") or {},
                      meta.get("version"))


def _storage_from_bytes(data: bytes):
    """A tensor storage pickled inside the snapshot: its bytes are a ``torch.save``, read weights-only."""
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _allowed() -> dict[str, object]:
    import torch._utils as tu

    allowed: dict[str, object] = {
        "torch_utils.persistence._reconstruct_persistent_obj": _persistent,
        "torch.storage._load_from_bytes": _storage_from_bytes,
        "torch._utils._rebuild_tensor_v2": tu._rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": tu._rebuild_parameter,
        "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2,
        "torch.nn.parameter.Parameter": torch.nn.Parameter,
        "torch.Tensor": torch.Tensor,
        "torch.Size": torch.Size,
        "collections.OrderedDict": OrderedDict,
        "dnnlib.util.EasyDict": EasyDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
    }
    if hasattr(tu, "_rebuild_parameter_with_state"):
        allowed["torch._utils._rebuild_parameter_with_state"] = tu._rebuild_parameter_with_state
    for name in ("float32", "float16", "float64", "bfloat16", "int64", "int32", "uint8", "int8", "bool"):
        allowed[f"torch.{name}"] = getattr(torch, name)
    from clcae.io import numpy_globals

    allowed.update({name: obj for obj, name in numpy_globals()})
    return allowed


class _SnapshotUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file)
        self.path, self.allowed = path, _allowed()

    def find_class(self, module: str, name: str):
        key = f"{module}.{name}"
        if key in self.allowed:
            return self.allowed[key]
        what = ("a TensorFlow-era StyleGAN pickle (dnnlib.tflib): convert it with NVlabs' stylegan2-ada-pytorch "
                "legacy.py first, on a machine where running that file is acceptable"
                if module.startswith(("dnnlib.tflib", "tensorflow")) else
                f"unpickling it would call {key}, which a StyleGAN2-ADA snapshot never needs")
        raise UnsafeCheckpointError(f"{self.path}: refused: {what}", self.path, [key])

    def persistent_load(self, pid):
        raise UnsafeCheckpointError(f"{self.path}: refused: a persistent id ({type(pid).__name__}) is not part of "
                                    f"a StyleGAN2-ADA snapshot (a torch.save file? load it with load_generator)",
                                    self.path, [])


def read_snapshot(path: str | os.PathLike) -> dict:
    """The snapshot's top-level dict with every network as :class:`Persistent` data; nothing runs."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(2)
        if head[:1] != b"\x80":
            raise CheckpointError(f"{path}: not a pickle (starts with {head!r}); a StyleGAN2-ADA snapshot is "
                                  f"a network-snapshot-*.pkl")
        f.seek(0)
        try:
            snapshot = _SnapshotUnpickler(f, path).load()
        except (UnsafeCheckpointError, CheckpointError):
            raise
        except Exception as e:  # truncated, or a pickle of something else
            raise CheckpointError(f"{path}: cannot be read as a StyleGAN2-ADA snapshot: {type(e).__name__}: {e}") \
                from None
    if not isinstance(snapshot, dict):
        raise CheckpointError(f"{path}: a pickle of {type(snapshot).__name__}, not a snapshot dict with G_ema")
    return snapshot


@dataclass
class AdaGenerator:
    """``G_ema`` of a snapshot in the rosinality layout, with what the layout cannot say."""
    state: dict                       # rosinality keys (style.*, input.input, conv1.*, convs.*, to_rgbs.*, noises.*)
    latent_avg: torch.Tensor          # G_ema.mapping.w_avg (copied, not estimated)
    conv_clamp: float | None          # NVlabs clamps every layer's activation to +-conv_clamp * gain
    info: dict = field(default_factory=dict)   # sizes and settings read from the snapshot


def _generator(snapshot: dict, path: str) -> Persistent:
    if "G_ema" not in snapshot:
        raise CheckpointError(f"{path}: no G_ema in the snapshot (keys {sorted(snapshot)}); a StyleGAN2-ADA "
                              f"training snapshot holds G, G_ema, D and augment_pipe")
    G = snapshot["G_ema"]
    if not isinstance(G, Persistent) or G.class_name != "Generator":
        raise CheckpointError(f"{path}: G_ema is a {getattr(G, 'class_name', type(G).__name__)}, not a Generator")
    synthesis = G.child("synthesis")
    names = set(synthesis.state.get("_modules") or {})
    if "input" in names or synthesis.class_name != "SynthesisNetwork" or not any(n.startswith("b") for n in names):
        raise CheckpointError(f"{path}: a StyleGAN3 generator (synthesis layers {sorted(names)[:4]} ...), not "
                              f"StyleGAN2-ADA: StyleGAN3 has no rosinality layout to convert to")
    return G


def ada_to_rosinality(snapshot: dict, path: str = "<snapshot>") -> AdaGenerator:
    """Map a snapshot's ``G_ema`` to the rosinality layout; refuses what that layout cannot hold."""
    G = _generator(snapshot, path)
    kw = G.kwargs
    mapping_kw, synthesis_kw = dict(kw.get("mapping_kwargs") or {}), dict(kw.get("synthesis_kwargs") or {})
    c_dim = int(kw.get("c_dim", G.state.get("c_dim", 0)) or 0)
    if c_dim:
        raise CheckpointError(f"{path}: a conditional generator (c_dim {c_dim}): the encoders invert "
                              f"unconditional generators only")
    z_dim, w_dim = int(G.state["z_dim"]), int(G.state["w_dim"])
    resolution, img_channels = int(G.state["img_resolution"]), int(G.state["img_channels"])
    if z_dim != w_dim:
        raise CheckpointError(f"{path}: z_dim {z_dim} != w_dim {w_dim}; the rosinality layout has one style_dim")
    if img_channels != 3:
        raise CheckpointError(f"{path}: {img_channels} image channels; the project's generators make RGB images")
    synthesis = G.child("synthesis")
    arch = synthesis_kw.get("architecture", "skip")
    if arch != "skip":
        raise CheckpointError(f"{path}: synthesis architecture {arch!r}; the rosinality layout is 'skip' only")
    filt = synthesis_kw.get("resample_filter", [1, 3, 3, 1])
    if list(filt) != [1, 3, 3, 1]:
        raise CheckpointError(f"{path}: resample_filter {list(filt)}; the rosinality layout uses [1, 3, 3, 1]")
    mapping = G.child("mapping")
    lr = float(mapping_kw.get("lr_multiplier", mapping.state.get("lr_multiplier", 0.01)) or 0.01)
    n_mlp = int(mapping.state.get("num_layers", mapping_kw.get("num_layers", 8)))
    m = mapping.params()
    rescale = lr / ROSINALITY_LR_MLP   # stored weights live at their lr scale: w_eff = w * lr / sqrt(in)
    state: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        fc = mapping.child(f"fc{i}")
        fc_lr = float(fc.state.get("lr_multiplier", lr))
        if fc_lr != lr or fc.state.get("activation", "lrelu") != "lrelu":
            raise CheckpointError(f"{path}: mapping layer fc{i} (lr {fc_lr}, {fc.state.get('activation')}) "
                                  f"differs from the others; the rosinality layout has one")
        state[f"style.{i + 1}.weight"] = m[f"fc{i}.weight"] * rescale
        state[f"style.{i + 1}.bias"] = m[f"fc{i}.bias"] * rescale
    s = synthesis.params()
    log_size = int(math.log2(resolution))
    state["input.input"] = s["b4.const"][None]
    _layer(state, s, "b4.conv1", "conv1", noise="noises.noise_0")
    _torgb(state, s, "b4.torgb", "to_rgb1")
    blur = torch.tensor([1.0, 3.0, 3.0, 1.0])
    blur = torch.outer(blur, blur) / blur.sum() ** 2 * 4   # rosinality's make_kernel x upsample_factor ** 2
    for k, res in enumerate(2 ** i for i in range(3, log_size + 1)):
        state[f"convs.{2 * k}.conv.blur.kernel"] = blur.clone()
        state[f"to_rgbs.{k}.upsample.kernel"] = blur.clone()
        _layer(state, s, f"b{res}.conv0", f"convs.{2 * k}", noise=f"noises.noise_{2 * k + 1}")
        _layer(state, s, f"b{res}.conv1", f"convs.{2 * k + 1}", noise=f"noises.noise_{2 * k + 2}")
        _torgb(state, s, f"b{res}.torgb", f"to_rgbs.{k}")
    clamp = synthesis_kw.get("conv_clamp", None)
    info = {"z_dim": z_dim, "w_dim": w_dim, "resolution": resolution, "mapping_layers": n_mlp,
            "lr_multiplier": lr, "conv_clamp": clamp, "num_fp16_res": synthesis_kw.get("num_fp16_res", 0),
            "channels": {int(k[1:].split(".")[0]): int(v.shape[0]) for k, v in s.items() if k.endswith("conv1.bias")}}
    return AdaGenerator(state, m["w_avg"].float().clone(), None if clamp is None else float(clamp), info)


def _layer(state: dict, s: dict, ada: str, ours: str, noise: str) -> None:
    state[f"{ours}.conv.weight"] = s[f"{ada}.weight"][None]          # [1, out, in, k, k]
    state[f"{ours}.conv.modulation.weight"] = s[f"{ada}.affine.weight"]
    state[f"{ours}.conv.modulation.bias"] = s[f"{ada}.affine.bias"]
    state[f"{ours}.activate.bias"] = s[f"{ada}.bias"]
    state[f"{ours}.noise.weight"] = s[f"{ada}.noise_strength"].reshape(1)
    state[noise] = s[f"{ada}.noise_const"][None, None]               # [1, 1, R, R]


def _torgb(state: dict, s: dict, ada: str, ours: str) -> None:
    state[f"{ours}.conv.weight"] = s[f"{ada}.weight"][None]          # [1, 3, in, 1, 1]
    state[f"{ours}.conv.modulation.weight"] = s[f"{ada}.affine.weight"]
    state[f"{ours}.conv.modulation.bias"] = s[f"{ada}.affine.bias"]
    state[f"{ours}.bias"] = s[f"{ada}.bias"].reshape(1, -1, 1, 1)
