"""What a job can run: the image generators of the generate job (generators.py: Muse, aMUSEd, Stable Diffusion),
the runners the latency job times (runners.py), Stable Diffusion v1.4 (diffusion.py), the Parti and Imagen
latency proxies (proxies.py), timing profiles (profiles.py) and FLOP counting (flops.py)."""
