"""fastcnn.nn.MultiheadSelfAttention: torch.nn.MultiheadAttention on fastcnn's fused
attention (qkv projection, ``fastcnn.ops.attention``, output projection)."""
import torch
import torch.nn.functional as F

from fastcnn import ops


class MultiheadSelfAttention(torch.nn.MultiheadAttention):
    """torch.nn.MultiheadAttention with the same arguments, parameters and state_dict
    (``in_proj_weight``, ``in_proj_bias``, ``out_proj``), whose attention runs on
    ``fastcnn.ops.attention``: the (L x S) weights never exist.

    Calls that must return the attention weights (``need_weights=True``, torch's
    default: ViT blocks pass False), unbatched inputs, separate k/v embedding sizes,
    ``add_bias_kv`` and ``add_zero_attn`` run torch's own forward. Masks follow
    torch's conventions (a bool ``attn_mask`` / ``key_padding_mask`` marks what is
    *not* attended). Extra keyword: ``algo`` (see fastcnn.ops)."""

    def __init__(self, *args, algo: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.algo = algo

    def fused_reasons(self, query, key, value, need_weights) -> list:
        """Why this call runs torch's forward instead of the fused one (empty: fused)."""
        reasons = []
        if need_weights:
            reasons.append("need_weights=True returns the attention weights")
        if query.dim() != 3:
            reasons.append("unbatched input")
        if not self._qkv_same_embed_dim:
            reasons.append("kdim/vdim differ from embed_dim")
        if self.bias_k is not None or self.add_zero_attn:
            reasons.append("add_bias_kv / add_zero_attn")
        return reasons

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if self.fused_reasons(query, key, value, need_weights):
            return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask,
                                   average_attn_weights, is_causal)
        if is_causal and attn_mask is None:
            raise RuntimeError("fastcnn.nn.MultiheadSelfAttention: is_causal=True is a hint that attn_mask "
                               "is the causal mask, and needs attn_mask (as torch.nn.MultiheadAttention)")
        self_attention = query is key and key is value
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = self._project(query, key, value, self_attention)
        # As torch: is_causal lets the kernel build the causal mask itself only when no
        # padding mask must be merged in; otherwise attn_mask (which is_causal says is
        # the causal mask) and key_padding_mask become one mask, and is_causal is off.
        causal = is_causal and key_padding_mask is None
        mask = None if causal else self._additive_mask(attn_mask, key_padding_mask, q)
        out = ops.attention(q, k, v, causal=causal, attn_mask=mask,
                            dropout_p=self.dropout if self.training else 0.0, algo=self.algo)
        batch, length = out.shape[0], out.shape[2]
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, self.embed_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None

    def _heads(self, t):
        """(B, L, E) -> (B, H, L, E / H), a view."""
        return t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _project(self, query, key, value, self_attention):
        if self_attention:  # one GEMM for q, k and v
            qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
            return tuple(self._heads(t) for t in qkv.chunk(3, dim=-1))
        weights = self.in_proj_weight.chunk(3)
        biases = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
        return tuple(self._heads(F.linear(t, w, b)) for t, w, b in zip((query, key, value), weights, biases))

    def _additive_mask(self, attn_mask, key_padding_mask, q):
        """torch's attn_mask ((L, S) or (B * H, L, S)) and key_padding_mask ((B, S)),
        bool = "masked", as one additive mask broadcastable to (B, H, L, S)."""
        batch, heads = q.shape[0], q.shape[1]
        mask = None
        if attn_mask is not None:
            mask = _as_additive(attn_mask, q.dtype)
            mask = mask.view(batch, heads, *mask.shape[1:]) if mask.dim() == 3 else mask
        if key_padding_mask is not None:
            pad = _as_additive(key_padding_mask, q.dtype).view(batch, 1, 1, -1)
            mask = pad if mask is None else mask + pad
        return mask

    @classmethod
    def from_torch(cls, module: torch.nn.MultiheadAttention, algo: str = "auto"):
        """A fastcnn module sharing ``module``'s parameters (no copy)."""
        new = cls(module.embed_dim, module.num_heads, module.dropout, bias=module.in_proj_bias is not None,
                  add_bias_kv=module.bias_k is not None, add_zero_attn=module.add_zero_attn,
                  kdim=module.kdim, vdim=module.vdim, batch_first=module.batch_first, device="meta", algo=algo)
        for name, param in module.named_parameters(recurse=False):
            setattr(new, name, param)
        new.out_proj = module.out_proj
        new.train(module.training)
        return new

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}, " \
               f"algo={self.algo!r}"


def _as_additive(mask, dtype):
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


__all__ = ["MultiheadSelfAttention"]
