"""Cost of mask capture on the real Stable Diffusion 1.5 architecture (random weights, nothing downloaded).

Times, interleaved and repeated in one process: the stock ``StableDiffusionPipeline``, the Free-ATM
pipeline, and a store-everything baseline in the style of prompt-to-prompt and DAAM (explicit softmax on
every attention layer, every step's cross-attention probabilities kept). Peak memory is the working memory
of a call above what the process held before it: CUDA's allocator peak on a GPU; on the CPU, the peak
resident set sampled every millisecond (glibc is told to return large blocks at once, so the resident set
follows the tensors).

    python benchmarks/capture_overhead.py            # 256 px on a CPU, 512 px on a GPU
    python benchmarks/capture_overhead.py --size 512 --steps 4 --repeats 5

Prints JSON, then ``capture_time_ratio=<x> capture_mem_ratio=<y> store_all_time_ratio=<z>
mem_growth_per_step_mb=<w>`` (mask capture's budget: time ratio at most 1.05, growth about 0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from contextlib import contextmanager

if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "131072"  # fixed threshold: freed tensors leave the resident set
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402

from free_atm import FreeATMDiffusionPipeline  # noqa: E402
from free_atm.attention import cross_attention_processor_names  # noqa: E402
from free_atm.diffusion.random_components import sd15_components  # noqa: E402

PROMPT, OBJECTS = "a dog with a teddy bear in the park", ["dog", "teddy bear"]


class StoreAllProcessor:
    """Explicit-softmax attention (no SDPA); cross-attention layers append their probabilities to ``store``."""

    def __init__(self, store: list | None):
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        batch = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key, value = attn.head_to_batch_dim(attn.to_k(context)), attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)
        if self.store is not None:
            conditional = probs.view(batch, attn.heads, *probs.shape[1:])[batch // 2 :]
            self.store.append(conditional.detach().clone())
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        return attn.to_out[1](attn.to_out[0](out))


class PeakMemory:
    """Peak working memory of a block, in MB above the memory held when it starts."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb = 0.0

    @staticmethod
    def _resident_bytes() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @contextmanager
    def measure(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            yield
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
            return
        base = self._resident_bytes()
        peak, running = [base], [True]

        def sample():
            while running[0]:
                peak[0] = max(peak[0], self._resident_bytes())
                time.sleep(0.001)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield
        finally:
            running[0] = False
            sampler.join()
            self.peak_mb = (max(peak[0], self._resident_bytes()) - base) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=None, help="image side (default 512 on a GPU, 256 on a CPU)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    size = args.size or (512 if device.type == "cuda" else 256)
    torch.set_grad_enabled(False)

    stock = StableDiffusionPipeline(**sd15_components()).to(device, dtype)
    free_atm = FreeATMDiffusionPipeline.from_pipe(stock)
    for pipe in (stock, free_atm):
        pipe.set_progress_bar_config(disable=True)
    sdpa_processors = stock.unet.attn_processors
    cross_names = set(cross_attention_processor_names(stock.unet))
    store: list[torch.Tensor] = []

    def run(variant: str, steps: int) -> None:
        call = dict(
            num_inference_steps=steps,
            height=size,
            width=size,
            guidance_scale=args.guidance_scale,
            generator=torch.Generator(device).manual_seed(0),
            output_type="np",
        )
        if variant == "free_atm":
            free_atm(PROMPT, objects=OBJECTS, **call)
            return
        if variant == "store_all":
            store.clear()
            stock.unet.set_attn_processor(
                {name: StoreAllProcessor(store if name in cross_names else None) for name in sdpa_processors}
            )
        try:
            stock(PROMPT, **call)
        finally:
            stock.unet.set_attn_processor(dict(sdpa_processors))  # set_attn_processor empties the dict

    def timed(variant: str, steps: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run(variant, steps)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    variants = ("stock", "free_atm", "store_all")
    for variant in variants:  # warm-up
        run(variant, 1)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for repeat in range(args.repeats):
        order = variants if repeat % 2 == 0 else variants[::-1]
        for variant in order:
            times[variant].append(timed(variant, args.steps))

    meter = PeakMemory(device)
    memory: dict[str, dict[int, float]] = {v: {} for v in variants}
    step_counts = (args.steps, 2 * args.steps)
    for steps in step_counts:
        for variant in variants:
            with meter.measure():
                run(variant, steps)
            memory[variant][steps] = meter.peak_mb
            store.clear()

    median = {v: statistics.median(t) for v, t in times.items()}
    growth = {v: (memory[v][step_counts[1]] - memory[v][step_counts[0]]) / args.steps for v in variants}
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "dtype": str(dtype),
        "architecture": "Stable Diffusion 1.5 (UNet, CLIP ViT-L/14 text encoder, SD VAE), random weights",
        "image_size": size,
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "repeats": args.repeats,
        "times_s": times,
        "median_time_s": median,
        "peak_working_memory_mb": memory,
        "mem_growth_per_step_mb": growth,
        "capture_time_ratio": median["free_atm"] / median["stock"],
        "capture_mem_ratio": memory["free_atm"][args.steps] / memory["stock"][args.steps],
        "store_all_time_ratio": median["store_all"] / median["stock"],
        "store_all_mem_ratio": memory["store_all"][args.steps] / memory["stock"][args.steps],
    }
    print(json.dumps(result, indent=2))
    print(
        f"capture_time_ratio={result['capture_time_ratio']:.3f} capture_mem_ratio={result['capture_mem_ratio']:.3f} "
        f"store_all_time_ratio={result['store_all_time_ratio']:.3f} mem_growth_per_step_mb={growth['free_atm']:.2f}"
    )


if __name__ == "__main__":
    main()
