"""vLLM's CPU LoRA kernels, computed as one matrix product per adapter instead of one per token.

vLLM's PyTorch-native punica ops (vllm/lora/ops/torch_ops, what its CPU backend runs) gather a copy
of the LoRA matrix for EVERY token (`weights[indices]`) and multiply token by token (an einsum over
that copy): on 2 cores that is 240 ms for one rank-16 projection (896 -> 4864) of a 2048-token prefill, against
13 ms as one matmul (8192 tokens, 896 -> 9728: 1981 ms and +2.85 GB against 101 ms and +0.17 GB). It held the
small experiment's RL evaluation (a PPO adapter, 32 long prompts per call) to 17 tokens/s; with these
ops the same call ran at 51.5 (docs/performance.md; benchmarks/bench_vllm_lora.py). They compute the same
values (the same indexing, dtypes, padding and in-place updates) grouped by adapter slot; `install()`
puts them where PunicaWrapperCPU looks them up. GPU backends use their own kernels and are untouched.
"""

from __future__ import annotations

import torch

OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")


def lora_products(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
                  dtype: torch.dtype) -> torch.Tensor:
    """Row t: inputs[t] @ weights[indices[t]].T in `dtype`, one matmul per distinct slot (an index
    counts from the end when negative, as tensor indexing does). weights: (slots, [1,] out, in)."""
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    inputs = inputs.to(dtype)
    slots = torch.unique(indices).tolist()
    if len(slots) == 1:
        return inputs @ weights[slots[0]].to(dtype).T
    out = inputs.new_empty(inputs.shape[0], weights.shape[1])
    for slot in slots:
        rows = indices == slot
        out[rows] = inputs[rows] @ weights[slot].to(dtype).T
    return out


def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0):
    outputs = lora_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True):
    outputs = lora_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    common = min(outputs.shape[1], output_tensor.shape[1])  # adapter and model may pad differently
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset: int,
                      slice_size: int, add_inputs: bool = True):
    outputs = lora_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset: slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset: slice_offset + slice_size] = outputs


def _modules():
    """The modules that resolve the op names at call time: the CPU wrapper (decode) and vLLM's own
    torch ops module (its sgmv_* prefill ops call bgmv_* from there)."""
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    return punica_cpu, lora_ops


def vllm_op(name: str):
    """vLLM's own op `name`, also after install() replaced it."""
    _, torch_ops = _modules()
    if not _ORIGINAL:
        _ORIGINAL.update((op, getattr(torch_ops, op)) for op in OPS)
    return _ORIGINAL[name]


def install(batched: bool = True) -> None:
    """Make vLLM's CPU LoRA path use these ops (batched=True) or vLLM's own (False, for a benchmark)."""
    chosen = {name: globals()[name] if batched else vllm_op(name) for name in OPS}
    for module in _modules():
        for name in OPS:
            setattr(module, name, chosen[name])


_ORIGINAL: dict[str, object] = {}  # vLLM's ops, kept at the first install()
