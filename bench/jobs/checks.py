"""Checks of a generation run's settings that the typed schema cannot express, made before the run writes anything.

A setting the sampler refused only after sampling.json was written would turn the corrected rerun into the same
folder into a "resume under other settings", which is refused. So every setting that reaches the sampler is
checked here first, each message naming its config key and what to do.
"""

from __future__ import annotations

from typing import Any, Sequence

from bench.core.errors import BenchError
from muse.errors import MuseInputError
from muse.sampling import TOKEN_ORDERS, check_choice_temperature, schedule_power, to_guidance_t

# Model settings only Muse's MaskGIT sampler has (bench.core.config.ModelConfig): another family refuses them.
MASKGIT_SETTINGS = ("choice_temperature", "schedule", "token_order")


def check_guidance(value: float | None, key: str) -> None:
    """Refuse a guidance scale that is not the CFG scale g >= 1 (muse.sampling.to_guidance_t, the convention's
    one definition); None (the model's own) passes."""
    if value is None:
        return
    try:
        to_guidance_t(value, key)
    except MuseInputError as err:
        raise BenchError(f"{err} Or set {key}=null for the model's own.") from None


def _check_model(model_cfg: Any, key: str, resolutions: Sequence[int]) -> None:
    supported = list(model_cfg.resolution)
    if not supported:
        raise BenchError(f"{key}.resolution is empty: list the resolutions model {model_cfg.name} generates at.")
    native = model_cfg.get("native_resolutions")
    if native is not None and (not native or set(native) - set(supported)):
        raise BenchError(f"{key}.native_resolutions={list(native)} must be a non-empty subset of {key}.resolution="
                         f"{supported}: the resolutions the model was trained at, among those it can be asked for.")
    unsupported = [r for r in resolutions if r not in supported]
    if unsupported:
        raise BenchError(
            f"Model {model_cfg.name} generates at {supported} only, not at {unsupported}: set resolutions "
            f"to a subset of {supported} (e.g. resolutions=[{supported[0]}]), or pick another model."
        )
    check_decoding_settings(model_cfg, key)


def check_decoding_settings(model_cfg: Any, key: str = "model") -> None:
    """Refuse a decoding override of the model config (steps, guidance_scale, choice_temperature, schedule) that
    the sampler would refuse; BenchError naming {key}.<setting>. None (the model's own) passes."""
    steps = model_cfg.get("steps")
    if steps is not None and steps < 1:
        raise BenchError(f"{key}.steps={steps}: decoding needs at least 1 step; set {key}.steps=N (N >= 1), or "
                         f"null for the model's own.")
    check_guidance(model_cfg.get("guidance_scale"), f"{key}.guidance_scale")
    check_maskgit_settings(model_cfg, key)


def check_maskgit_settings(model_cfg: Any, key: str = "model") -> None:
    """Refuse a choice_temperature, schedule or token_order override that the sampler would refuse, or that a
    model of another family than muse would silently ignore; BenchError naming {key}.<setting> and the valid
    values."""
    family = str(model_cfg.get("family", "muse"))
    for name in MASKGIT_SETTINGS:
        if model_cfg.get(name) is not None and family != "muse":
            raise BenchError(f"{key}.{name}={model_cfg.get(name)!r} is a setting of Muse's MaskGIT sampler; "
                             f"{key}.family={family} has none: set {key}.{name}=null.")
    temperature = model_cfg.get("choice_temperature")
    if temperature is not None:
        try:
            check_choice_temperature(temperature, f"{key}.choice_temperature")
        except MuseInputError as err:
            raise BenchError(f"{err} Or set {key}.choice_temperature=null for the model's own.") from None
    schedule = model_cfg.get("schedule")
    if schedule is not None:
        try:
            schedule_power(schedule)
        except MuseInputError:
            raise BenchError(f"{key}.schedule={schedule!r} is not a masking schedule: use one of cosine, linear, "
                             "arccos or powP with P > 0 (e.g. pow2, pow0.5), or null for the model's own.") from None
    order = model_cfg.get("token_order")
    if order is not None and order not in TOKEN_ORDERS:
        raise BenchError(f"{key}.token_order={order!r} is not a token order: use one of {', '.join(TOKEN_ORDERS)}, "
                         "or null for the model's own.")


def check_generate_settings(cfg: Any, models: Sequence[Any]) -> None:
    """Check every setting of a generation run that reaches the sampler: seed, batch_size, resolutions,
    eval.samples_per_prompt, eval.resolution and, for the run's model and eval.compare_to's, steps, guidance
    and resolutions. Raises BenchError naming the config key; writes nothing."""
    if cfg.seed < 0:
        raise BenchError(f"seed={cfg.seed}: sampling seeds are non-negative integers; set seed=N with N >= 0.")
    if cfg.batch_size < 1:
        raise BenchError(f"batch_size must be at least 1, got {cfg.batch_size}.")
    resolutions = list(cfg.resolutions)
    if not resolutions:
        raise BenchError("resolutions is empty: list at least one, e.g. resolutions=[256].")
    if len(set(resolutions)) < len(resolutions):
        raise BenchError(f"resolutions={resolutions} lists a resolution twice: list each once.")
    if cfg.eval.samples_per_prompt < 1:
        raise BenchError(f"eval.samples_per_prompt must be at least 1, got {cfg.eval.samples_per_prompt}.")
    if cfg.eval.resolution is not None and cfg.eval.resolution not in resolutions:
        raise BenchError(f"eval.resolution={cfg.eval.resolution} is not one of resolutions={resolutions}.")
    for i, model_cfg in enumerate(models):
        # The compare_to model's settings come from its preset file, which is what the user would edit.
        _check_model(model_cfg, "model" if i == 0 else f"conf/model/{cfg.eval.compare_to}.yaml: model", resolutions)
