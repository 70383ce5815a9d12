"""Per-token log-probabilities of completions without materialising full-vocabulary float32 logits at once.

The language model's hidden states are computed once; the LM head and log-softmax run over chunks of positions,
so peak extra memory is ``chunk_size x vocab`` floats instead of ``N x T x vocab``.

``temperature`` divides the logits before the softmax, so the log-probs are those of the distribution the rollout
engine sampled from (temperature applied, no top-k/top-p truncation), as TRL and veRL compute them. With raw
(temperature-1) log-probs and samples drawn at T < 1, the negative-advantage half of the gradient pushes mass into
the raw distribution's long tail: on the demo task the policy's raw entropy rose from 1.1 to 2.7 nats in 30 steps.

``grouped_completion_logps`` exploits GRPO's layout (G completions per prompt): each prompt's images through the
vision tower once and its tokens through the language model once, the completions attending to its cached keys and
values. ``completion_logps`` is the one-row-per-completion forward, for other model families and as the reference
the grouped one is tested against.

On CPU with a float32 ``nn.Linear`` head, ``selective_logps`` runs ``FusedLinearLogProb``: the chunk's logits are
written into one reused workspace, normalised in place, and recomputed in the backward pass instead of being kept.
The autograd path allocates (and the kernel zero-fills) several fresh ``chunk x vocab`` tensors per chunk, stores the
logits of every chunk for the backward pass, and spends most of a tiny model's step faulting in those pages.
"""

from __future__ import annotations

import torch
from torch import nn

from models.families import family_of


def selective_logps(
    hidden: torch.Tensor,
    lm_head: nn.Module,
    targets: torch.Tensor,
    chunk_size: int = 1024,
    with_entropy: bool = True,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(targets) and the entropy of each position's distribution, both at ``temperature``.

    hidden: [N, T, H] states that predict ``targets`` [N, T]. Returns logps [N, T] and entropy [N, T] (float32).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature} (greedy has no log-probs)")
    n, t, h = hidden.shape
    flat_h = hidden.reshape(n * t, h)  # [N*T, H]
    flat_y = targets.reshape(n * t)  # [N*T]
    if fusable(hidden, lm_head):
        rows = max(1, min(chunk_size, FUSED_WORKSPACE_ELEMENTS // lm_head.weight.shape[0]))
        logps, entropy = FusedLinearLogProb.apply(flat_h, lm_head.weight, flat_y, temperature, rows, with_entropy)
        return logps.view(n, t), (entropy.view(n, t) if with_entropy else None)
    logps, entropies = [], []
    for start in range(0, n * t, chunk_size):
        logits = lm_head(flat_h[start : start + chunk_size]).float()  # [c, V]
        if temperature != 1.0:
            logits = logits / temperature
        logz = torch.logsumexp(logits, dim=-1)  # [c]
        logps.append(logits.gather(1, flat_y[start : start + chunk_size, None]).squeeze(1) - logz)
        if with_entropy:
            with torch.no_grad():
                probs = torch.softmax(logits, dim=-1)
                entropies.append(logz - (probs * logits).sum(-1))
    out = torch.cat(logps).view(n, t)
    return out, (torch.cat(entropies).view(n, t) if with_entropy else None)


FUSED_WORKSPACE_ELEMENTS = 2**25  # floats per workspace (128 MiB): 220 positions of a 151,936-token vocabulary


def fusable(hidden: torch.Tensor, lm_head: nn.Module) -> bool:
    """Whether ``FusedLinearLogProb`` can stand in for ``lm_head``: a bias-free float32 ``nn.Linear`` on the CPU whose
    weight is a plain tensor (a sharded DTensor must go through the module's own forward). On GPUs the autograd path
    stays: its kernels do not page-fault, and recomputing the logits would cost a matmul."""
    weight = getattr(lm_head, "weight", None)
    return (
        type(lm_head) is nn.Linear
        and lm_head.bias is None
        and type(weight) is nn.Parameter
        and weight.dtype == torch.float32
        and hidden.dtype == torch.float32
        and weight.device.type == "cpu"
        and hidden.device.type == "cpu"
    )


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, temperature: float, out: torch.Tensor) -> torch.Tensor:
    """hidden [c, H] @ weight.T / temperature written into ``out`` [c, V] (a workspace slice); returns ``out``."""
    torch.mm(hidden, weight.t(), out=out)
    return out.div_(temperature) if temperature != 1.0 else out


class FusedLinearLogProb(torch.autograd.Function):
    """log softmax(hidden @ weight.T / temperature)[targets] and the entropy of each distribution, in chunks of
    ``rows`` positions through one reused ``[rows, V]`` workspace. Only the per-position log-normaliser is kept for
    the backward pass, which recomputes each chunk's logits.

    hidden [M, H], weight [V, H], targets [M] -> logps [M], entropy [M] (no gradient; empty without
    ``with_entropy``).
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature: float, rows: int, with_entropy: bool):
        m, v = hidden.shape[0], weight.shape[0]
        rows = max(1, min(rows, m))
        work = hidden.new_empty(rows, v)  # [rows, V]
        probs = hidden.new_empty(rows, v) if with_entropy else None  # [rows, V]
        logps, lse = hidden.new_empty(m), hidden.new_empty(m)  # [M]
        entropy = hidden.new_empty(m if with_entropy else 0)
        for start in range(0, m, rows):
            end = min(start + rows, m)
            z = _chunk_logits(hidden[start:end], weight, temperature, work[: end - start])  # [c, V]
            picked = z.gather(1, targets[start:end, None]).squeeze(1)  # [c]
            top = z.amax(1, keepdim=True)  # [c, 1]
            z.sub_(top)
            if with_entropy:
                e = torch.exp(z, out=probs[: end - start])  # [c, V] unnormalised probabilities
                total = e.sum(1)  # [c]
                weighted = e.mul_(z).sum(1)  # [c]: sum exp(z) * z
                entropy[start:end] = total.log() - weighted / total
            else:
                total = z.exp_().sum(1)  # [c]
            lse[start:end] = top.squeeze(1) + total.log()
            logps[start:end] = picked - lse[start:end]
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.temperature, ctx.rows = temperature, rows
        ctx.mark_non_differentiable(entropy)
        return logps, entropy

    @staticmethod
    def backward(ctx, grad_logps, _grad_entropy):
        hidden, weight, targets, lse = ctx.saved_tensors
        m, v = hidden.shape[0], weight.shape[0]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None  # [M, H]
        grad_w = torch.zeros_like(weight) if need_w else None  # [V, H]
        work = hidden.new_empty(ctx.rows, v)  # [rows, V]
        scale = grad_logps / ctx.temperature  # [M]: d logp / d raw logits = (onehot - p) / temperature
        for start in range(0, m, ctx.rows):
            end = min(start + ctx.rows, m)
            z = _chunk_logits(hidden[start:end], weight, ctx.temperature, work[: end - start])  # [c, V]
            z.sub_(lse[start:end, None]).exp_()  # softmax
            g = scale[start:end, None]  # [c, 1]
            z.mul_(-g).scatter_add_(1, targets[start:end, None], g)  # [c, V]: gradient of the raw logits
            if need_h:
                torch.mm(z, weight, out=grad_h[start:end])
            if need_w:
                grad_w.addmm_(z.t(), hidden[start:end])
        return grad_h, grad_w, None, None, None, None


def backbone_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The multimodal backbone (returns hidden states) and the LM head, through a peft wrapper if any."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.lm_head


def completion_logps(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_length: int,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    chunk_size: int = 1024,
    with_entropy: bool = True,
    temperature: float = 1.0,
    completion_mask: torch.Tensor | None = None,
    **model_kwargs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the last ``completion_length`` tokens of each row.

    input_ids, attention_mask: [N, P + C] (left-padded prompt, then the completion). Returns logps [N, C] and entropy
    [N, C]; positions after a completion's end hold values to be masked by the caller. With ``completion_mask``
    [N, C] the LM head runs on the masked-in positions only and the others hold 0: padding after short completions
    costs nothing (the LM head over a 151,936-token vocabulary is most of a small model's step). ``model_kwargs``
    carries the processor's other outputs (``mm_token_type_ids``, which M-RoPE position ids depend on).
    """
    backbone, lm_head = backbone_and_head(model)
    out = backbone(
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values=pixel_values,
        image_grid_thw=image_grid_thw,
        use_cache=False,
        **model_kwargs,
    )
    hidden = out.last_hidden_state[:, -completion_length - 1 : -1]  # [N, C, H]: position t predicts token t+1
    targets = input_ids[:, -completion_length:]  # [N, C]
    return masked_logps(hidden, lm_head, targets, completion_mask, chunk_size, with_entropy, temperature)


def masked_logps(
    hidden: torch.Tensor,
    lm_head: nn.Module,
    targets: torch.Tensor,
    completion_mask: torch.Tensor | None,
    chunk_size: int,
    with_entropy: bool,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``selective_logps`` of hidden [N, C, H] -> targets [N, C] on the positions ``completion_mask`` [N, C] keeps
    (all when None); the others hold 0."""
    if completion_mask is None:
        return selective_logps(hidden, lm_head, targets, chunk_size, with_entropy, temperature)
    keep = completion_mask.bool()  # [N, C]
    picked, entropy = selective_logps(
        hidden[keep][None], lm_head, targets[keep][None], chunk_size, with_entropy, temperature
    )  # [1, M] for the M kept positions
    logps = hidden.new_zeros(keep.shape, dtype=picked.dtype).masked_scatter(keep, picked[0])  # [N, C]
    if entropy is not None:
        entropy = torch.zeros_like(logps).masked_scatter(keep, entropy[0])
    return logps, entropy


def supports_grouped_forward(model: nn.Module) -> bool:
    """Whether ``grouped_completion_logps`` equals a plain forward for the model's family (image features only
    replace placeholder embeddings, M-RoPE positions from ``get_rope_index``: Qwen2-VL, Qwen2.5-VL). Others use
    ``completion_logps``; ``models.families`` says why."""
    return family_of(model).grouped_forward


def _checkpointing(module: nn.Module) -> bool:
    """transformers' gradient checkpointing, or torch's activation-checkpoint wrappers (``checkpoint_wrapper``): a
    recomputed layer would append its keys to a shared cache twice."""
    return any(
        getattr(m, "gradient_checkpointing", False) or type(m).__name__ == "CheckpointWrapper" for m in module.modules()
    )


def _prompt_states(
    backbone: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    pixel_values: torch.Tensor | None,
    image_grid_thw: torch.Tensor | None,
    mm_token_type_ids: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The U prompts' input embeddings [U, P, H], image features in place of the image placeholder tokens (the
    vision tower once per prompt), and their M-RoPE positions [3, U, P]."""
    prompt_embeds = backbone.get_input_embeddings()(prompt_ids)  # [U, P, H]
    if pixel_values is None:
        return prompt_embeds, (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)[None].expand(3, -1, -1)
    features = backbone.get_image_features(pixel_values, image_grid_thw, return_dict=True).pooler_output
    image_embeds = torch.cat(features).to(prompt_embeds.dtype)  # [image tokens of the U prompts, H]
    is_image = (prompt_ids == backbone.config.image_token_id)[..., None]  # [U, P, 1]
    prompt_embeds = prompt_embeds.masked_scatter(is_image, image_embeds)
    prompt_pos, _ = backbone.get_rope_index(prompt_ids, mm_token_type_ids, image_grid_thw, attention_mask=prompt_mask)
    return prompt_embeds, prompt_pos


def _completion_hidden(
    lm: nn.Module,
    prompts: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    completions: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    prompt_index: torch.Tensor,
    shared_prefix: bool,
) -> torch.Tensor:
    """The language model's states [N, C, H] that predict each completion token (position t predicts token t), from
    ``prompts`` = (embeddings [U, P, H], positions [3, U, P], mask [U, P]) and ``completions`` = (embeddings
    [N, C, H], positions [3, N, C], attention [N, C]); ``prompt_index`` [N] is each completion's prompt. With
    ``shared_prefix`` (and no checkpointing), each prompt runs once and its keys and values serve its completions."""
    prompt_embeds, prompt_pos, prompt_mask = prompts
    completion_embeds, completion_pos, completion_attention = completions
    c = completion_embeds.shape[1]
    attention = torch.cat([prompt_mask[prompt_index], completion_attention], 1)  # [N, P + C]
    if shared_prefix and not _checkpointing(lm):
        out = lm(inputs_embeds=prompt_embeds, attention_mask=prompt_mask, position_ids=prompt_pos, use_cache=True)
        cache = out.past_key_values
        cache.reorder_cache(prompt_index)  # every completion's own view of its prompt's keys and values
        tail = lm(
            inputs_embeds=completion_embeds,
            attention_mask=attention,
            position_ids=completion_pos,
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state  # [N, C, H]
        first = out.last_hidden_state[prompt_index, -1:]  # [N, 1, H]: the prompt's last state predicts token 0
    else:
        embeds = torch.cat([prompt_embeds[prompt_index], completion_embeds], 1)  # [N, P + C, H]
        pos = torch.cat([prompt_pos[:, prompt_index], completion_pos], 2)  # [3, N, P + C]
        hidden_all = lm(inputs_embeds=embeds, attention_mask=attention, position_ids=pos, use_cache=False)
        first, tail = hidden_all.last_hidden_state[:, -c - 1 : -c], hidden_all.last_hidden_state[:, -c:]
    return torch.cat([first, tail[:, :-1]], 1)  # [N, C, H]


def grouped_completion_logps(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_attention: torch.Tensor,
    prompt_index: torch.Tensor,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    mm_token_type_ids: torch.Tensor | None = None,
    chunk_size: int = 1024,
    with_entropy: bool = True,
    temperature: float = 1.0,
    completion_mask: torch.Tensor | None = None,
    shared_prefix: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``completion_logps`` for rows that share prompts: each distinct prompt's images go through the vision tower
    once, and (``shared_prefix``) its tokens through the language model once, their keys and values reused by every
    completion of the prompt.

    prompt_ids, prompt_mask: [U, P] the U distinct prompts, left-padded. completion_ids, completion_attention: [N, C];
    prompt_index: [N] which prompt each completion continues. pixel_values / image_grid_thw / mm_token_type_ids [U, P]:
    the processor's outputs for the U prompts. Returns logps [N, C] and entropy [N, C] as ``completion_logps`` does
    (same values up to float rounding: attention over the same keys, the same M-RoPE positions).

    Gradients reach the shared prompt states through every completion, as in the one-row-per-completion forward. The
    shared prefix needs the language model's key/value cache, which transformers turns off under gradient
    checkpointing (and which activation-checkpoint wrappers would fill twice); the forward then runs prompt and
    completion together per row (the vision tower still once per prompt).
    """
    backbone, lm_head = backbone_and_head(model)
    prompt_embeds, prompt_pos = _prompt_states(
        backbone, prompt_ids, prompt_mask, pixel_values, image_grid_thw, mm_token_type_ids
    )  # [U, P, H], [3, U, P]
    steps = torch.arange(completion_ids.shape[1], device=completion_ids.device)  # [C]
    completion_pos = (prompt_pos.amax(dim=(0, 2))[prompt_index, None] + 1 + steps)[None].expand(3, -1, -1)  # [3, N, C]
    hidden = _completion_hidden(
        backbone.language_model,
        (prompt_embeds, prompt_pos, prompt_mask),
        (backbone.get_input_embeddings()(completion_ids), completion_pos, completion_attention),
        prompt_index,
        shared_prefix,
    )  # [N, C, H]
    return masked_logps(hidden, lm_head, completion_ids, completion_mask, chunk_size, with_entropy, temperature)
