"""Latency PROXIES for the rows of the paper's Table 3 that have no public weights: Parti-3B (parti.py) and
Imagen (imagen.py), with the few helpers both use (shared.py).

Neither model was released, so neither can be reproduced. What is built here is the same *shape of work*
(layer counts, widths, token counts, step counts, guidance as one batched forward of 2B) with random
weights, for timing only. Every row these produce is named "parti-3b-proxy" or "imagen-proxy": it is never
the real model, and its images are noise. Shape choices are ours where the papers are silent or where we
could not check them offline; each is stated in its module's docstring.

Profiles: "full" (the shapes stated in each module), "scaled" (every width / 16, with the same layers, heads,
token and pixel counts and steps; UNet and VQGAN norm groups 8), "tiny" (for tests: a few hundred thousand
parameters, the same token grid and resolutions).
"""

PARTI_NAME = "parti-3b-proxy"
IMAGEN_NAME = "imagen-proxy"
# Every model name that is a proxy (the report labels their rows from this list, not from the names' spelling).
PROXY_NAMES = (PARTI_NAME, IMAGEN_NAME)
