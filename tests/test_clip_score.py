"""CLIP score (bench/metrics/clip_score.py) on CLIP models (bench/metrics/clip_model.py), the torchmetrics cross-check
(bench/testing.py), CMMD (bench/metrics/cmmd.py) and the re-scoring judge.

Everything runs on muse-bench-tiny-clip: random weights, OpenAI's real BPE tokenizer, real photos.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.core.errors import BenchError
from bench.metrics.clip_model import (
    TINY_CLIP_NAME,
    ClipScorer,
    build_clip_scorer,
    open_clip_scorer,
    paired_cosines,
)
from bench.metrics.clip_score import clip_score_metrics
from bench.metrics.cmmd import cmmd, cmmd_metric
from bench.testing import open_clip_to_transformers, transformers_clip_for_torchmetrics

ASSETS = Path(__file__).parent / "assets"
PHOTO = ASSETS / "photo_256.png"
PHOTO_CAPTION = "fireworks over an amusement pier at night"
CC_IMAGES = sorted((ASSETS / "cc_images").glob("*.jpg"))


def _dicts(entries: dict) -> dict:
    """Metric entries (bench.core.results.MetricEntry) in their results.json form."""
    return {name: entry.as_dict() for name, entry in entries.items()}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The tiny CLIP's seeded random weights, saved as open_clip would load a downloaded checkpoint."""
    scorer = open_clip_scorer(TINY_CLIP_NAME, None, seed=0)
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.bin"
    torch.save(scorer.model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def scorer(tiny_checkpoint) -> ClipScorer:
    """The tiny CLIP loaded back through the real `pretrained=<local file>` path."""
    return open_clip_scorer(TINY_CLIP_NAME, str(tiny_checkpoint), batch_size=3)


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    """The 256x256 test photo and a few real photos of other sizes and aspect ratios."""
    images = [Image.open(PHOTO).convert("RGB")]
    images += [Image.open(p).convert("RGB") for p in CC_IMAGES[:4]]
    return images


def test_local_checkpoint_round_trip(tiny_checkpoint, scorer, photos):
    fresh = open_clip_scorer(TINY_CLIP_NAME, None, seed=0)
    other = open_clip_scorer(TINY_CLIP_NAME, None, seed=1)
    loaded = scorer.image_embeddings(photos[:2])
    np.testing.assert_array_equal(loaded, fresh.image_embeddings(photos[:2]))
    assert not np.allclose(loaded, other.image_embeddings(photos[:2]), atol=1e-3)
    assert scorer.protocol["weights"] == "pretrained"
    assert scorer.protocol["checkpoint_sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert fresh.protocol["weights"] == "random" and fresh.protocol["init_seed"] == 0
    assert scorer.protocol["quick_gelu"] is True
    json.dumps(scorer.protocol)  # a protocol goes into results.json as is


def test_safetensors_checkpoint_loads(scorer, tmp_path, photos):
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in scorer.model.state_dict().items()}, str(path))
    again = open_clip_scorer(TINY_CLIP_NAME, str(path))
    np.testing.assert_array_equal(again.image_embeddings(photos[:1]), scorer.image_embeddings(photos[:1]))


def test_cosine_matches_embeddings_by_hand(scorer, photos):
    import open_clip

    cos, truncated = scorer.cosines([photos[0]], [PHOTO_CAPTION])
    with torch.no_grad():
        image = scorer.model.encode_image(scorer.preprocess(photos[0])[None])[0].double()
        text = scorer.model.encode_text(open_clip.tokenize([PHOTO_CAPTION]))[0].double()
    expected = float(image @ text / (image.norm() * text.norm()))
    assert cos.shape == (1,) and truncated == [False]
    assert cos[0] == pytest.approx(expected, abs=1e-6)


def test_embeddings_normalised_batched_and_paths_equal_images(scorer, photos, tmp_path):
    emb = scorer.image_embeddings(photos)  # batch_size 3: two batches
    assert emb.shape == (len(photos), 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([scorer.image_embeddings([im]) for im in photos])
    np.testing.assert_allclose(emb, one_by_one, atol=1e-5)
    path = tmp_path / "photo.png"
    photos[1].save(path)
    np.testing.assert_array_equal(scorer.image_embeddings([path]), scorer.image_embeddings([photos[1]]))


def test_truncation_flagged_and_follows_the_rule(scorer):
    words = [f"word{i}" for i in range(200)]
    long_a = " ".join(words)
    long_b = " ".join(words[:100] + ["completely", "different", "ending"] * 30)
    short = "a red cube on a blue sphere"
    emb, truncated = scorer.text_embeddings([long_a, short, long_b])
    assert truncated == [True, False, True]
    # Both long prompts share their first 100 words, far more than the 75 tokens kept: same embedding.
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-6)
    assert not np.allclose(emb[0], emb[1], atol=1e-3)
    assert scorer.protocol["context_length"] == 77 and "75" in scorer.protocol["truncation"]


def test_exactly_full_context_is_not_truncated(scorer):
    # 75 single-token words + start + end = 77 tokens: fits; one more word does not.
    fits = " ".join(["cat"] * 75)
    assert scorer.text_embeddings([fits, fits + " cat"])[1] == [False, True]


def test_clip_score_metrics_conventions():
    cos = np.array([0.30, -0.10, 0.20, 0.25])
    m = _dicts(clip_score_metrics(cos, truncated=1, protocol={"arch": "x"}, bootstrap=0, seed=0))
    assert m["clip_score"]["value"] == pytest.approx(cos.mean())
    assert m["clip_score_x100"]["value"] == pytest.approx(100 * (0.30 + 0.0 + 0.20 + 0.25) / 4)
    assert m["clip_score"]["stderr"] == pytest.approx(cos.std(ddof=1) / 2)
    x100 = 100 * np.maximum(cos, 0)
    assert m["clip_score_x100"]["stderr"] == pytest.approx(x100.std(ddof=1) / 2)
    proto = m["clip_score_x100"]["protocol"]
    assert proto["n"] == 4 and proto["n_truncated"] == 1 and proto["n_negative"] == 1 and proto["arch"] == "x"
    assert all(e["higher_is_better"] is True for e in m.values())
    json.dumps(m, allow_nan=False)


def test_clip_score_bootstrap_stderr_is_seeded_and_sensible():
    cos = np.random.default_rng(0).normal(0.3, 0.05, size=400)
    a = _dicts(clip_score_metrics(cos, truncated=0, protocol={}, bootstrap=200, seed=3))
    b = _dicts(clip_score_metrics(cos, truncated=0, protocol={}, bootstrap=200, seed=3))
    c = _dicts(clip_score_metrics(cos, truncated=0, protocol={}, bootstrap=200, seed=4))
    assert a == b and a["clip_score"]["stderr"] != c["clip_score"]["stderr"]
    analytic = cos.std(ddof=1) / np.sqrt(cos.size)
    assert a["clip_score"]["stderr"] == pytest.approx(analytic, rel=0.25)
    assert "bootstrap" in a["clip_score"]["protocol"]["stderr_method"]
    one = _dicts(clip_score_metrics(np.array([0.2]), truncated=0, protocol={}, bootstrap=100, seed=0))
    assert one["clip_score"]["stderr"] is None
    with pytest.raises(BenchError):
        clip_score_metrics(np.array([]), truncated=0, protocol={}, bootstrap=0, seed=0)


def test_clip_score_stderr_is_over_prompts_when_replicas_are_correlated():
    """K images per prompt share the prompt's difficulty: the stderr is that of the per-prompt means over
    n_prompts, not the per-image one that would treat the K correlated images as independent (half as large
    at K = 4)."""
    rng = np.random.default_rng(0)
    n_prompts, k = 60, 4
    per_prompt = rng.normal(0.25, 0.05, size=n_prompts)
    cos = np.repeat(per_prompt, k) + rng.normal(0.0, 1e-3, size=n_prompts * k)
    prompts = np.repeat(np.arange(n_prompts), k).tolist()
    by_prompt = cos.reshape(n_prompts, k).mean(axis=1).std(ddof=1) / np.sqrt(n_prompts)
    per_image = cos.std(ddof=1) / np.sqrt(cos.size)
    assert by_prompt > 1.9 * per_image

    plain = _dicts(clip_score_metrics(cos, prompts=prompts, truncated=0, protocol={}, bootstrap=0, seed=0))
    assert plain["clip_score"]["stderr"] == pytest.approx(by_prompt, rel=1e-12)
    x100 = (100 * np.maximum(cos, 0)).reshape(n_prompts, k).mean(axis=1)
    assert plain["clip_score_x100"]["stderr"] == pytest.approx(x100.std(ddof=1) / np.sqrt(n_prompts), rel=1e-12)
    boot = _dicts(clip_score_metrics(cos, prompts=prompts, truncated=0, protocol={}, bootstrap=2000, seed=0))
    assert boot["clip_score"]["stderr"] == pytest.approx(by_prompt, rel=0.1)
    for entry in (plain, boot):
        proto = entry["clip_score"]["protocol"]
        assert (proto["n"], proto["n_prompts"]) == (n_prompts * k, n_prompts) and "prompts" in proto["stderr_method"]
        assert entry["clip_score"]["value"] == pytest.approx(cos.mean())


def test_torchmetrics_agrees_through_the_converter(scorer, photos, tmp_path):
    """torchmetrics' CLIPScore (transformers CLIPModel) on the converted weights gives our numbers.

    Tolerance: the same float32 weights, pixels that are bit-identical after preprocessing (both resize
    with PIL bicubic, then centre crop and normalise alike) and identical token ids for these ASCII
    prompts; what remains is float32 rounding in differently ordered ops, ~1e-6 in a cosine, so 1e-4 on
    the x100 scale (and 1e-5 on cosines) leaves a margin of 10x.
    """
    from torchmetrics.multimodal.clip_score import CLIPScore
    from torchvision.transforms.functional import pil_to_tensor

    folder = open_clip_to_transformers(scorer.model, tmp_path / "hf-clip")
    prompts = [PHOTO_CAPTION, "a photo of a dog", "a city street at night", "two people on a beach", "a red car"]
    cos, _ = scorer.cosines(photos, prompts)
    # Both signs occur, so the clamp conventions below are really exercised.
    assert (cos > 0).any() and (cos < 0).any()

    model, processor = transformers_clip_for_torchmetrics(folder)
    with torch.no_grad():
        pixels = processor(images=[pil_to_tensor(im) for im in photos], return_tensors="pt")["pixel_values"]
        text = processor(text=prompts, return_tensors="pt", padding=True)
        img = model.get_image_features(pixels)
        txt = model.get_text_features(text["input_ids"], text["attention_mask"])
    hf_cos = torch.nn.functional.cosine_similarity(img, txt).double().numpy()
    np.testing.assert_allclose(hf_cos, cos, atol=1e-5)

    metric = CLIPScore(model_name_or_path=lambda: transformers_clip_for_torchmetrics(folder))
    per_sample = [float(metric(pil_to_tensor(im), p).detach()) for im, p in zip(photos, prompts)]
    np.testing.assert_allclose(per_sample, 100 * np.maximum(cos, 0), atol=1e-4)
    # torchmetrics clamps the mean over all updates, not each sample.
    assert float(metric.compute()) == pytest.approx(max(100 * cos.mean(), 0.0), abs=1e-4)
    ours = _dicts(clip_score_metrics(cos, truncated=0, protocol={}, bootstrap=0, seed=0))["clip_score_x100"]["value"]
    assert ours == pytest.approx(np.mean(per_sample), abs=1e-4)


def test_unknown_tag_and_missing_file_fail_fast_with_a_fix():
    with pytest.raises(BenchError) as err:
        open_clip_scorer("ViT-B-32", "no-such-tag")
    message = str(err.value)
    assert "eval.clip.pretrained=no-such-tag" in message and "openai" in message  # lists the known tags
    with pytest.raises(BenchError, match="is not a file"):
        open_clip_scorer("ViT-B-32", "/nonexistent/clip.bin")
    with pytest.raises(BenchError, match="not an open_clip architecture"):
        open_clip_scorer("ViT-Nope", "openai")


def test_known_tag_offline_names_the_file_and_how_to_supply_it(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BenchError) as err:
        open_clip_scorer("ViT-B-32", "openai", cache_dir=str(tmp_path))
    message = str(err.value)
    assert "timm/vit_base_patch32_clip_224.openai" in message  # the Hub repo open_clip downloads from
    assert "open_clip_pytorch_model.bin" in message
    assert "eval.clip.arch=ViT-B-32-quickgelu eval.clip.pretrained=/path/to/the/file" in message
    assert "HF_HOME" in message and "eval.clip.model._target_" in message and "HF_HUB_OFFLINE" in message


def test_unreachable_hub_fails_at_once_without_retries(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for proxy in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)  # the probe must reach the local port itself
    # Nothing listens on the discard port: the one probe is refused at once.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(BenchError, match="unreachable"):
        open_clip_scorer("ViT-B-32", "openai", cache_dir=str(tmp_path))


def test_a_cached_tag_is_loaded_from_the_cache_without_the_network(monkeypatch, tmp_path, tiny_checkpoint, photos):
    """A tag whose file is in open_clip's URL cache loads from there, with the tag's preprocessing."""
    import huggingface_hub
    import open_clip

    from bench.metrics.clip_model import register_tiny_clip

    register_tiny_clip()
    tag = {"url": "https://example.invalid/clip/tiny-clip.bin", "hf_hub": "", "quick_gelu": True,
           "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic", "resize_mode": "shortest"}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda arch, name: tag if name == "tinytag" else {})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    (tmp_path / "tiny-clip.bin").write_bytes(tiny_checkpoint.read_bytes())
    cached = open_clip_scorer(TINY_CLIP_NAME, "tinytag", cache_dir=str(tmp_path))
    assert cached.protocol["weights"] == "pretrained" and cached.protocol["image_preprocess"]["mean"] == [0.5] * 3
    direct = open_clip_scorer(TINY_CLIP_NAME, str(tiny_checkpoint))
    assert not np.allclose(cached.image_embeddings(photos[:1]), direct.image_embeddings(photos[:1]), atol=1e-4)
    np.testing.assert_array_equal(cached.text_embeddings(["a cat"])[0], direct.text_embeddings(["a cat"])[0])


def test_registering_the_tiny_clip_leaves_nothing_in_the_temp_folder(monkeypatch, tmp_path):
    """The tiny CLIP's config is read from the package: no per-process folder is left in the temp folder."""
    import tempfile

    import open_clip

    import bench.metrics.clip_model as clip_model

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(clip_model, "_tiny_registered", False)
    assert clip_model.register_tiny_clip() == TINY_CLIP_NAME
    assert open_clip.get_model_config(TINY_CLIP_NAME) == clip_model.TINY_CLIP_CONFIG
    assert open_clip_scorer(TINY_CLIP_NAME, None, seed=0).protocol["embed_dim"] == 32
    assert list(tmp_path.iterdir()) == []


def test_build_clip_scorer_from_config(tiny_checkpoint, photos):
    from omegaconf import OmegaConf

    from bench.core.config import ClipConfig

    cfg = OmegaConf.structured(ClipConfig(arch=TINY_CLIP_NAME, pretrained=str(tiny_checkpoint), batch_size=2))
    built = build_clip_scorer(cfg, "cpu")
    assert built.batch_size == 2 and built.protocol["arch"] == TINY_CLIP_NAME

    injected = OmegaConf.structured(ClipConfig(model={
        "_target_": "bench.metrics.clip_model.open_clip_scorer", "arch": TINY_CLIP_NAME, "pretrained": str(tiny_checkpoint)}))
    via_target = build_clip_scorer(injected, "cpu")
    np.testing.assert_array_equal(via_target.image_embeddings(photos[:1]), built.image_embeddings(photos[:1]))

    with pytest.raises(BenchError, match="must return"):
        build_clip_scorer({"model": {"_target_": "builtins.dict"}}, "cpu")


_TRIPLE: tuple | None = None


def _triple() -> tuple:
    """A Hydra target returning an open_clip-style (model, preprocess, tokenizer) triple."""
    return _TRIPLE


def test_injected_triple_is_wrapped(scorer, photos, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "_TRIPLE", (scorer.model, scorer.preprocess, scorer.tokenizer))
    target = f"{__name__}._triple"
    built = build_clip_scorer({"model": {"_target_": target}, "batch_size": 4}, "cpu")
    assert built.protocol["backend"] == "injected" and built.protocol["target"] == target
    assert built.batch_size == 4
    np.testing.assert_array_equal(built.image_embeddings(photos[:1]), scorer.image_embeddings(photos[:1]))


def test_paired_cosines_checks_shapes():
    a = np.eye(3)
    assert paired_cosines(a, a).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        paired_cosines(a, a[:2])


# ----------------------------------------------------------------------------------------------- CMMD


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cmmd_by_loops(x: np.ndarray, y: np.ndarray, sigma: float, scale: float) -> float:
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))

    kxx = np.mean([k(a, b) for a in x for b in x])
    kyy = np.mean([k(a, b) for a in y for b in y])
    kxy = np.mean([k(a, b) for a in x for b in y])
    return scale * (kxx + kyy - 2 * kxy)


def test_cmmd_identical_sets_give_zero():
    x = _unit(np.random.default_rng(0).normal(size=(40, 16)))
    assert cmmd(x, x) == pytest.approx(0.0, abs=1e-9)


def test_cmmd_grows_with_a_shift_and_is_symmetric():
    rng = np.random.default_rng(1)
    x = _unit(rng.normal(size=(50, 16)))
    y = _unit(rng.normal(size=(60, 16)))
    shifted = _unit(rng.normal(size=(60, 16)) + 2.0)
    assert cmmd(x, shifted) > cmmd(x, y) > 0
    assert cmmd(x, shifted) == pytest.approx(cmmd(shifted, x), rel=1e-12)


def test_cmmd_matches_a_hand_loop_and_blocks_do_not_matter():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, 5))
    y = rng.normal(size=(5, 5)) + 0.5
    expected = _cmmd_by_loops(x, y, sigma=3.0, scale=1000.0)
    assert cmmd(x, y, sigma=3.0) == pytest.approx(expected, rel=1e-9)
    assert cmmd(x, y, sigma=3.0, block=2) == pytest.approx(expected, rel=1e-9)
    assert cmmd(x, y, sigma=3.0, scale=1.0) == pytest.approx(expected / 1000, rel=1e-9)


def test_cmmd_metric_entry(scorer, photos):
    emb = scorer.image_embeddings(photos)
    entry = cmmd_metric(emb[:3], emb[2:], protocol=scorer.protocol).as_dict()
    assert entry["higher_is_better"] is False and entry["value"] > 0
    p = entry["protocol"]
    assert (p["n_generated"], p["n_reference"], p["sigma"], p["scale"]) == (3, 3, 10.0, 1000.0)
    assert p["embeddings_l2_normalised"] and "336" in p["paper_backbone"] and p["arch"] == TINY_CLIP_NAME
    json.dumps(entry, allow_nan=False)
    with pytest.raises(BenchError, match="same CLIP model"):
        cmmd(emb, emb[:, :8])


def test_cmmd_records_its_small_sample_bias_and_flags_it_where_it_matters():
    """The reference's estimator is biased (V-statistic): on two samples of one distribution its value is about
    its bias. The entry records the bias estimate as biased minus unbiased (a hand-computed U-statistic) and
    flags it against the value: not negligible there, negligible against a large distance."""
    rng = np.random.default_rng(0)
    x, y = _unit(rng.normal(size=(300, 16))), _unit(rng.normal(size=(250, 16)))
    far = _unit(rng.normal(size=(250, 16)) + 1.5)

    def unbiased(a, b, sigma=10.0, scale=1000.0):
        k = lambda u, v: np.exp(-((u[:, None, :] - v[None, :, :]) ** 2).sum(-1) / (2 * sigma**2))  # noqa: E731
        kaa, kbb = k(a, a), k(b, b)
        off = lambda m: (m.sum() - np.trace(m)) / (len(m) * (len(m) - 1))  # noqa: E731
        return scale * (off(kaa) + off(kbb) - 2 * k(a, b).mean())

    same = cmmd_metric(x, y).as_dict()
    bias = same["protocol"]["small_sample_bias"]
    assert bias["unbiased_value"] == pytest.approx(unbiased(x, y), rel=1e-9, abs=1e-12)
    assert bias["estimate"] == pytest.approx(same["value"] - unbiased(x, y), rel=1e-9)
    assert bias["estimate"] > 0 and abs(bias["unbiased_value"]) < 0.5 * bias["estimate"]
    assert bias["negligible"] is False and "Small-sample bias" in same["protocol"]["note"]
    apart = cmmd_metric(x, far).as_dict()
    assert apart["protocol"]["small_sample_bias"]["negligible"] is True and "note" not in apart["protocol"]
    assert cmmd_metric(x, far, max_relative_bias=1e-4).as_dict()["protocol"]["small_sample_bias"]["negligible"] is False


def test_cmmd_embeds_the_whole_image_resized_bicubic_without_a_crop(tiny_checkpoint):
    """As google-research's cmmd (embedding.py): the whole image is resized to the CLIP input size, bicubic,
    with no crop; CLIP score's preprocessing (shorter side, then a centre crop) would embed another image."""
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from torchvision.transforms.functional import normalize, to_tensor

    from bench.core.config import CmmdConfig
    from bench.metrics.cmmd import build_cmmd_scorer

    assert (CmmdConfig().arch, CmmdConfig().pretrained) == ("ViT-L-14-336", "openai")
    cmmd_scorer = build_cmmd_scorer({"arch": TINY_CLIP_NAME, "pretrained": str(tiny_checkpoint)}, "cpu")
    pre = cmmd_scorer.protocol["image_preprocess"]
    wide = Image.open(CC_IMAGES[0]).convert("RGB")
    wide = wide.crop((0, 0, wide.width, wide.height // 2))  # certainly not square: a crop would drop a lot
    assert wide.width >= 2 * wide.height

    def embed(pixels: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            out = cmmd_scorer.model.encode_image(pixels[None], normalize=True)
        return out.numpy()[0]

    squashed = wide.resize((32, 32), Image.BICUBIC)
    whole = embed(normalize(to_tensor(squashed), pre["mean"], pre["std"]))
    cropped_cfg = PreprocessCfg(**{**cmmd_scorer.model.visual.preprocess_cfg, "resize_mode": "shortest"})
    cropped = embed(image_transform_v2(cropped_cfg, is_train=False)(wide))
    ours = cmmd_scorer.image_embeddings([wide])[0]
    np.testing.assert_allclose(ours, whole, atol=1e-6)
    assert not np.allclose(ours, cropped, atol=1e-3)
    assert pre["resize_mode"] == "squash" and cmmd_scorer.image_size == 32


def test_cmmd_missing_weights_offline_name_the_cmmd_settings(monkeypatch, tmp_path):
    from huggingface_hub import constants as hf_constants

    from bench.metrics.cmmd import build_cmmd_scorer

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BenchError, match=r"eval\.cmmd\.arch=ViT-L-14-336 eval\.cmmd\.pretrained=openai") as info:
        build_cmmd_scorer({"arch": "ViT-L-14-336", "pretrained": "openai", "cache_dir": str(tmp_path)}, "cpu")
    assert "eval.clip" not in str(info.value)


# ---------------------------------------------------------------------------- PartiPrompts re-scoring judge


def test_rescore_judge_uses_its_own_scores(scorer, photos, tmp_path):
    from bench.metrics.parti import Pick, RescoreJudge, win_rate

    for i, im in enumerate(photos[:2]):
        im.save(tmp_path / f"{i}.png")
    judge = RescoreJudge(scorer=scorer, margin=0.0, root_a=str(tmp_path), root_b=str(tmp_path))
    cos, _ = scorer.cosines([photos[0], photos[1]], [PHOTO_CAPTION, PHOTO_CAPTION])
    expected = "a" if cos[0] > cos[1] else "b"
    # The scores the picks carry are deliberately the other way round: the judge must ignore them.
    a = Pick({"index": 0, "prompt": PHOTO_CAPTION, "file": "0.png", "category": "Outdoor Scenes"}, -1.0)
    b = Pick({"index": 0, "prompt": PHOTO_CAPTION, "file": "1.png", "category": "Outdoor Scenes"}, 1.0)
    assert judge(PHOTO_CAPTION, a, b) == expected
    result = win_rate({0: a}, {0: b}, judge=judge)
    assert result["judge"]["name"] == "clip_rescore" and result["judge"]["scorer"]["arch"] == TINY_CLIP_NAME
    assert result["overall"]["a_wins" if expected == "a" else "b_wins"] == 1
