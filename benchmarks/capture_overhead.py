"""Cost of mask capture against the stock pipelines, on the real architectures (random weights, nothing
downloaded): Stable Diffusion 1.5, SDXL, and SD3 (3.5 Medium style) and FLUX.1-dev at full width with fewer
transformer blocks and one T5-XXL layer, so that they fit a small machine (capture's cost is per layer, so
depth does not change its share; the JSON gives each family's text-encoder-free denoiser share too).

Per family: the stock pipeline and the Free-ATM pipeline (and, for SD 1.5, a store-everything baseline
in the style of prompt-to-prompt and DAAM: explicit softmax on every attention layer, every step's
cross-attention probabilities kept; for the transformers, ConceptAttention's output-space capture), timed
interleaved and repeated in this process with the allocator as users have it. Peak memory is the working
memory of a call above what the process held before it: CUDA's allocator peak on a GPU; on the CPU, the
peak resident set sampled every millisecond, in a child process where glibc is told to return large
blocks at once (``MALLOC_MMAP_THRESHOLD_``) so that the resident set follows the tensors. That setting is
an instrument, not how anyone runs a pipeline: it makes every large temporary a fresh, page-faulting
mapping, so times are never taken under it. Memory growth per step compares calls of ``steps`` and
``2 * steps``.

    python benchmarks/capture_overhead.py                    # 256 px on a CPU, 512 px on a GPU
    python benchmarks/capture_overhead.py --size 512         # every family at 512 px
    python benchmarks/capture_overhead.py --size 512 1024    # a summary line per size
    python benchmarks/capture_overhead.py --families sd15 --size 512 --steps 4 --repeats 7
    python benchmarks/capture_overhead.py --families sd15 sdxl --size 512 --no-baselines   # capture only
    python benchmarks/capture_overhead.py --families sd3 flux --size 512 --features refined absent

Every family also times the capture with self-attention refinement (``refined``; SD3 and Flux: the
image-to-image part of the joint softmax), with 10 iterations of pixel refinement of the masks
(``pixels``), with the maps of every layer and step kept (``kept``,
``CaptureConfig(keep="layers_and_steps")``), and with two words the prompt lacks (``absent``; SD3 and Flux:
concept tokens through every block).

Prints JSON, then per size ``size=<px> capture_time_ratio=<sd15> sdxl_time_ratio=<x> sd3_time_ratio=<y>
flux_time_ratio=<z> sd3_denoiser_time_ratio=<u> flux_denoiser_time_ratio=<v> refine_time_ratio=<sd15
refined> pixel_time_ratio=<sd15 pixels> sd3_refine_denoiser_time_ratio=<r> sd3_absent_denoiser_time_ratio=<a>
(and Flux's) <family>_kept_time_ratio=<k> ... <family>_absent_time_ratio=<a> ... mem_growth_per_step_mb=<w>``
(the largest growth of the capture, refined or with absent words or not, over the families; features left
out by ``--features`` are left out of the line; budget: every capture time ratio at most 1.02, refinement
at most 1.10, kept maps and two absent words at most 1.05, growth about 0).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers import (
    FluxPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from random_pipelines import flux_components, sd3_components, sd15_components, sdxl_components

from free_atm import (
    FreeATMDiffusionPipeline,
    FreeATMFluxPipeline,
    FreeATMStableDiffusion3Pipeline,
    FreeATMStableDiffusionXLPipeline,
)
from free_atm.attention import cross_attention_processor_names

PROMPT, OBJECTS = "a dog with a teddy bear in the park", ["dog", "teddy bear"]
#: two words the prompt lacks, for ``allow_absent_objects`` (``absent``)
ABSENT = ["cat", "bicycle"]
#: the mask features timed beside the plain capture: refinement, pixel refinement, kept maps, absent words
FEATURES = ("refined", "pixels", "kept", "absent")


@dataclass
class Family:
    architecture: str
    stock: type
    free_atm: type
    components: Callable[[], dict]
    guidance_scale: float = 7.0


FAMILIES = {
    "sd15": Family(
        "Stable Diffusion 1.5 (UNet, CLIP ViT-L/14, SD VAE)",
        StableDiffusionPipeline,
        FreeATMDiffusionPipeline,
        sd15_components,
    ),
    "sdxl": Family(
        "SDXL base (UNet, CLIP ViT-L + bigG, VAE)",
        StableDiffusionXLPipeline,
        FreeATMStableDiffusionXLPipeline,
        sdxl_components,
    ),
    "sd3": Family(
        "SD 3.5 Medium style MM-DiT at full width (1536, q/k RMS norm), 4 of 24 blocks; CLIP-L, CLIP-G, 1 T5-XXL "
        "layer; 16-channel VAE; T5 length 256",
        StableDiffusion3Pipeline,
        FreeATMStableDiffusion3Pipeline,
        lambda: sd3_components(num_layers=4, t5_layers=1),
    ),
    "flux": Family(
        "FLUX.1-dev at full width (3072), 1 of 19 double- and 2 of 38 single-stream blocks; CLIP-L, 1 T5-XXL "
        "layer; 16-channel VAE; T5 length 512",
        FluxPipeline,
        FreeATMFluxPipeline,
        lambda: flux_components(num_layers=1, num_single_layers=2, t5_layers=1),
        guidance_scale=3.5,
    ),
}


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


class DenoiserClock:
    """Seconds spent inside the denoiser's forward calls (its share of a pipeline call)."""

    def __init__(self, denoiser: torch.nn.Module, device: torch.device):
        self.seconds, self.device = 0.0, device
        denoiser.register_forward_pre_hook(self._start)
        denoiser.register_forward_hook(self._stop)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _start(self, *args):
        self._sync()
        self.started = time.perf_counter()

    def _stop(self, *args):
        self._sync()
        self.seconds += time.perf_counter() - self.started


class FamilyBench:
    """A family's stock and Free-ATM pipelines and the variants timed and measured against each other."""

    def __init__(self, name: str, args, device: torch.device, dtype: torch.dtype, size: int):
        self.family, self.args, self.device, self.size = FAMILIES[name], args, device, size
        self.stock = self.family.stock(**self.family.components()).to(device, dtype)
        self.free_atm = self.family.free_atm.from_pipe(self.stock)
        for pipe in (self.stock, self.free_atm):
            pipe.set_progress_bar_config(disable=True)
        self.denoiser = self.free_atm.denoiser
        self.clock = DenoiserClock(self.denoiser, device)
        # UNets: a store-everything baseline beside (SD 1.5); joint attention: ConceptAttention's output space
        self.variants = ("stock", "free_atm", "store_all") if name == "sd15" else ("stock", "free_atm")
        if hasattr(self.stock, "transformer"):
            self.variants = ("stock", "free_atm", "concept")
        if args.no_baselines:
            self.variants = ("stock", "free_atm")
        self.variants += tuple(args.features)  # the mask features timed, on every family
        self.stock_processors = self.denoiser.attn_processors
        self.cross_names = set(cross_attention_processor_names(self.denoiser)) if name == "sd15" else set()
        self.store: list[torch.Tensor] = []

    def run(self, variant: str, steps: int) -> None:
        call = dict(
            num_inference_steps=steps,
            height=self.size,
            width=self.size,
            guidance_scale=self.family.guidance_scale,
            generator=torch.Generator(self.device).manual_seed(0),
            output_type="np",
        )
        if variant in ("free_atm", "concept", "refined", "pixels", "kept", "absent"):
            settings = {
                "concept": {"method": "concept"},
                "refined": {"refinement": "self_attention"},
                "pixels": {"pixel_refinement": 10},
                "kept": {"keep": "layers_and_steps"},
            }
            if variant == "absent":
                call.update(objects=[*OBJECTS, *ABSENT], allow_absent_objects=True)
            else:
                call["objects"] = OBJECTS
            self.free_atm(PROMPT, capture_config=settings.get(variant, {}), **call)
            return
        if variant == "store_all":
            self.store.clear()
            self.denoiser.set_attn_processor(
                {n: StoreAllProcessor(self.store if n in self.cross_names else None) for n in self.stock_processors}
            )
        try:
            self.stock(PROMPT, **call)
        finally:
            self.denoiser.set_attn_processor(dict(self.stock_processors))  # set_attn_processor empties the dict

    def _timed(self, variant: str) -> tuple[float, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.clock.seconds, start = 0.0, time.perf_counter()
        self.run(variant, self.args.steps)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, self.clock.seconds

    def times(self) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
        """Whole-call and denoiser-only seconds per variant, interleaved in alternating order after a warm-up."""
        for variant in self.variants:
            self.run(variant, 1)
        times: dict[str, list[float]] = {v: [] for v in self.variants}
        inside: dict[str, list[float]] = {v: [] for v in self.variants}
        for repeat in range(self.args.repeats):
            for variant in self.variants if repeat % 2 == 0 else self.variants[::-1]:
                total, denoising = self._timed(variant)
                times[variant].append(total)
                inside[variant].append(denoising)
        return times, inside

    def memory(self) -> dict[str, dict[int, float]]:
        """Peak working memory (MB) per variant at ``steps`` and ``2 * steps``, after a warm-up call of each
        (the first call of a process allocates what every later call reuses)."""
        for variant in self.variants:
            self.run(variant, 1)
        meter = PeakMemory(self.device)
        memory: dict[str, dict[int, float]] = {v: {} for v in self.variants}
        for steps in (self.args.steps, 2 * self.args.steps):
            for variant in self.variants:
                with meter.measure():
                    self.run(variant, steps)
                memory[variant][steps] = meter.peak_mb
                self.store.clear()
        return memory


def memory_in_child(name: str, args, size: int) -> dict[str, dict[int, float]]:
    """The family's memory figures from a fresh process whose glibc returns large blocks at once."""
    command = [sys.executable, __file__, "--memory-of", name, "--steps", str(args.steps), "--size", str(size)]
    command += ["--no-baselines"] if args.no_baselines else []
    command += ["--features", *args.features]
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}  # freed tensors leave the resident set
    done = subprocess.run(command, env=environment, check=True, capture_output=True, text=True)
    return {v: {int(s): mb for s, mb in by_steps.items()} for v, by_steps in json.loads(done.stdout).items()}


def summarise(bench: FamilyBench, times, inside, memory) -> dict:
    steps = bench.args.steps
    median = {v: statistics.median(t) for v, t in times.items()}
    median_inside = {v: statistics.median(t) for v, t in inside.items()}
    growth = {v: (memory[v][2 * steps] - memory[v][steps]) / steps for v in bench.variants}
    result = {
        "architecture": bench.family.architecture + ", random weights",
        "guidance_scale": bench.family.guidance_scale,
        "times_s": times,
        "median_time_s": median,
        "median_denoiser_time_s": median_inside,
        "denoiser_share": median_inside["stock"] / median["stock"],
        "peak_working_memory_mb": memory,
        "mem_growth_per_step_mb": growth,
        "time_ratio": median["free_atm"] / median["stock"],
        "denoiser_time_ratio": median_inside["free_atm"] / median_inside["stock"],
        "mem_ratio": memory["free_atm"][steps] / memory["stock"][steps],
    }
    for variant in ("concept", "store_all", "refined", "pixels", "kept", "absent"):
        if variant in bench.variants:
            result[f"{variant}_time_ratio"] = median[variant] / median["stock"]
            result[f"{variant}_denoiser_time_ratio"] = median_inside[variant] / median_inside["stock"]
            result[f"{variant}_mem_ratio"] = memory[variant][steps] / memory["stock"][steps]
    return result


def measure_size(args, device: torch.device, dtype: torch.dtype, size: int) -> dict:
    """Every chosen family at one image size; a line per family on stderr as it finishes."""
    families = {}
    for name in args.families:
        # the child runs before this process builds the family: two copies of SDXL do not fit 24 GB
        memory = memory_in_child(name, args, size) if device.type == "cpu" else None
        bench = FamilyBench(name, args, device, dtype, size)
        times, inside = bench.times()
        families[name] = summarise(bench, times, inside, memory or bench.memory())
        del bench
        gc.collect()  # the family's pipelines go before the next family's are built
        done = families[name]
        figures = ("time_ratio", "denoiser_time_ratio", "mem_ratio", "concept_time_ratio", "store_all_time_ratio",
                   "refined_time_ratio", "refined_denoiser_time_ratio", "pixels_time_ratio", "kept_time_ratio",
                   "absent_time_ratio", "absent_denoiser_time_ratio")  # fmt: skip
        line = " ".join(f"{key}={done[key]:.3f}" for key in figures if key in done)
        print(f"{size} px {name}: {line} mem_growth_per_step_mb={done['mem_growth_per_step_mb']['free_atm']:.2f}",
              file=sys.stderr, flush=True)  # fmt: skip
    return families


def summary_line(size: int, families: dict) -> str:
    """``size=<px> capture_time_ratio=<sd15> ... sd3_denoiser_time_ratio=<y> ... mem_growth_per_step_mb=<w>``."""
    labels = {"sd15": "capture", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux"}
    whole = [f"{labels[name]}_time_ratio={family['time_ratio']:.3f}" for name, family in families.items()]
    inside = [
        f"{labels[name]}_denoiser_time_ratio={family['denoiser_time_ratio']:.3f}"
        for name, family in families.items()
        if name in ("sd3", "flux")
    ]
    sd15 = families.get("sd15", {})
    refine = [
        f"{label}={sd15[key]:.3f}"
        for label, key in (("refine_time_ratio", "refined_time_ratio"), ("pixel_time_ratio", "pixels_time_ratio"))
        if key in sd15
    ]
    joint = [  # transformers: the denoiser's own time (their text encoders dwarf it at small sizes)
        f"{labels[name]}_{feature}_denoiser_time_ratio={family[f'{variant}_denoiser_time_ratio']:.3f}"
        for name, family in families.items()
        if name in ("sd3", "flux")
        for feature, variant in (("refine", "refined"), ("absent", "absent"))
        if f"{variant}_denoiser_time_ratio" in family
    ]
    per_family = [
        f"{labels[name]}_{variant}_time_ratio={family[f'{variant}_time_ratio']:.3f}"
        for name, family in families.items()
        for variant in ("kept", "absent")
        if f"{variant}_time_ratio" in family
    ]
    growth = max(
        family["mem_growth_per_step_mb"][variant]
        for family in families.values()
        for variant in ("free_atm", "refined", "absent")
        if variant in family["mem_growth_per_step_mb"]
    )
    figures = [*whole, *inside, *refine, *joint, *per_family]
    return " ".join([f"size={size}", *figures, f"mem_growth_per_step_mb={growth:.2f}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--size", type=int, nargs="+", default=None, help="image sides (default 512 on a GPU, 256 on a CPU)"
    )
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument(
        "--no-baselines", action="store_true", help="stock and Free-ATM only (no store-everything, no concept)"
    )
    parser.add_argument(
        "--features", nargs="*", choices=FEATURES, default=list(FEATURES), help="mask features timed (default: all)"
    )
    parser.add_argument("--memory-of", choices=list(FAMILIES), help=argparse.SUPPRESS)  # the memory child
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    sizes = args.size or [512 if device.type == "cuda" else 256]
    if any(size <= 0 or size % 16 for size in sizes):
        parser.error(f"--size must be positive multiples of 16, got {sizes}")
    torch.set_grad_enabled(False)
    if args.memory_of:
        print(json.dumps(FamilyBench(args.memory_of, args, device, dtype, sizes[0]).memory()))
        return
    by_size = {size: measure_size(args, device, dtype, size) for size in sizes}
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "dtype": str(dtype),
        "steps": args.steps,
        "repeats": args.repeats,
        "memory": "CUDA allocator peak" if device.type == "cuda" else "resident set, MALLOC_MMAP_THRESHOLD_=131072",
        "sizes": {str(size): families for size, families in by_size.items()},
    }
    print(json.dumps(result, indent=2))
    for size, families in by_size.items():
        print(summary_line(size, families))


if __name__ == "__main__":
    main()
