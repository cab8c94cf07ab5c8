"""What a job can run, one module per family of models, each registered here by name and imported only when used.

- generators.py: the ImageGenerator interface of the generate job and `load_generator` (GENERATORS, by
  model.family); runner.py: the Runner interface of the latency job and `build_runner` (RUNNERS, by the names
  of latency.models);
- muse.py: Muse and aMUSEd presets through our pipeline and sampler; amused_diffusers.py: diffusers' own
  AmusedPipeline on the same weights; diffusion.py: Stable Diffusion v1.4 through diffusers;
  proxies/: the labelled Parti-3B and Imagen proxies (parti.py, imagen.py);
- profiles.py: the timing profiles (scaled, tiny) of Muse presets; flops.py: FLOPs counted on the meta device.

Adding a model: a module with a RunnerFactory (bench/models/runner.py) and, for the generate job, a generator
loader; one line in the registry below; a test.
"""

from bench.core.registry import Registry
from muse.presets import PRESET_NAMES

# "<amused preset>+diffusers": diffusers' AmusedPipeline on the very same weights as "<amused preset>".
DIFFUSERS_SUFFIX = "+diffusers"

# latency.models: model name -> its RunnerFactory.
RUNNERS = Registry("latency.models", {
    **{name: "bench.models.muse:muse_runner" for name in PRESET_NAMES},
    **{name + DIFFUSERS_SUFFIX: "bench.models.amused_diffusers:amused_diffusers_runner"
       for name in PRESET_NAMES if name.startswith("amused")},
    "sd-v1-4": "bench.models.diffusion:sd_runner",
    "parti-3b-proxy": "bench.models.proxies.parti:parti_runner",
    "imagen-proxy": "bench.models.proxies.imagen:imagen_runner",
})

# model.family: family -> (model config, device) -> ImageGenerator.
GENERATORS = Registry("model.family", {
    "muse": "bench.models.muse:muse_generator",
    "stable-diffusion": "bench.models.diffusion:sd_generator",
})
