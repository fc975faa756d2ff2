"""A naive reference for joint attention (SD3, Flux): every joint layer computed by hand with an explicit
softmax over all keys, every call's full probability matrix and attention outputs kept.

It replaces the layers' processors (so a test can first check that its images equal the stock pipeline's,
which shows the hand-written layer is the model's), and records per call: the timestep, how many calls
came before at that timestep, the block index, the conditional half's image-to-text and image-to-image
probabilities ``(n, H, N, L)`` and ``(n, H, N, N)`` of the joint softmax, the image and text tokens'
attention outputs ``(n, H, S, d)``, and the image queries, keys and values ``(n, H, N, d)`` with each image
query's log-sum-exp over every key ``(n, H, N)`` (what concept tokens read).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb


class JointReference:
    def __init__(self, transformer, num_images: int):
        self.transformer, self.n = transformer, num_images
        self.flux = type(transformer).__name__.startswith("Flux")
        self.records: list[dict] = []
        self.timestep, self.calls_at_timestep = None, 0
        self.originals = transformer.attn_processors
        processors, block = dict(self.originals), 0
        for name in processors:
            attn = transformer.get_submodule(name.removesuffix(".processor"))
            if getattr(attn, "add_k_proj", None) is not None or name.startswith("single_transformer_blocks."):
                processors[name] = self._layer(block, self.originals[name])
                block += 1
        transformer.set_attn_processor(processors)
        self.hook = transformer.register_forward_pre_hook(self._on_call, with_kwargs=True)

    def _on_call(self, module, args, kwargs):
        timestep = float(kwargs["timestep"].flatten()[0]) * (1000 if self.flux else 1)
        self.calls_at_timestep = self.calls_at_timestep + 1 if timestep == self.timestep else 0
        self.timestep = timestep
        if self.flux:
            self.text_length = kwargs["encoder_hidden_states"].shape[1]

    def _layer(self, block, stock):
        reference = self

        def call(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None, **kw):
            if encoder_hidden_states is None and not reference.flux:  # SD3.5's attn2: image self-attention
                return stock(attn, hidden_states, None, attention_mask, **kw)
            batch, heads = hidden_states.shape[0], attn.heads

            def split(x):
                return x.view(batch, -1, heads, x.shape[-1] // heads).transpose(1, 2)

            q, k, v = split(attn.to_q(hidden_states)), split(attn.to_k(hidden_states)), split(attn.to_v(hidden_states))
            q, k = attn.norm_q(q), attn.norm_k(k)
            single = encoder_hidden_states is None
            if not single:
                tq = split(attn.add_q_proj(encoder_hidden_states))
                tk = split(attn.add_k_proj(encoder_hidden_states))
                tv = split(attn.add_v_proj(encoder_hidden_states))
                tq, tk = attn.norm_added_q(tq), attn.norm_added_k(tk)
                if reference.flux:  # text first
                    q, k, v = torch.cat([tq, q], 2), torch.cat([tk, k], 2), torch.cat([tv, v], 2)
                else:  # image first
                    q, k, v = torch.cat([q, tq], 2), torch.cat([k, tk], 2), torch.cat([v, tv], 2)
            if image_rotary_emb is not None:
                q, k = apply_rotary_emb(q, image_rotary_emb), apply_rotary_emb(k, image_rotary_emb)
            length = reference.text_length if single else encoder_hidden_states.shape[1]
            total = q.shape[2]
            image = slice(length, total) if reference.flux else slice(0, total - length)
            text = slice(0, length) if reference.flux else slice(total - length, total)
            scores = q.float() @ k.float().transpose(-1, -2) / q.shape[-1] ** 0.5
            probs = scores.softmax(-1)
            out = (probs @ v.float()).to(v.dtype)  # (B, H, S, d)
            cond = slice(batch - reference.n, batch)
            reference.records.append(
                {
                    "timestep": reference.timestep,
                    "repeat": reference.calls_at_timestep,
                    "block": block,
                    "probs": probs[cond][:, :, image, text],
                    "image_probs": probs[cond][:, :, image, image],
                    "image_out": out[cond][:, :, image],
                    "text_out": out[cond][:, :, text],
                    "image_query": q[cond][:, :, image],
                    "image_key": k[cond][:, :, image],
                    "image_value": v[cond][:, :, image],
                    "lse": scores[cond][:, :, image].logsumexp(-1),
                }
            )
            out = out.transpose(1, 2).reshape(batch, total, -1)
            if single:
                return out
            image_out, text_out = out[:, image], out[:, text]
            image_out = attn.to_out[1](attn.to_out[0](image_out))
            if getattr(attn, "to_add_out", None) is not None and not getattr(attn, "context_pre_only", False):
                text_out = attn.to_add_out(text_out)
            return image_out, text_out

        return call

    def maps(self, positions, grid, size, method="joint", blocks=None) -> torch.Tensor:
        """Mean maps ``(n, M, *size)`` over the first call of each timestep and the chosen blocks.

        ``positions[i][m]`` are object m's text positions in image i's sequence; ``method`` is ``"joint"``
        (columns of the full softmax), ``"text"`` (those columns renormalised over all text columns) or
        ``"concept"`` (softmax over text tokens of image-output . text-output / sqrt(d)).
        """
        kept = []
        for record in self.records:
            if record["repeat"] != 0 or (blocks is not None and record["block"] not in blocks):
                continue
            probs = record["probs"]
            if method == "text":
                probs = probs / probs.sum(-1, keepdim=True)
            elif method == "concept":
                image_out, text_out = record["image_out"].float(), record["text_out"].float()
                probs = (image_out @ text_out.transpose(-1, -2) / image_out.shape[-1] ** 0.5).softmax(-1)
            probs = probs.mean(1)  # heads
            maps = torch.stack(
                [torch.stack([probs[i][:, idx].mean(-1) for idx in objects]) for i, objects in enumerate(positions)]
            )
            maps = maps.view(len(positions), -1, *grid)
            kept.append(F.interpolate(maps, size=size, mode="bilinear", align_corners=False))
        return torch.stack(kept).mean(0)

    def image_attention(self, blocks=None) -> torch.Tensor:
        """The image-to-image part of the full softmax ``(n, N, N)``, averaged over heads, the chosen blocks
        and the first call of each timestep, in float64."""
        kept = [
            record["image_probs"].double().mean(1)
            for record in self.records
            if record["repeat"] == 0 and (blocks is None or record["block"] in blocks)
        ]
        return torch.stack(kept).mean(0)

    def restore(self):
        self.hook.remove()
        self.transformer.set_attn_processor(self.originals)
