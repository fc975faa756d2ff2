"""Sampling settings saved with a model: guidance, scheduler and its timestep spacing, steps, guidance rescale.

A model folder's ``model_index.json`` may carry ``sampling_config`` beside ``capture_config``; the pipeline
then samples with it unless a call gives the argument (``pipe(..., guidance_scale=9)`` wins) or the user
replaces ``pipe.scheduler``. A folder without it samples as its parent pipeline always did.

Pitfall: a scheduler class of another family does not fail, it draws noise. DDIM, DPM-Solver++ and Euler
read a noise (or velocity) prediction; SD3 and Flux predict a flow, and their scheduler cannot be swapped
for one of these, so a ``scheduler`` or ``timestep_spacing`` on a flow-matching pipeline is refused.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

#: the schedulers a saved setting may name: diffusers' class, and the keyword arguments that make it what
#: its name says (classes by name: reading settings imports no scheduler)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "dpm_solver_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": ("EulerDiscreteScheduler", {}),
}
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
#: the call arguments a sampling setting supplies, by field
CALL_ARGUMENTS = ("guidance_scale", "num_inference_steps", "guidance_rescale")


@dataclass(frozen=True)
class SamplingConfig:
    """How a model samples when a call does not say. Every field ``None`` keeps the parent's behaviour.

    Args:
        guidance_scale: classifier-free guidance scale (1 or less: none).
        num_inference_steps: denoising steps.
        scheduler: ``"ddim"``, ``"dpm_solver_2m"`` (DPM-Solver++ 2M) or ``"euler"``, built from the saved
            scheduler's own config (betas, prediction type); ``None`` keeps the folder's scheduler.
        timestep_spacing: ``"leading"``, ``"trailing"`` or ``"linspace"`` (where the steps fall in the
            training schedule; trailing reaches the noisiest step, leading stops short of it).
        guidance_rescale: rescales guided predictions toward the conditional one's deviation (Lin et al.,
            2023; pipelines whose call takes it).
    """

    guidance_scale: float | None = None
    num_inference_steps: int | None = None
    scheduler: str | None = None
    timestep_spacing: str | None = None
    guidance_rescale: float | None = None

    def __post_init__(self) -> None:
        scale = self.guidance_scale
        if scale is not None and (isinstance(scale, bool) or not math.isfinite(scale) or not 0 <= scale <= 100):
            raise ValueError(f"guidance_scale must lie in [0, 100], got {scale!r}")
        steps = self.num_inference_steps
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000):
            raise ValueError(f"num_inference_steps must be an int in [1, 1000], got {steps!r}")
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {list(SCHEDULERS)}, got {self.scheduler!r}")
        if self.timestep_spacing is not None and self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {self.timestep_spacing!r}")
        rescale = self.guidance_rescale
        if rescale is not None and (not math.isfinite(rescale) or not 0 <= rescale <= 1):
            raise ValueError(f"guidance_rescale must lie in [0, 1], got {rescale!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> SamplingConfig:
        """Build from a dict; unknown keys are an error naming them."""
        values = dict(values or {})
        _check_keys(values)
        return cls(**values)

    def updated(self, overrides: SamplingConfig | dict[str, Any] | None) -> SamplingConfig:
        """This config with the non-``None`` values of ``overrides`` applied."""
        if overrides is None:
            return self
        if isinstance(overrides, SamplingConfig):
            overrides = overrides.to_dict()
        _check_keys(overrides)
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def call_defaults(self, accepted: set[str]) -> dict[str, Any]:
        """The call arguments this config sets, among the ``accepted`` parameter names of a pipeline call."""
        return {k: getattr(self, k) for k in CALL_ARGUMENTS if getattr(self, k) is not None and k in accepted}

    def scheduler_for(self, scheduler):
        """``scheduler`` rebuilt as this config's scheduler and spacing (the same object when neither is set).

        Raises ``ValueError`` for a flow-matching scheduler (SD3, Flux), which these cannot replace."""
        if self.scheduler is None and self.timestep_spacing is None:
            return scheduler
        if "shift" in scheduler.config or type(scheduler).__name__.startswith("FlowMatch"):
            raise ValueError(
                f"sampling settings scheduler={self.scheduler!r}, timestep_spacing={self.timestep_spacing!r} are for "
                f"noise-prediction models; {type(scheduler).__name__} samples a flow and keeps its own schedule"
            )
        import diffusers

        name, extra = SCHEDULERS[self.scheduler] if self.scheduler else (type(scheduler).__name__, {})
        spacing = {"timestep_spacing": self.timestep_spacing} if self.timestep_spacing else {}
        return getattr(diffusers, name).from_config(scheduler.config, **extra, **spacing)


def _check_keys(values: dict[str, Any]) -> None:
    known = [f.name for f in fields(SamplingConfig)]
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown sampling settings {sorted(unknown)}; known: {known}")
