"""Capture processors for the joint attention of multimodal diffusion transformers (SD3, Flux).

In these layers image and text tokens share one softmax over all keys. An object's map is the
probability that each image query puts on the object's text-token columns of that softmax; computing it
needs the image queries' log-sum-exp over every key, image keys included. For the stock processors
(SD3's ``JointAttnProcessor2_0``, Flux's ``FluxAttnProcessor``) the layer's attention runs on a kernel
that returns that log-sum-exp with the output (:mod:`free_atm.attention.lse`), and only the object
columns are scored: linear in the image tokens. Elsewhere (another processor, an attention mask, a device
or dtype without such a kernel) the conditional half's image-query scores are computed a second time
(chunked, so memory stays bounded at high resolution); a debug log says which path ran.
``normalization="text"`` renormalises over the text keys only and needs no image scores.
``method="concept"`` (ConceptAttention's output space) forms the softmax from the layer's attention
*outputs* of image and text tokens instead, which the wrapped processor has already computed.

As for UNets, the wrapped processor computes the layer's output untouched; on the second-pass path the
query and keys it forms are read through :class:`~free_atm.attention.taps.ModuleTaps` (RMS norms and
rotary embeddings, cheap per-token operations, are applied again to the conditional half).
"""

from __future__ import annotations

import inspect
import logging
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from diffusers.models.attention_processor import JointAttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

from .aggregator import AttentionAggregator, layer_grid
from .concepts import ConceptStream, concept_attention, concept_probs
from .lse import KernelCall, kernel_lse
from .processor import with_signature
from .taps import ModuleTaps

logger = logging.getLogger(__name__)

#: the largest number of fp32 image-query scores held at once while computing the log-sum-exp
SCORE_CHUNK_ELEMENTS = 2**25


def image_log_norm(query: torch.Tensor, image_keys: torch.Tensor, scale: float) -> torch.Tensor:
    """``(B, H, N)``: each image query's log-sum-exp over the image keys, in float32, in chunks of queries
    (the scores of every query at once would not fit at high resolution)."""
    batch, heads, num_queries, _ = query.shape
    rows = max(1, SCORE_CHUNK_ELEMENTS // (batch * heads * (image_keys.shape[2] + 1)))
    return torch.cat(
        [
            torch.matmul(chunk, image_keys.transpose(-1, -2)).float().mul_(scale).logsumexp(dim=-1)
            for chunk in query.split(rows, dim=2)
        ],
        dim=2,
    )


def image_attention(query: torch.Tensor, image_keys: torch.Tensor, lse: torch.Tensor, scale: float) -> torch.Tensor:
    """The image-to-image part of a joint softmax, head-averaged: ``(B, N, N)`` of ``exp(q_i k_j s - lse_i)``
    for image queries ``(B, H, N, d)`` and keys ``(B, H, N, d)``, ``lse`` ``(B, H, N)`` being the log-sum-exp
    over every key of the layer (image and text), so no second softmax is formed; each row sums to the
    share of the query's attention that stays on the image. One head at a time: ``B x N x N`` at most."""
    total = None
    for head in range(query.shape[1]):
        scores = torch.matmul(query[:, head].float(), image_keys[:, head].float().transpose(-1, -2)).mul_(scale)
        probs = scores.sub_(lse[:, head].float().unsqueeze(-1)).exp_()
        total = probs if total is None else total.add_(probs)
    return total / query.shape[1]


def joint_scores(
    query: torch.Tensor, image_keys: torch.Tensor, text_keys: torch.Tensor, with_log_norm: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The float32 scores ``(B, H, N, L)`` of image queries ``(B, H, N, d)`` against text keys ``(B, H, L, d)``,
    scale ``1 / sqrt(d)``, and (``with_log_norm``) each query's log-sum-exp ``(B, H, N)`` over
    ``[image_keys, text_keys]``: the normaliser of the layer's own softmax."""
    scale = query.shape[-1] ** -0.5
    text_scores = torch.matmul(query.float(), text_keys.float().transpose(-1, -2)) * scale
    if not with_log_norm:
        return text_scores, None
    return text_scores, torch.logaddexp(image_log_norm(query, image_keys, scale), text_scores.logsumexp(dim=-1))


def joint_text_probs(
    query: torch.Tensor,
    image_keys: torch.Tensor,
    text_keys: torch.Tensor,
    normalization: str = "joint",
    scores: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Probabilities ``(B, H, N, L)`` from image queries ``(B, H, N, d)`` to text keys ``(B, H, L, d)``.

    ``"joint"``: columns of the softmax over ``[image_keys, text_keys]`` (the layer's own softmax);
    ``"text"``: the softmax over the text keys alone. ``scores``: :func:`joint_scores` already computed.
    """
    text_scores, log_norm = scores or joint_scores(query, image_keys, text_keys, normalization == "joint")
    if normalization == "text":
        return text_scores.softmax(dim=-1)
    return (text_scores - log_norm.unsqueeze(-1)).exp_()


def output_space_probs(image_outputs: torch.Tensor, text_outputs: torch.Tensor) -> torch.Tensor:
    """ConceptAttention's maps ``(B, H, N, L)``: the softmax over text tokens of the dot products of the image
    tokens' attention outputs ``(B, H, N, d)`` with the text tokens' ``(B, H, L, d)``, scale ``1 / sqrt(d)``."""
    scale = image_outputs.shape[-1] ** -0.5
    return (torch.matmul(image_outputs.float(), text_outputs.float().transpose(-1, -2)) * scale).softmax(dim=-1)


@dataclass
class JointSide:
    """The conditional half of one joint-attention call as the maps read it: image ``query``, ``image_keys``,
    ``image_values`` (``None`` unless concept tokens need them) and ``text_keys``, each ``(n, H, S, d)``, the
    ``scale``, and each image query's log-sum-exp over every key (``lse`` ``(n, H, N)``, once known)."""

    query: torch.Tensor
    image_keys: torch.Tensor
    image_values: torch.Tensor | None
    text_keys: torch.Tensor
    scale: float
    lse: torch.Tensor | None = None


@dataclass
class TransformerCall:
    """What the transformer's forward pre-hook learns for its layers: the text length of this call (Flux's
    single-stream blocks receive text and image tokens as one sequence)."""

    text_length: int = 0


class JointAttentionCaptureProcessor:
    """Wraps the processor of one joint-attention layer; the output is the wrapped processor's, untouched.

    Subclasses say how their family lays out the joint sequence (:meth:`heads`, :meth:`joint_layout`,
    :meth:`query_and_keys`, :meth:`attention_outputs`) and which stock processors run the kernel path
    (``KERNEL_PROCESSORS``, by exact type: a subclass may attend differently). The aggregator receives the
    conditional half's probabilities ``(n, H, N, L)`` of this layer (or of the object columns of ``L``),
    whose block index is ``block``.
    """

    KERNEL_PROCESSORS: tuple[type, ...] = ()

    def __init__(
        self, processor, aggregator: AttentionAggregator, block: int, call: TransformerCall, module=None
    ) -> None:
        self.processor, self.aggregator, self.block, self.call = processor, aggregator, block, call
        self.module = module  # the transformer block this layer belongs to (concept tokens run through it)
        self.signature = inspect.signature(processor.__call__)
        self.__call__ = with_signature(self._forward, self.signature)

    @staticmethod
    def captures(name: str, attn: torch.nn.Module) -> bool:
        """Whether the layer ``name`` is joint attention (image queries, text keys)."""
        return getattr(attn, "add_k_proj", None) is not None

    def _forward(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, *args, **kwargs):
        text_length = self.text_length(hidden_states, encoder_hidden_states)
        num_images = hidden_states.shape[1] - (0 if encoder_hidden_states is not None else text_length)
        counted = self.aggregator.wants(num_images, self.block)
        concepts = self.aggregator.concepts
        concepts = concepts if concepts is not None and concepts.running else None
        if not counted and concepts is None:
            return self.processor(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        n, total = self.aggregator.num_images, hidden_states.shape[0]
        if total not in (n, 2 * n):
            raise RuntimeError(f"joint-attention batch {total} is neither {n} images nor {2 * n} (guidance)")
        in_output_space = self.aggregator.config.method == "concept"
        # the kernel's log-sum-exp carries no gradient: a training step (grad enabled) takes the second pass
        kernel = not in_output_space and type(self.processor) in self.KERNEL_PROCESSORS and not torch.is_grad_enabled()
        projected = {}  # modules whose outputs are read: the projections, for the second pass
        if not kernel and (not in_output_space or concepts is not None):
            projected = {"query": attn.to_q, "key": attn.to_k, "text_key": getattr(attn, "add_k_proj", None)}
            if concepts is not None:
                projected["value"] = attn.to_v
        received = {}  # modules whose inputs are read: the attention outputs, for ConceptAttention's output space
        if in_output_space:
            to_out = getattr(attn, "to_out", None)
            received = {"image_out": to_out and to_out[0], "text_out": getattr(attn, "to_add_out", None)}
        with ModuleTaps(projected, received) as taps, kernel_lse() if kernel else nullcontext([]) as served:
            output = self.processor(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        conditional = slice(total - n, None)
        side = None
        if served and served[0].query.shape[2] == num_images + text_length:
            side = self.served_side(served[0], conditional, num_images, text_length)
            logger.debug("block %d: log-sum-exp from the attention kernel", self.block)
        elif not in_output_space or concepts is not None:  # the projections tapped, or made again
            arguments = self.signature.bind(attn, hidden_states, encoder_hidden_states, *args, **kwargs).arguments
            query, image_keys, text_keys = self.query_and_keys(
                attn, taps, hidden_states, encoder_hidden_states, text_length, conditional, arguments
            )
            values = None
            if concepts is not None:
                values = self.image_values(attn, taps, hidden_states, text_length, conditional)
            side = JointSide(query, image_keys, values, text_keys, query.shape[-1] ** -0.5)
            logger.debug("block %d: %s, second pass of the image-key scores", self.block, _why_second_pass(kernel))
        concept_keys = concept_outputs = None
        if concepts is not None:  # the tokens' keys and outputs at this block, and the stream carried on
            concept_keys, concept_outputs = self.carry_concepts(attn, concepts, side)
        if not counted:
            return output
        columns = None
        if in_output_space:
            image_out, text_out = self.attention_outputs(taps, output, text_length)
            image_out, text_out = self.heads(attn, image_out[conditional]), self.heads(attn, text_out[conditional])
            scale = image_out.shape[-1] ** -0.5
            text_scores = torch.matmul(image_out.float(), text_out.float().transpose(-1, -2)) * scale
            probs = text_scores.softmax(dim=-1)  # output_space_probs, with the scores kept for the concept tokens
            if concepts is not None:
                scores = torch.matmul(image_out.float(), concept_outputs.float().transpose(-1, -2)) * scale
                probs = torch.cat([probs, concept_probs(scores, text_scores.logsumexp(dim=-1))], -1)
        else:
            probs, columns, log_norm = self.text_probs(side, text_length)
            if self.aggregator.self_attention is not None and self.aggregator.self_attention.active:
                if side.lse is None:  # under normalization="text" on the second pass
                    side.lse = joint_scores(side.query, side.image_keys, side.text_keys)[1]
                attention = image_attention(side.query, side.image_keys, side.lse, side.scale)
                self.add_image_attention(attention, num_images)
            if concepts is not None:
                scores = torch.matmul(side.query.float(), concept_keys.float().transpose(-1, -2)) * side.scale
                probs = torch.cat([probs, concept_probs(scores, log_norm)], -1)
                if columns is not None:
                    added = torch.arange(text_length, text_length + scores.shape[-1], device=columns.device)
                    columns = torch.cat([columns, added])
        self.aggregator.add(probs, columns)
        return output

    def served_side(self, served: KernelCall, conditional: slice, num_images: int, text_length: int) -> JointSide:
        """The conditional half's image queries, keys and values, text keys and log-sum-exp from the served
        kernel call."""
        image, text = self.joint_layout(num_images, text_length)
        return JointSide(
            served.query[conditional, :, image],
            served.key[conditional, :, image],
            served.value[conditional, :, image],
            served.key[conditional, :, text],
            served.scale,
            served.lse[conditional, :, image],
        )

    def text_probs(self, side: JointSide, text_length: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The conditional half's probabilities on the text keys ``(n, H, N, L)`` (or only on the object columns,
        and those columns, when the kernel gave the log-sum-exp), and each image query's log normaliser of them:
        over every key of the layer (``normalization="joint"``) or over the text keys alone (``"text"``)."""
        query = side.query.float()
        if self.aggregator.config.normalization == "text":
            scores = torch.matmul(query, side.text_keys.float().transpose(-1, -2)) * side.scale
            log_norm = scores.logsumexp(dim=-1)
            return (scores - log_norm.unsqueeze(-1)).exp_(), None, log_norm
        if side.lse is None:  # one pass over the image keys gives the normaliser and the text scores
            scores, side.lse = joint_scores(side.query, side.image_keys, side.text_keys)
            return (scores - side.lse.unsqueeze(-1)).exp_(), None, side.lse
        columns = self.aggregator.object_columns().to(side.text_keys.device)
        columns = columns[columns < text_length]  # the rest are the concept tokens'
        scores = torch.matmul(query, side.text_keys[:, :, columns].float().transpose(-1, -2)).mul_(side.scale)
        return scores.sub_(side.lse.float().unsqueeze(-1)).exp_(), columns, side.lse

    def carry_concepts(self, attn, concepts: ConceptStream, side: JointSide) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the concept tokens through this block (:mod:`.concepts`): their keys ``(n, H, K, d)`` and
        attention outputs ``(n, H, K, d)`` here; ``concepts.tokens`` becomes the block's output stream."""
        raise NotImplementedError

    def add_image_attention(self, attention: torch.Tensor, num_images: int) -> None:
        """Add one block's image-to-image attention ``(n, N, N)`` to the running sum refinement uses."""
        self.aggregator.self_attention.add(attention, layer_grid(num_images, self.aggregator.latent_size)[1])

    def joint_layout(self, num_images: int, text_length: int) -> tuple[slice, slice]:
        """Where the image and the text tokens lie in the joint sequence the kernel attends over."""
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self._forward(*args, **kwargs)

    def text_length(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None) -> int:
        return encoder_hidden_states.shape[1]

    @staticmethod
    def heads(attn, states: torch.Tensor) -> torch.Tensor:
        """``(B, S, H * d)`` -> ``(B, H, S, d)``."""
        return states.unflatten(-1, (attn.heads, -1)).transpose(1, 2)

    def query_and_keys(self, attn, taps, hidden_states, encoder_hidden_states, text_length, conditional, arguments):
        """Image queries, image keys and text keys ``(n, H, S, d)`` of the conditional half, normed (and
        rotated) as the wrapped processor did; ``arguments`` are the processor call's, by name."""
        raise NotImplementedError

    def image_values(self, attn, taps, hidden_states, text_length, conditional) -> torch.Tensor:
        """The conditional half's image values ``(n, H, N, d)``, as the wrapped processor formed them."""
        values = _projected(taps, "value", attn.to_v, hidden_states)[conditional]
        return self.heads(attn, values[:, self.image_positions(text_length)])

    def image_positions(self, text_length: int) -> slice:
        """Where the image tokens lie in the sequence the layer's own projections see (the image tokens alone,
        except in Flux's single-stream blocks)."""
        return slice(0, None)

    def attention_outputs(self, taps: ModuleTaps, output, text_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The image and text tokens' attention outputs ``(B, S, H * d)`` before the output projections:
        the inputs of ``to_out[0]`` and ``to_add_out``, or the processor's own output where the layer has
        no projection (SD3's ``context_pre_only`` text, Flux's single-stream blocks)."""
        image_out, text_out = taps.input("image_out"), taps.input("text_out")
        if isinstance(output, tuple):
            image_out = image_out if image_out is not None else output[0]
            text_out = text_out if text_out is not None else output[1]
        else:
            image_out = image_out if image_out is not None else output[:, text_length:]
            text_out = text_out if text_out is not None else output[:, :text_length]
        return image_out, text_out


def _why_second_pass(kernel: bool) -> str:
    if not kernel:
        return "gradients are on, or a processor without a known kernel path"
    return "no attention kernel returned the log-sum-exp (a mask, another backend, device or dtype)"


def _projected(taps: ModuleTaps, name: str, layer, states: torch.Tensor) -> torch.Tensor:
    """The tapped projection, or the projection made again (fused-projection processors do not run it)."""
    tapped = taps.output(name)
    return tapped if tapped is not None and tapped.shape[:2] == states.shape[:2] else layer(states)


class SD3AttentionCaptureProcessor(JointAttentionCaptureProcessor):
    """SD3 (``JointAttnProcessor2_0``): the joint sequence is image tokens, then text tokens; q/k RMS norms
    per stream; under classifier-free guidance the batch is ``[negative, conditional]``. SD3.5's ``attn2``
    (image self-attention) has no text keys and is left alone."""

    KERNEL_PROCESSORS = (JointAttnProcessor2_0,)

    def joint_layout(self, num_images: int, text_length: int) -> tuple[slice, slice]:
        return slice(0, num_images), slice(num_images, num_images + text_length)

    def query_and_keys(self, attn, taps, hidden_states, encoder_hidden_states, text_length, conditional, arguments):
        query = self.heads(attn, _projected(taps, "query", attn.to_q, hidden_states)[conditional])
        image_keys = self.heads(attn, _projected(taps, "key", attn.to_k, hidden_states)[conditional])
        text_keys = self.heads(attn, _projected(taps, "text_key", attn.add_k_proj, encoder_hidden_states)[conditional])
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            image_keys = attn.norm_k(image_keys)
        if attn.norm_added_k is not None:
            text_keys = attn.norm_added_k(text_keys)
        return query, image_keys, text_keys

    def carry_concepts(self, attn, concepts: ConceptStream, side: JointSide) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``JointTransformerBlock`` treats its text: ``norm1_context`` modulation, the context projections
        and norms, then (unless the block is ``context_pre_only``, the last one) ``to_add_out``, the gate, and the
        context feed-forward."""
        block, tokens = self.module, concepts.tokens
        if block.context_pre_only:
            normed = block.norm1_context(tokens, concepts.temb)
        else:
            normed, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.norm1_context(tokens, emb=concepts.temb)
        query, key, value = (self.heads(attn, f(normed)) for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
        if attn.norm_added_q is not None:
            query = attn.norm_added_q(query)
        if attn.norm_added_k is not None:
            key = attn.norm_added_k(key)
        out = concept_attention(query, key, value, side.image_keys, side.image_values)
        if not block.context_pre_only:
            tokens = tokens + gate_msa.unsqueeze(1) * attn.to_add_out(out)
            normed = block.norm2_context(tokens) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
            concepts.tokens = tokens + gate_mlp.unsqueeze(1) * block.ff_context(normed)
        else:
            concepts.running = False  # the last block: the text stream ends here, and so do the tokens
        return key, self.heads(attn, out)


class FluxAttentionCaptureProcessor(JointAttentionCaptureProcessor):
    """Flux (``FluxAttnProcessor``): the joint sequence is text tokens, then image tokens, with rotary
    embeddings applied over it after the q/k norms. Double-stream blocks project the streams apart;
    single-stream blocks receive the concatenated sequence (its text length comes from the transformer
    call). True classifier-free guidance runs the negative prompt as a separate call (the aggregator counts
    the first call of each timestep)."""

    KERNEL_PROCESSORS = (FluxAttnProcessor,)

    def joint_layout(self, num_images: int, text_length: int) -> tuple[slice, slice]:
        return slice(text_length, text_length + num_images), slice(0, text_length)

    @staticmethod
    def captures(name: str, attn: torch.nn.Module) -> bool:
        return JointAttentionCaptureProcessor.captures(name, attn) or name.startswith("single_transformer_blocks.")

    def text_length(self, hidden_states, encoder_hidden_states) -> int:
        return encoder_hidden_states.shape[1] if encoder_hidden_states is not None else self.call.text_length

    def query_and_keys(self, attn, taps, hidden_states, encoder_hidden_states, text_length, conditional, arguments):
        def tokens(name, layer, states, norm):  # (n, S, H, d): the processor's layout
            return norm(_projected(taps, name, layer, states)[conditional].unflatten(-1, (attn.heads, -1)))

        query = tokens("query", attn.to_q, hidden_states, attn.norm_q)
        keys = tokens("key", attn.to_k, hidden_states, attn.norm_k)
        if encoder_hidden_states is not None:  # double-stream: image and text projected apart
            text_keys = tokens("text_key", attn.add_k_proj, encoder_hidden_states, attn.norm_added_k)
        else:  # single-stream: one sequence, text first; the text tokens' queries are not needed
            query, text_keys, keys = query[:, text_length:], keys[:, :text_length], keys[:, text_length:]
        rotary = arguments.get("image_rotary_emb")
        if rotary is not None:  # positions: text first, then image (rotated apart, nothing concatenated)
            text_rotary, image_rotary = (
                tuple(r[:text_length] for r in rotary),
                tuple(r[text_length:] for r in rotary),
            )
            query = apply_rotary_emb(query, image_rotary, sequence_dim=1)
            keys = apply_rotary_emb(keys, image_rotary, sequence_dim=1)
            text_keys = apply_rotary_emb(text_keys, text_rotary, sequence_dim=1)
        return query.transpose(1, 2), keys.transpose(1, 2), text_keys.transpose(1, 2)

    def image_positions(self, text_length: int) -> slice:
        return slice(0, None) if self.joint_text_apart else slice(text_length, None)

    @property
    def joint_text_apart(self) -> bool:
        """Whether the block projects text and image apart (double-stream) rather than as one sequence."""
        return hasattr(self.module, "norm1_context")

    def carry_concepts(self, attn, concepts: ConceptStream, side: JointSide) -> tuple[torch.Tensor, torch.Tensor]:
        """As Flux treats its text: in a double-stream block, ``norm1_context`` modulation, the context projections
        and norms, ``to_add_out``, the gate and the context feed-forward; in a single-stream block, the shared
        ``norm`` modulation, MLP, projections and norms, and ``proj_out`` of attention and MLP, gated. The tokens
        take the rotary embedding of the first text position (the pipelines give every text token position 0)."""
        block, tokens = self.module, concepts.tokens

        def heads(projection, states, norm=None):  # (n, K, H, d), normed and rotated as the text's
            states = projection(states).unflatten(-1, (attn.heads, -1))
            states = norm(states) if norm is not None else states
            if concepts.rotary is not None and norm is not None:
                rotary = tuple(r[:1].expand(states.shape[1], -1) for r in concepts.rotary)
                states = apply_rotary_emb(states, rotary, sequence_dim=1)
            return states.transpose(1, 2)

        if self.joint_text_apart:
            normed, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.norm1_context(tokens, emb=concepts.temb)
            query = heads(attn.add_q_proj, normed, attn.norm_added_q)
            key = heads(attn.add_k_proj, normed, attn.norm_added_k)
            out = concept_attention(query, key, heads(attn.add_v_proj, normed), side.image_keys, side.image_values)
            tokens = tokens + gate_msa.unsqueeze(1) * attn.to_add_out(out)
            normed = block.norm2_context(tokens) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
            concepts.tokens = tokens + gate_mlp.unsqueeze(1) * block.ff_context(normed)
        else:
            normed, gate = block.norm(tokens, emb=concepts.temb)
            mlp = block.act_mlp(block.proj_mlp(normed))
            query, key = heads(attn.to_q, normed, attn.norm_q), heads(attn.to_k, normed, attn.norm_k)
            out = concept_attention(query, key, heads(attn.to_v, normed), side.image_keys, side.image_values)
            concepts.tokens = tokens + gate.unsqueeze(1) * block.proj_out(torch.cat([out, mlp], dim=2))
        return key, self.heads(attn, out)
