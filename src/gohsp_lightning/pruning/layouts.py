"""Where every attention head and MLP neuron of a timm block lives, per timm family: the one home of layouts.

A unit (a head, a neuron) owns a slice of several tensors: rows of a fused ``qkv`` laid out as
``(3, heads, head_dim)``, a q/v bias, a column of a relative position bias table, columns of ``proj``...
:class:`UnitSlice` describes one such slice; :class:`UnitLayout` collects them for one structure of one
module. The structures (:mod:`.structures`) score, zero, count and cut units only through these, so a new
family means one more entry in :data:`ATTENTION_LAYOUTS` or :data:`MLP_LAYOUTS` here.

Supported: timm's ``Attention`` (ViT, DeiT, DeiT-III, DINOv2, CLIP, qk-norm, gated), BEiT's ``Attention``
(q/v biases, per-head relative position bias), EVA's ``EvaAttention`` (fused or separate q/k/v, q/v biases,
RoPE, q/k norms, inner norm, gate); ``Mlp``, ``GluMlp`` (fc1 split in two halves) and ``SwiGLU``.

A norm across the pruned units (EVA-02's ``scale_mlp``, ``scale_attn_inner``) is sliced with them, but its
statistics then run over fewer units: on such models the zero-masked model is close to, not equal to,
the cut one, and the fine-tune absorbs the difference.

Residual-stream channels (:func:`channel_layout`) cross every block: a channel is one row of the patch
embedding, one entry of every token and norm, a column of every layer that reads the stream and a row of
every layer that writes it. Only pre-norm blocks (``x + f(norm(x))``) of the three families are known.

Why one module of ~500 lines: it is the only place that knows timm's families; splitting it per family would
spread the same slice vocabulary over several files, which is what this module exists to stop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import (
    Attention,
    GluMlp,
    LayerScale,
    Mlp,
    RmsNorm,
    RmsNormFp32,
    RotaryEmbeddingMixed,
    SwiGLU,
    apply_rot_embed_cat,
    maybe_add_mask,
    resolve_self_attn_mask,
)
from timm.models.beit import Attention as BeitAttention
from timm.models.beit import Block as BeitBlock
from timm.models.eva import EvaAttention, EvaBlock
from timm.models.vision_transformer import Block as VitBlock
from torch import nn

# timm modules whose blocks this module knows: where every head and MLP neuron lives, and attention
# computed as softmax(q k^T * scale + bias) v (RoPE, relative position bias and q/k norms as the family
# applies them). Other families (Swin's windows, LeViT's and PiT's convolutional stages, MViT's pooling)
# are refused up front, not pruned wrongly.
SUPPORTED_FAMILIES: dict[str, str] = {
    "vision_transformer": "vit_* (AugReg, CLIP, DINOv2, register-token, global-pool and qk-norm ViTs)",
    "deit": "deit_*, deit_*_distilled, deit3_*",
    "eva": "eva02_* (RoPE, SwiGLU, q/v biases)",
    "beit": "beit_*, beitv2_* (per-block relative position bias)",
}


@dataclass(frozen=True)
class UnitSlice:
    """``getattr(owner, attr)`` along ``axis`` is laid out as ``(parts, units, width)``: unit ``u`` owns
    ``width`` consecutive entries in each of the ``parts`` (q, k, v of a fused qkv are 3 parts)."""

    owner: nn.Module
    attr: str
    axis: int
    units: int
    parts: int = 1
    width: int = 1

    @property
    def tensor(self) -> torch.Tensor:
        return getattr(self.owner, self.attr)

    @property
    def per_unit(self) -> int:
        """Entries of the tensor one unit owns."""
        return self.tensor.numel() // self.units

    @property
    def is_parameter(self) -> bool:
        return isinstance(self.tensor, nn.Parameter)

    @property
    def is_linear_weight(self) -> bool:
        return isinstance(self.owner, nn.Linear) and self.attr == "weight"

    def _split(self, tensor: torch.Tensor) -> torch.Tensor:
        moved = tensor.movedim(self.axis, 0)
        return moved.reshape(self.parts, self.units, self.width, -1)

    def group_sums(self, tensor: torch.Tensor) -> torch.Tensor:
        """Signed sum of ``tensor`` (shaped like :attr:`tensor`) over each unit's entries, ``[units]``."""
        return self._split(tensor).sum(dim=(0, 2, 3))

    def scaled(self, tensor: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """A copy of ``tensor`` with every unit's entries multiplied by ``factor[unit]``."""
        split = self._split(tensor) * factor.to(tensor)[None, :, None, None]
        return split.reshape(tensor.movedim(self.axis, 0).shape).movedim(0, self.axis)

    def index(self, kept: torch.Tensor) -> torch.Tensor:
        """Positions along :attr:`axis` of the ``kept`` units' entries, in order."""
        within = (kept[:, None] * self.width + torch.arange(self.width)[None, :]).flatten()
        return torch.cat([p * self.units * self.width + within for p in range(self.parts)])

    def cut(self, kept: torch.Tensor) -> None:
        """Keep only the ``kept`` units' entries, in place (a Parameter stays a Parameter, a buffer a buffer)."""
        old = self.tensor
        new = old.detach().index_select(self.axis, self.index(kept).to(old.device)).contiguous()
        setattr(self.owner, self.attr, nn.Parameter(new, requires_grad=old.requires_grad) if self.is_parameter else new)


@dataclass(frozen=True)
class UnitLayout:
    """Every slice the units of one structure own in one module.

    ``group`` (by stable name, the ADMM variables' keys) is what scores and ADMM see; ``followers`` are cut
    and counted with the units but not scored (biases added later, norms, gates, position bias tables).
    ``consumer`` takes the units' outputs as ``width`` input columns each (where masks and gates act).
    """

    units: int
    width: int
    group: dict[str, UnitSlice]
    followers: tuple[UnitSlice, ...]
    consumer: nn.Linear | None  # None for residual channels, which no single layer consumes
    resize: Callable[[int], None]

    @property
    def slices(self) -> tuple[UnitSlice, ...]:
        return (*self.group.values(), *self.followers)

    def cut(self, kept: torch.Tensor) -> None:
        """Remove every unit not in ``kept`` (sorted indices) and fix the shapes the modules record."""
        for s in self.slices:
            s.cut(kept)
        for owner in {id(s.owner): s.owner for s in self.slices}.values():
            _refresh_shape(owner)
        self.resize(int(kept.numel()))


def _refresh_shape(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif hasattr(module, "normalized_shape") and getattr(module, "weight", None) is not None:
        module.normalized_shape = (int(module.weight.shape[0]),)


def _linear(
    layer: nn.Linear | None, axis: int, units: int, parts: int = 1, width: int = 1, prefix: str = ""
) -> dict[str, UnitSlice]:
    """The weight (and, for rows, bias) slices of a Linear whose rows (axis 0) or columns (axis 1) are units."""
    if layer is None:
        return {}
    out = {f"{prefix}weight": UnitSlice(layer, "weight", axis, units, parts, width)}
    if axis == 0 and layer.bias is not None:
        out[f"{prefix}bias"] = UnitSlice(layer, "bias", 0, units, parts, width)
    return out


def _norm(norm: nn.Module, units: int, width: int) -> tuple[UnitSlice, ...]:
    """Slices of a norm over the units' channels (none for Identity or a norm without affine weights)."""
    return tuple(
        UnitSlice(norm, name, 0, units, 1, width)
        for name in ("weight", "bias")
        if isinstance(getattr(norm, name, None), nn.Parameter)
    )


def _qkv_biases(attn: nn.Module, heads: int, head_dim: int) -> tuple[dict[str, UnitSlice], tuple[UnitSlice, ...]]:
    """BEiT's and EVA's separate q/v biases (scored with the head) and their all-zero k bias buffer."""
    if getattr(attn, "q_bias", None) is None:
        return {}, ()
    group = {name: UnitSlice(attn, name, 0, heads, 1, head_dim) for name in ("q_bias", "v_bias")}
    return group, (UnitSlice(attn, "k_bias", 0, heads, 1, head_dim),)


def _set_heads(attn: nn.Module, head_dim: int) -> Callable[[int], None]:
    def resize(kept: int) -> None:
        attn.num_heads = kept
        if hasattr(attn, "attn_dim"):
            attn.attn_dim = kept * head_dim
        _use_pruned_forward(attn)

    return resize


def _use_pruned_forward(attn: nn.Module) -> None:
    """Swap in the forward that reshapes to the kept heads' width where timm's reshapes to the block's."""
    if type(attn) in PRUNED_FORWARDS:
        attn.__class__ = PRUNED_FORWARDS[type(attn)]


def _timm_attention(attn: Attention) -> UnitLayout:
    heads, head_dim = int(attn.num_heads), int(attn.head_dim)
    return UnitLayout(
        units=heads,
        width=head_dim,
        group={
            **_linear(attn.qkv, 0, heads, 3, head_dim, "qkv."),
            **_linear(attn.proj, 1, heads, 1, head_dim, "proj."),
        },
        followers=(*_linear(attn.gate, 0, heads, 1, head_dim).values(), *_norm(attn.norm, heads, head_dim)),
        consumer=attn.proj,
        resize=_set_heads(attn, head_dim),
    )


def _beit_attention(attn: BeitAttention) -> UnitLayout:
    heads = int(attn.num_heads)
    head_dim = attn.qkv.out_features // (3 * heads)
    biases, k_bias = _qkv_biases(attn, heads, head_dim)
    table = attn.relative_position_bias_table
    return UnitLayout(
        units=heads,
        width=head_dim,
        group={
            **_linear(attn.qkv, 0, heads, 3, head_dim, "qkv."),
            **biases,
            **_linear(attn.proj, 1, heads, 1, head_dim, "proj."),
        },
        followers=(*k_bias, *(() if table is None else (UnitSlice(attn, "relative_position_bias_table", 1, heads),))),
        consumer=attn.proj,
        resize=_set_heads(attn, head_dim),
    )


def _eva_attention(attn: EvaAttention) -> UnitLayout:
    heads, head_dim = int(attn.num_heads), int(attn.head_dim)
    if attn.qkv is not None:
        qkv = _linear(attn.qkv, 0, heads, 3, head_dim, "qkv.")
    else:
        qkv = {
            k: v
            for p in ("q", "k", "v")
            for k, v in _linear(getattr(attn, f"{p}_proj"), 0, heads, 1, head_dim, f"{p}_proj.").items()
        }
    biases, k_bias = _qkv_biases(attn, heads, head_dim)
    return UnitLayout(
        units=heads,
        width=head_dim,
        group={**qkv, **biases, **_linear(attn.proj, 1, heads, 1, head_dim, "proj.")},
        followers=(*k_bias, *_linear(attn.gate, 0, heads, 1, head_dim).values(), *_norm(attn.norm, heads, head_dim)),
        consumer=attn.proj,
        resize=_set_heads(attn, head_dim),
    )


def _no_resize(_kept: int) -> None:
    """MLPs read their widths from their layers' shapes."""


def _mlp(mlp: nn.Module, inputs: dict[str, tuple[nn.Linear, int]]) -> UnitLayout:
    """``fc1 -> act -> fc2`` MLPs: ``inputs`` are the layers whose rows are hidden units, by key prefix, each
    with how many times it holds every unit (a GluMlp's fc1 twice: its value and gate halves)."""
    hidden = int(mlp.fc2.in_features)
    group = {
        key: s
        for prefix, (layer, halves) in inputs.items()
        for key, s in _linear(layer, 0, hidden, parts=halves, prefix=prefix).items()
    }
    return UnitLayout(
        units=hidden,
        width=1,
        group={**group, **_linear(mlp.fc2, 1, hidden, prefix="fc2.")},
        followers=_norm(mlp.norm, hidden, 1),
        consumer=mlp.fc2,
        resize=_no_resize,
    )


class PrunedBeitAttention(BeitAttention):
    """BEiT attention after a head cut. timm's forward reshapes the heads' output to the block width, which
    no longer holds once heads are gone; this forward reshapes to the kept heads and is otherwise timm's."""

    def forward(self, x: torch.Tensor, shared_rel_pos_bias: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, _ = x.shape
        bias = None if self.q_bias is None else torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(batch, tokens, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        position = self._get_rel_pos_bias() if self.relative_position_bias_table is not None else None
        if shared_rel_pos_bias is not None:
            position = shared_rel_pos_bias if position is None else position + shared_rel_pos_bias
        out = _attend(self, q, k, v, position)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, tokens, -1)))


class PrunedEvaAttention(EvaAttention):
    """EVA attention after a head cut (see :class:`PrunedBeitAttention`): timm's computation, RoPE on the
    non-prefix tokens included, with the output reshaped to the kept heads' width."""

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        batch, tokens, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        if self.qkv is not None:
            bias = None if self.q_bias is None else torch.cat((self.q_bias, self.k_bias, self.v_bias))
            qkv = F.linear(x, self.qkv.weight, bias).reshape(batch, tokens, 3, self.num_heads, -1)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q, k, v = (
                p(x).reshape(batch, tokens, self.num_heads, -1).transpose(1, 2)
                for p in (self.q_proj, self.k_proj, self.v_proj)
            )
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            npt, half = self.num_prefix_tokens, self.rotate_half
            q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope, half=half)], dim=2).type_as(v)
            k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], dim=2).type_as(v)
        out = _attend(self, q, k, v, attn_mask, is_causal)
        out = self.norm(out.transpose(1, 2).reshape(batch, tokens, -1))
        if gate is not None:
            out = out * gate
        return self.proj_drop(self.proj(out))


def _attend(
    attn: nn.Module,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool = False,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v, fused when the module is, else through ``attn_drop`` (where the
    head statistics read the probabilities)."""
    if attn.fused_attn:
        dropout = attn.attn_drop.p if attn.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
    scores = (q * attn.scale) @ k.transpose(-2, -1)
    scores = maybe_add_mask(scores, resolve_self_attn_mask(q.shape[2], scores, mask, is_causal=is_causal))
    return attn.attn_drop(scores.softmax(dim=-1)) @ v


PRUNED_FORWARDS: dict[type[nn.Module], type[nn.Module]] = {
    BeitAttention: PrunedBeitAttention,
    EvaAttention: PrunedEvaAttention,
}
# the exact classes (a subclass may compute differently), pruned forwards included
ATTENTION_LAYOUTS: dict[type[nn.Module], Callable[[nn.Module], UnitLayout]] = {
    Attention: _timm_attention,
    BeitAttention: _beit_attention,
    PrunedBeitAttention: _beit_attention,
    EvaAttention: _eva_attention,
    PrunedEvaAttention: _eva_attention,
}
MLP_LAYOUTS: dict[type[nn.Module], Callable[[nn.Module], UnitLayout]] = {
    Mlp: lambda mlp: _mlp(mlp, {"fc1.": (mlp.fc1, 1)}),
    GluMlp: lambda mlp: _mlp(mlp, {"fc1.": (mlp.fc1, 2)}),
    SwiGLU: lambda mlp: _mlp(mlp, {"fc1_g.": (mlp.fc1_g, 1), "fc1_x.": (mlp.fc1_x, 1)}),
}


def _lookup(
    table: dict[type[nn.Module], Callable[[nn.Module], UnitLayout]], module: nn.Module, role: str
) -> UnitLayout:
    build = table.get(type(module))
    if build is None:
        allowed = ", ".join(sorted({t.__name__ for t in table}))
        raise ValueError(
            f"{role} {type(module).__module__}.{type(module).__name__} has no layout here; supported: {allowed}"
        )
    return build(module)


def check_model(model: nn.Module) -> None:
    """Refuse, in one line, model-level tensors that hold every block's heads at once: a relative position
    bias shared by all blocks (BEiT's ``use_shared_rel_pos_bias``) or RoPE with learnt per-head frequencies
    (``rope_type='mixed'``); blocks pruned differently cannot share them."""
    name = type(model).__name__
    if getattr(model, "rel_pos_bias", None) is not None:
        raise ValueError(
            f"{name} shares one relative position bias across blocks (use_shared_rel_pos_bias=True), which ties "
            "every block to the same heads; use per-block biases"
        )
    if isinstance(getattr(model, "rope", None), RotaryEmbeddingMixed):
        raise ValueError(
            f"{name} has per-head RoPE frequencies for all blocks (rope_type='mixed'); use rope_type='cat'"
        )


def head_layout(attn: nn.Module) -> UnitLayout:
    """Where the heads of ``attn`` live (ValueError, one line, for an attention class without a layout)."""
    return _lookup(ATTENTION_LAYOUTS, attn, "attention")


def neuron_layout(mlp: nn.Module) -> UnitLayout:
    """Where the hidden neurons of ``mlp`` live (ValueError, one line, for an MLP class without a layout)."""
    return _lookup(MLP_LAYOUTS, mlp, "MLP")


# blocks whose residual stream is x + ls(attn(norm1(x))) + ls(mlp(norm2(x))): what channel pruning assumes
PRE_NORM_BLOCKS: tuple[type[nn.Module], ...] = (VitBlock, BeitBlock, EvaBlock)
LAYER_NORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm,)
RMS_NORMS: tuple[type[nn.Module], ...] = (RmsNorm, RmsNormFp32, nn.RMSNorm)


def _stream_norm(norm: nn.Module, where: str) -> tuple[UnitSlice, ...]:
    """The affine slices of a norm over the stream; refuses a norm whose statistics cannot be masked."""
    if isinstance(norm, nn.Identity):
        return ()
    if not isinstance(norm, LAYER_NORMS + RMS_NORMS):
        raise ValueError(f"{where} is a {type(norm).__name__}: channel pruning knows LayerNorm and RmsNorm only")
    units = int(norm.normalized_shape[0])
    return _norm(norm, units, 1)


def _block_channels(block: nn.Module, heads: UnitLayout, neurons: UnitLayout, dim: int, where: str) -> UnitLayout:
    """A block's slices of the stream's channels: the columns of every layer whose rows are heads or neurons
    (they read the stream), the rows of the layers whose columns are (they write it), and the norms and
    LayerScale gammas in between. Keys are the heads' and neurons' own keys: the same ADMM variables."""
    if type(block) not in PRE_NORM_BLOCKS:
        raise ValueError(
            f"{where} is a {type(block).__name__}: channel pruning knows pre-norm ViT, BEiT and EVA blocks"
        )
    group: dict[str, UnitSlice] = {}
    followers: list[UnitSlice] = []
    for layout in (heads, neurons):
        for key, s in layout.group.items():
            if s.is_linear_weight:
                group[key] = UnitSlice(s.owner, "weight", 1 - s.axis, dim)
                if s.axis == 1 and s.owner.bias is not None:
                    followers.append(UnitSlice(s.owner, "bias", 0, dim))
        followers += [UnitSlice(s.owner, "weight", 1, dim) for s in layout.followers if s.is_linear_weight]
    for name in ("norm1", "norm2"):
        followers += _stream_norm(getattr(block, name), f"{where}.{name}")
    for name in ("ls1", "ls2"):
        if isinstance(getattr(block, name, None), LayerScale):
            followers.append(UnitSlice(getattr(block, name), "gamma", 0, dim))
    for name in ("gamma_1", "gamma_2"):
        if isinstance(getattr(block, name, None), nn.Parameter):
            followers.append(UnitSlice(block, name, 0, dim))
    return UnitLayout(dim, 1, group, tuple(followers), None, _no_resize)


def _stem_channels(model: nn.Module, dim: int) -> tuple[UnitSlice, ...]:
    """The model's slices of the stream outside its blocks: patch embedding, tokens, position embedding,
    the norms before and after the blocks and the classifier's columns."""
    name = type(model).__name__
    if getattr(model, "attn_pool", None) is not None:
        raise ValueError(f"{name} pools with attention (attn_pool): channel pruning knows token and mean pooling")
    embed = model.patch_embed
    slices = [UnitSlice(embed.proj, "weight", 0, dim)]
    if embed.proj.bias is not None:
        slices.append(UnitSlice(embed.proj, "bias", 0, dim))
    slices += _stream_norm(getattr(embed, "norm", nn.Identity()), "patch_embed.norm")
    for token in ("cls_token", "reg_token", "dist_token", "pos_embed"):
        if isinstance(getattr(model, token, None), nn.Parameter):
            slices.append(UnitSlice(model, token, 2, dim))
    for norm in ("norm_pre", "norm", "fc_norm"):
        slices += _stream_norm(getattr(model, norm, nn.Identity()), norm)
    slices += [UnitSlice(h, "weight", 1, dim) for h in stream_classifiers(model)]
    return tuple(slices)


def stream_classifiers(model: nn.Module) -> tuple[nn.Linear, ...]:
    """The classifier layers that read the pooled stream (a distilled DeiT has two)."""
    return tuple(
        h for h in (getattr(model, "head", None), getattr(model, "head_dist", None)) if isinstance(h, nn.Linear)
    )


def stream_norms(model: nn.Module) -> tuple[nn.Module, ...]:
    """Every norm over the stream's channels, in the blocks and around them."""
    blocks = [getattr(b, n) for b in model.blocks for n in ("norm1", "norm2")]
    stem = [
        getattr(model.patch_embed, "norm", None),
        *(getattr(model, n, None) for n in ("norm_pre", "norm", "fc_norm")),
    ]
    return tuple(m for m in (*blocks, *stem) if isinstance(m, LAYER_NORMS + RMS_NORMS))


def _set_width(model: nn.Module) -> Callable[[int], None]:
    def resize(kept: int) -> None:
        for attr in ("embed_dim", "num_features", "head_hidden_size"):
            if hasattr(model, attr):
                setattr(model, attr, kept)
        for block in model.blocks:  # the heads' width no longer equals the stream's
            _use_pruned_forward(block.attn)

    return resize


def channel_layout(model: nn.Module) -> UnitLayout:
    """Where every residual-stream channel of ``model`` lives. ``group`` (keyed ``"<block>.<key>"``) holds
    the blocks' Linear slices, which are what scores and ADMM see; the rest follows."""
    dim = int(model.patch_embed.proj.out_channels)
    group: dict[str, UnitSlice] = {}
    followers: list[UnitSlice] = list(_stem_channels(model, dim))
    for index, block in enumerate(model.blocks):
        part = block_channel_layout(block, dim, f"blocks.{index}")
        group |= {f"{index}.{key}": s for key, s in part.group.items()}
        followers += part.followers
    return UnitLayout(dim, 1, group, tuple(followers), None, _set_width(model))


def block_channel_layout(block: nn.Module, dim: int, where: str) -> UnitLayout:
    """One block's part of :func:`channel_layout`, keyed like the block's heads and neurons."""
    return _block_channels(block, head_layout(block.attn), neuron_layout(block.mlp), dim, where)


def masked_norm(norm: nn.Module, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` as the same norm cut to the ``keep`` (0/1) channels computes it, zero elsewhere: the
    statistics run over the kept channels only, so the masked model equals the cut one."""
    keep = keep.to(x.dtype)
    kept = keep.sum()
    if isinstance(norm, LAYER_NORMS):
        mean = (x * keep).sum(-1, keepdim=True) / kept
        centred = (x - mean) * keep
        out = centred * torch.rsqrt(centred.pow(2).sum(-1, keepdim=True) / kept + norm.eps)
    else:
        eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
        out = x * keep * torch.rsqrt((x * keep).pow(2).sum(-1, keepdim=True) / kept + eps)
    if getattr(norm, "weight", None) is not None:
        out = out * norm.weight
    if getattr(norm, "bias", None) is not None:
        out = out + norm.bias
    return out * keep
