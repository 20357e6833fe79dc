"""Progressive growth: a layered student doubles its depth during training, each layer duplicated in place.

Layer ``i`` of a ``k``-layer stack becomes layers ``2i`` and ``2i + 1`` of a ``2k``-layer one, two copies
with identical weights that then diverge as training goes on (they see different inputs, so they get
different gradients). Works on the transformer student's ``blocks`` and on the layers student's Hugging
Face encoder (``encoder.layer``, ``h``, ``layers``), whose config is kept consistent so the grown student
saves and loads with :func:`distill.students.load_student` like any other.

Exact duplication is **not** function-preserving: a residual layer applied twice, ``y = g(g(x))``, is not
``g(x)``, so the loss jumps at a growth point (the trainer measures and records the jump). A zero-initialised
second copy (``x + 0``) would preserve a pre-norm block's function, but not a post-norm one's such as BERT's
(``LayerNorm(x + 0)`` is not ``x``), which is what the layers students of MiniLM and BERT are; duplication works
the same on every architecture, and the copies start from trained weights instead of from zero. Measured
(BENCHMARKS.md, "Progressive growth"): +5% on a transformer student's batch, +45% when MiniLM's last layer
is applied twice.
"""

from __future__ import annotations

import copy
import re

from torch import nn

from distill.errors import DistillError
from distill.students.base import Student
from distill.students.layers import _DEPTH_KEYS

GROWABLE = ("transformer", "layers")  # student kinds with a stack of layers to duplicate
_STACK_NAMES = ("layer", "layers", "h", "block", "blocks")  # the layer lists of the architectures we know


def layer_stack(student: Student) -> tuple[str, nn.ModuleList]:
    """The student's stack of layers and its qualified name (``"blocks"``, ``"encoder.encoder.layer"``).

    :raises DistillError: for a student without one (static).
    """
    if student.kind not in GROWABLE:
        raise DistillError(f"a {student.kind} student has no layers to grow; --grow-at needs --student "
                           f"{' or '.join(GROWABLE)}")
    if student.kind == "transformer":
        return "blocks", student.blocks
    found = [(name, m) for name, m in student.named_modules()
             if isinstance(m, nn.ModuleList) and name.rsplit(".", 1)[-1] in _STACK_NAMES]
    if len(found) != 1:
        raise DistillError(f"cannot find the layer stack of this {student.config.hf_config.get('model_type')} "
                           f"student to grow (candidates: {[n for n, _ in found]})")
    return found[0]


def depth(student: Student) -> int:
    return len(layer_stack(student)[1])


def _install(student: Student, layers: list[nn.Module], source: list[int]) -> None:
    """Replace the stack with ``layers`` (layer ``j`` made from old layer ``source[j]``) and keep every record
    of the depth consistent: the student's config, the Hugging Face config, per-layer indices."""
    name, _ = layer_stack(student)
    parent, _, attr = name.rpartition(".")
    setattr(student.get_submodule(parent) if parent else student, attr, nn.ModuleList(layers))
    for j, layer in enumerate(layers):
        for sub in layer.modules():  # attention modules that know their position (caches, per-layer scaling)
            if isinstance(getattr(sub, "layer_idx", None), int):
                sub.layer_idx = j
    n = len(layers)
    c = student.config
    if student.kind == "transformer":
        c.n_layers = n
        return
    # the teacher layer each student layer started from: a grown [1, 3, 5] is [1, 1, 3, 3, 5, 5]
    if c.layers:
        c.layers = [c.layers[i] for i in source]
    hf = dict(c.hf_config)
    live = student.encoder.config
    for key in _DEPTH_KEYS:
        if key in hf:
            hf[key] = n
        if isinstance(getattr(live, key, None), int):
            setattr(live, key, n)
    if isinstance(hf.get("layer_types"), list):  # per-layer kinds (some decoders) follow their layers
        hf["layer_types"] = [hf["layer_types"][i] for i in source]
        if isinstance(getattr(live, "layer_types", None), list):
            live.layer_types = list(hf["layer_types"])
    c.hf_config = hf


def _renamed(stack: str, source: list[int], names: list[str]) -> dict[str, str]:
    """New parameter name -> the name it had before: ``{stack}.{j}.x`` came from ``{stack}.{source[j]}.x``."""
    pattern = re.compile(rf"^{re.escape(stack)}\.(\d+)\.(.*)$")
    out = {}
    for name in names:
        m = pattern.match(name)
        out[name] = f"{stack}.{source[int(m.group(1))]}.{m.group(2)}" if m else name
    return out


def grow(student: Student) -> dict[str, str]:
    """Double the student's depth in place: layer ``i`` becomes layers ``2i`` and ``2i + 1``, two copies with
    identical weights (both new modules, so nothing outside, such as an optimizer or a DDP wrapper, still
    holds the stack's parameters).

    :returns: every new parameter name -> the name of the parameter it was copied from (the optimizer
        state of the copies is taken from there).
    :raises DistillError: for a student without layers.
    """
    name, stack = layer_stack(student)
    source = [i for i in range(len(stack)) for _ in range(2)]
    _install(student, [copy.deepcopy(stack[i]) for i in source], source)
    return _renamed(name, source, [n for n, _ in student.named_parameters()])


def shrink(student: Student) -> None:
    """Undo :func:`grow` structurally (keep layers ``0, 2, 4 ...``): for resuming from a checkpoint written
    before a growth point after the model had grown for a later one."""
    _, stack = layer_stack(student)
    if len(stack) % 2:
        raise DistillError(f"a stack of {len(stack)} layers was not grown: it cannot shrink")
    source = list(range(0, len(stack), 2))
    _install(student, [stack[i] for i in source], source)
