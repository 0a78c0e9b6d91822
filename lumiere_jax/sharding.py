"""The device mesh, logical-axis rules, and where every array of a training run lives on the mesh.

Mesh axes (config.mesh): `data` and `fsdp` split the batch; `fsdp` also splits parameters and optimizer
state; `frames` splits clips along time. The model names array dimensions logically (batch, frames,
height, width, channels; embed for parameters' output channels) and config.mesh.rules maps those names to
mesh axes, as in flax.linen's logical partitioning and MaxText. Parameters declare their names where they
are made (`axes`: flax's `out_sharding` Variable metadata) and `tree_shardings` reads them back.

Frame parallelism: the STUNet's per-frame layers (spatial convs, norms, attention) need nothing from other
frames, so they run on each device's frames. The temporal convolution exchanges only its halo (k // 2
frames each side) with the neighbouring devices through `ppermute` (`temporal_halo_conv`); temporal
attention and levels whose frame count no longer splits evenly re-shard as XLA chooses.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "frames")  # outermost first: `frames` varies fastest, so it stays within a host

Rules = Sequence[tuple[str, Any]]
# Logical axis -> mesh axis, tuple of axes, or None (replicated). The config's mesh.rules override these.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("frames", "frames"),
    ("height", None),
    ("width", None),
    ("channels", None),
    ("embed", "fsdp"),  # parameters: output channels
    ("embed_in", None),  # parameters: input channels
    ("text", None),
)


def axis_sizes(config: ml_collections.ConfigDict, num_devices: int | None = None) -> dict[str, int]:
    """Mesh axis sizes from config.mesh, with at most one -1 resolved to "all the remaining devices"."""
    n = jax.device_count() if num_devices is None else num_devices
    sizes = {a: int(config.mesh.get(a, 1)) for a in MESH_AXES}
    free = [a for a, s in sizes.items() if s == -1]
    bad = [a for a, s in sizes.items() if s == 0 or s < -1]
    if bad or len(free) > 1:
        raise ValueError(f"mesh sizes {sizes}: each must be a positive integer, and at most one -1 ('the rest "
                         f"of the devices'); e.g. --config.mesh.data=-1 --config.mesh.frames=2.")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if n % fixed:
        raise ValueError(f"mesh sizes {sizes} need a multiple of {fixed} devices, but there are {n}: change "
                         f"--config.mesh.data/fsdp/frames so their product divides {n}.")
    if free:
        sizes[free[0]] = n // fixed
    elif fixed != n:
        raise ValueError(f"mesh sizes {sizes} use {fixed} of the {n} devices: set one axis to -1 to use the rest.")
    return sizes


def make_mesh(config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The (data, fsdp, frames) mesh of config.mesh over all devices (or `devices`)."""
    devices = jax.devices() if devices is None else list(devices)
    sizes = axis_sizes(config, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    # Auto axes: XLA propagates shardings through the STUNet's reshapes between our constraints.
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def rules_from(config: ml_collections.ConfigDict) -> tuple[tuple[str, Any], ...]:
    """DEFAULT_RULES updated by config.mesh.rules (pairs of logical name and mesh axes)."""
    rules = dict(DEFAULT_RULES)
    for name, axes in config.mesh.get("rules", ()) or ():
        rules[name] = tuple(axes) if isinstance(axes, (list, tuple)) else axes
    return tuple(rules.items())


def partition_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules) -> P:
    """Maps logical axis names to a PartitionSpec over `mesh` by `rules`.

    A dimension stays replicated when its rule names no axis of this mesh (or only axes of size 1), when
    the mesh axes would not divide it evenly, or when an earlier dimension already uses that mesh axis.
    """
    lookup = dict(rules)
    used: set[str] = set()
    spec = []
    for name, size in zip(names, shape):
        axes = lookup.get(name) if name is not None else None
        axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
        axes = tuple(a for a in axes if a in mesh.shape and mesh.shape[a] > 1 and a not in used)
        if not axes or size % math.prod(mesh.shape[a] for a in axes):
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    return P(*spec)


# ---------------------------------------------------------------------------------------------------
# Activations: the model calls `constrain`; outside `use_mesh(...)` it does nothing.

@dataclasses.dataclass(frozen=True)
class _Context:
    mesh: Mesh
    rules: tuple[tuple[str, Any], ...]


_ACTIVE: contextvars.ContextVar[_Context | None] = contextvars.ContextVar("lumiere_mesh", default=None)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[None]:
    """Within this block, model code traced by jit shards activations on `mesh` by `rules`.

    It also sets jax's own mesh context, which is part of jit's cache key: a function traced outside the
    block is traced again inside it instead of reusing its unsharded program.
    """
    token = _ACTIVE.set(_Context(mesh, tuple(rules)))
    try:
        with jax.set_mesh(mesh):
            yield
    finally:
        _ACTIVE.reset(token)


def active_mesh() -> Mesh | None:
    ctx = _ACTIVE.get()
    return None if ctx is None else ctx.mesh


VIDEO = ("batch", "frames", "height", "width", "channels")


def constrain(x: jax.Array, names: Sequence[str | None] = VIDEO) -> jax.Array:
    """with_sharding_constraint by logical names; a dimension that does not divide evenly stays whole."""
    ctx = _ACTIVE.get()
    if ctx is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(ctx.mesh, partition_spec(names, x.shape, ctx.mesh,
                                                                                      ctx.rules)))


def frame_axis() -> tuple[Mesh, str, int] | None:
    """(mesh, axis name, size) of the mesh axis that `frames` maps to, when frames are sharded at all."""
    ctx = _ACTIVE.get()
    if ctx is None:
        return None
    axes = dict(ctx.rules).get("frames")
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    axes = tuple(a for a in axes if a in ctx.mesh.shape and ctx.mesh.shape[a] > 1)
    if len(axes) != 1:
        return None
    return ctx.mesh, axes[0], ctx.mesh.shape[axes[0]]


def frames_sharded(x: jax.Array) -> bool:
    """Whether video x [B, T, ...] has its frames split over the mesh here (T divides evenly)."""
    found = frame_axis()
    if found is None:
        return False
    mesh, axis, n = found
    if x.shape[1] < 2 * n:
        # One frame per device: XLA's SPMD partitioner (jax 0.10.2, CPU) then computed wrong weight
        # gradients for the unfolded spatial blocks on a data x frames mesh (tests/test_sharding.py);
        # such levels are the coarsest and smallest, and fold frames into the batch as before.
        return False
    return partition_spec(VIDEO[:x.ndim], x.shape, mesh, _ACTIVE.get().rules)[1] == axis


def temporal_halo_conv(x: jax.Array, conv: Callable[..., jax.Array], *weights: jax.Array, halo: int,
                       stride: int) -> jax.Array | None:
    """Runs `conv(padded_local_frames, *weights)` on each device's frames, with a halo from its neighbours.

    The weights enter whole (replicated) on every device. conv gets [B, T_local + 2 * halo, H, W, C] (the halo frames of the neighbouring devices, zeros at the
    ends of the clip, i.e. the same zero padding the unsharded conv uses) and must return the local
    output frames [B, T_local // stride, H, W, C]. Returns None when frames are not sharded or do not split
    evenly (the caller then runs the unsharded conv and XLA re-shards as it needs).
    """
    found = frame_axis()
    if found is None:
        return None
    mesh, axis, n = found
    t = x.shape[1]
    if t % n or (t // n) % stride or t // n < halo:
        return None
    ctx = _ACTIVE.get()
    spec = partition_spec(VIDEO, x.shape, mesh, ctx.rules)
    if spec[1] != axis:
        return None

    def local(xl: jax.Array, *w: jax.Array) -> jax.Array:
        if halo == 0:
            return conv(xl, *w)
        # Device i sends its last `halo` frames to i + 1 and its first to i - 1; the clip's ends get zeros,
        # which is what ppermute leaves on a device that no one sends to.
        from_left = jax.lax.ppermute(xl[:, -halo:], axis, [(i, i + 1) for i in range(n - 1)])
        from_right = jax.lax.ppermute(xl[:, :halo], axis, [(i + 1, i) for i in range(n - 1)])
        return conv(jnp.concatenate([from_left, xl, from_right], axis=1), *w)

    return jax.shard_map(local, mesh=mesh, in_specs=(spec,) + (P(),) * len(weights), out_specs=spec,
                         check_vma=False)(x, *weights)


# ---------------------------------------------------------------------------------------------------
# Parameters and train state: every parameter declares the logical names of its dimensions where it is made,
# as flax's `out_sharding` Variable metadata (nnx.with_partitioning writes the same key). The metadata rides
# in the pytree's static part, so it survives nnx.split, jax.eval_shape, jax.tree.map (the EMA) and optax's
# tx.init (Adam's moments are tree maps of the params), and adds no leaves: checkpoints keep their arrays.

AXES_KEY = "out_sharding"  # flax nnx's metadata key for a Variable's logical axis names

# Parameters' logical names: output channels over `embed`, input channels `embed_in`, the rest replicated.
CONV_KERNEL = (None, None, "embed_in", "embed")  # [kh, kw, in, out]
TEMPORAL_KERNEL = (None, "embed_in", "embed")  # [k, in, out]
DENSE_KERNEL = ("embed_in", "embed")  # [in, out]
VECTOR = (None,)  # biases, norm scales, learned queries: replicated


def axes(*names: str | None) -> dict[str, Any]:
    """Metadata declaring a parameter's logical axis names, one per dimension:
    `nnx.Param(value, **axes(...))`, or a flax layer's `kernel_metadata=axes(...)` (bias_, scale_metadata).

    Eager sharding stays off: the names are logical, and the train state is placed by `tree_shardings`.
    """
    return {AXES_KEY: tuple(names), "eager_sharding": False}


def declared_axes(variable: Any) -> tuple[str | None, ...] | None:
    """The logical axis names a Variable declares, or None (not a Variable, or declared nothing)."""
    if not isinstance(variable, nnx.Variable):
        return None
    names = variable.get_metadata().get(AXES_KEY)
    return None if names is None else tuple(names)


def declared_spec(variable: nnx.Variable, mesh: Mesh, rules: Rules) -> P:
    """The PartitionSpec of a Variable's array by its declared names; raises if it declares none, or a
    number of names other than its rank."""
    names = declared_axes(variable)
    shape = getattr(variable.get_value(), "shape", ())
    if names is None or len(names) != len(shape):
        raise ValueError(f"A {type(variable).__name__} of shape {tuple(shape)} declares no logical axis names "
                         f"for its dimensions ({AXES_KEY}={names}): create it with sharding.axes(...) metadata "
                         f"(or nnx.with_partitioning), one name or None per dimension.")
    return partition_spec(names, shape, mesh, rules)


def tree_shardings(tree: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for every array leaf of a params / optimizer / TrainState tree (same structure).

    A Variable's arrays are sharded by the logical names it declares: the parameters, their EMA and the
    optimizer's moments, which are tree maps of the parameters and keep their metadata. Leaves outside any
    Variable (the step counter, optax's counts) are replicated, and so is a Variable's leaf whose rank differs
    from its names (e.g. a factored second moment). An nnx.Param that declares no names raises: a module
    forgot `sharding.axes`.
    """
    rep = NamedSharding(mesh, P())

    def one(path, x):
        if not isinstance(x, nnx.Variable):
            return rep
        names = declared_axes(x)
        if names is None:
            if isinstance(x, nnx.Param) and jax.tree.leaves(x):
                raise ValueError(f"Parameter {jax.tree_util.keystr(path)} ({type(x).__name__} of shape "
                                 f"{getattr(x.get_value(), 'shape', '?')}) declares no logical axis names: "
                                 f"create it with sharding.axes(...) metadata ({AXES_KEY}).")
            return jax.tree.map(lambda _: rep, x)

        def leaf(a):
            shape = getattr(a, "shape", ())
            if len(shape) != len(names):
                return rep
            return NamedSharding(mesh, partition_spec(names, shape, mesh, rules))

        return jax.tree.map(leaf, x)

    return jax.tree_util.tree_map_with_path(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_shardings(batch: dict[str, Any], mesh: Mesh, rules: Rules) -> dict[str, NamedSharding]:
    """Video-like entries [B, T, H, W, C] split batch and frames; the rest split only the batch."""
    out = {}
    for key, value in batch.items():
        shape = value.shape
        names = VIDEO if len(shape) == 5 else ("batch",) + (None,) * (len(shape) - 1)
        out[key] = NamedSharding(mesh, partition_spec(names, shape, mesh, rules))
    return out


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
