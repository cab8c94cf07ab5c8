"""FID and KID: image loading, features equal to clean-fid's, streaming vs files, the reference cache,
offline Inception weights, and the metric entries."""

from __future__ import annotations

import inspect
import json
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageFile
from torch import nn

import bench.metrics.features as features_mod
from bench.core.errors import BenchError
from bench.data.images import (
    EXTENSIONS,
    REFERENCE_RESIZE,
    ImageLoadError,
    list_images,
    load_rgb,
    to_square,
)
from bench.metrics.features import (
    INCEPTION_FILE,
    INCEPTION_SHA256,
    INCEPTION_URL,
    PT_INCEPTION_FILE,
    FeatureExtractor,
    build_fid_extractor,
)
from bench.metrics.fid import (
    FeatureAccumulator,
    fid_metric,
    fid_protocol,
    folder_features,
    frechet_distance,
    kernel_inception_distance,
    kid_metric,
)
from bench.metrics.reference_cache import reference_cache_key, reference_features
from bench.testing import RandomConvFeatures

ASSETS = Path(__file__).parent / "assets"
CC_IMAGES = ASSETS / "cc_images"
SIZE = 48  # small generated-image size: clean-fid still resizes every image to 299


def _photo_files() -> list[Path]:
    return [ASSETS / "photo_256.png", *sorted(CC_IMAGES.glob("*.jpg"))]


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """24 distinct small photos: the real photos, centre-cropped to SIZE, plus mirrored copies."""
    base = [to_square(load_rgb(p), SIZE) for p in _photo_files()]
    images = base + [np.ascontiguousarray(img[:, ::-1]) for img in base]
    assert len(images) >= 24, "expected tests/assets/photo_256.png and the shared cc_images"
    return images[:24]


@pytest.fixture(scope="module")
def noise() -> list[np.ndarray]:
    """12 images of uniform noise: a set clearly unlike photos."""
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(12)]


def _extractor(mode: str = "clean", seed: int = 0, dims: int = 8) -> FeatureExtractor:
    return build_fid_extractor({"mode": mode, "feature_extractor": RandomConvFeatures(seed=seed, dims=dims)}, "cpu")


def _write_pngs(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:05d}.png")
    return folder


# ---- images ----------------------------------------------------------------------------------------------


def test_extensions_and_listing_match_clean_fid(tmp_path):
    import glob
    import os

    from cleanfid.utils import EXTENSIONS as CLEANFID_EXTENSIONS

    assert EXTENSIONS == CLEANFID_EXTENSIONS
    for rel in ["b.png", "a.JPG", "sub/c.jpeg", "sub/deep/d.webp", "e.txt", "f.Png", ".hidden/g.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    # The expression of cleanfid.fid.get_folder_features.
    expected = sorted(
        f for ext in CLEANFID_EXTENSIONS for f in glob.glob(os.path.join(str(tmp_path), f"**/*.{ext}"), recursive=True)
    )
    listed = list_images(tmp_path)
    assert [str(p) for p in listed] == expected
    assert {p.name for p in listed} == {"b.png", "a.JPG", "c.jpeg", "d.webp"}
    with pytest.raises(BenchError, match="not found"):
        list_images(tmp_path / "missing")
    odd = tmp_path / "run[1]"
    odd.mkdir()
    (odd / "x.png").write_bytes(b"x")
    assert list_images(odd) == [odd / "x.png"]  # glob characters in the folder name are escaped


def test_load_rgb_reads_like_clean_fid(tmp_path):
    gray = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), mode="L")
    gray.save(tmp_path / "gray.png")
    arr = load_rgb(tmp_path / "gray.png")
    assert arr.dtype == np.uint8 and arr.shape == (8, 8, 3)
    np.testing.assert_array_equal(arr, np.array(Image.open(tmp_path / "gray.png").convert("RGB")))
    np.testing.assert_array_equal(load_rgb((tmp_path / "gray.png").read_bytes(), "gray.png"), arr)


def test_corrupt_and_truncated_files_are_reported_and_skipped(tmp_path, photos):
    folder = _write_pngs(tmp_path / "gen", photos[:4])
    (folder / "00004.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    jpeg = (CC_IMAGES / "0006400c1c224e19.jpg").read_bytes()
    (folder / "00005.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False

    with pytest.raises(ImageLoadError, match="00005.jpg") as info:
        load_rgb(folder / "00005.jpg")
    assert "truncated" in info.value.reason
    assert isinstance(info.value, BenchError)

    extractor = _extractor()
    result = folder_features(folder, extractor, batch_size=3)
    assert [Path(f).name for f, _ in result.failures] == ["00004.png", "00005.jpg"]
    assert all(reason for _, reason in result.failures)
    assert [Path(k).name for k in result.keys] == [f"{i:05d}.png" for i in range(4)]
    np.testing.assert_allclose(result.features, extractor(photos[:4]), rtol=1e-5, atol=1e-6)


def test_to_square_crops_the_centre_then_resizes_bicubic():
    img = np.zeros((40, 60, 3), dtype=np.uint8)
    img[:, :10] = 255  # bands outside the centred 40x40 square
    img[:, 50:] = 255
    img[:, 10:50] = 100
    out = to_square(img, 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert (out == 100).all()
    expected = np.array(Image.fromarray(img[:, 10:50]).resize((20, 20), Image.BICUBIC))
    np.testing.assert_array_equal(out, expected)
    same = np.zeros((20, 20, 3), dtype=np.uint8)
    assert to_square(same, 20) is same
    assert REFERENCE_RESIZE["crop"] == "center" and REFERENCE_RESIZE["resize"] == "PIL bicubic"


# ---- features equal clean-fid's --------------------------------------------------------------------------


def _scipy_118_sqrtm(sqrtm):
    """scipy.linalg.sqrtm as SciPy 1.18.0 defines it (scipy/linalg/_matfuncs.py in its wheel): `sqrtm(A)`, with
    `disp` and `blocksize` removed, returning the root alone; the Schur algorithm is the same as 1.16-1.17's."""

    def sqrtm_118(A):
        return sqrtm(A)

    return sqrtm_118


def _accepting_disp(sqrtm):
    """sqrtm taking clean-fid 0.1.35's `disp=False` again where SciPy removed it, so that clean-fid, the reference
    side of the equality tests, runs on every SciPy. Returns sqrtm unchanged where it still has `disp`."""
    if "disp" in inspect.signature(sqrtm).parameters:
        return sqrtm

    def compat(A, disp=True):
        root = sqrtm(A)
        if disp:
            return root
        return root, np.linalg.norm(root @ root - A, "fro") ** 2 / np.linalg.norm(A, "fro")

    return compat


@pytest.fixture
def cleanfid_on_any_scipy(monkeypatch):
    import scipy.linalg

    monkeypatch.setattr(scipy.linalg, "sqrtm", _accepting_disp(scipy.linalg.sqrtm))


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated")  # clean-fid's own scipy call
@pytest.mark.parametrize("mode", ["clean", "legacy_pytorch", "legacy_tensorflow"])
def test_fid_of_two_folders_equals_clean_fid(tmp_path, photos, mode, cleanfid_on_any_scipy):
    from cleanfid import fid as cleanfid_fid

    dir1 = _write_pngs(tmp_path / "a", photos[:12])
    dir2 = _write_pngs(tmp_path / "b", photos[12:24])
    module = RandomConvFeatures(seed=0, dims=8)
    expected = cleanfid_fid.compute_fid(
        str(dir1), str(dir2), mode=mode, custom_feat_extractor=module, num_workers=0,
        device=torch.device("cpu"), verbose=False,
    )
    extractor = build_fid_extractor({"mode": mode, "feature_extractor": module}, "cpu")
    ours = frechet_distance(folder_features(dir1, extractor).features, folder_features(dir2, extractor).features)
    assert expected > 0
    assert abs(ours - expected) / expected < 1e-6


def test_streaming_in_any_order_equals_reading_the_pngs(tmp_path, photos):
    folder = _write_pngs(tmp_path / "gen", photos)
    extractor = _extractor()
    from_files = folder_features(folder, extractor, batch_size=32)

    # Arrays as the generator hands them over: PIL images -> numpy, shuffled, in uneven chunks.
    batch_sizes = []

    def spy(images):
        batch_sizes.append(len(images))
        return extractor(images)

    acc = FeatureAccumulator(spy, batch_size=5)
    order = np.random.default_rng(0).permutation(len(photos))
    for start in range(0, len(order), 3):
        idx = order[start : start + 3]
        acc.add([np.array(Image.fromarray(photos[i])) for i in idx], [int(i) for i in idx])
    assert len(acc) == len(photos)
    assert batch_sizes == [5] * (len(photos) // 5)  # extracted as batches fill: only features are kept
    assert acc.keys == list(range(len(photos)))
    streamed = acc.features()
    assert batch_sizes[-1] == len(photos) % 5
    np.testing.assert_allclose(streamed, from_files.features, rtol=1e-5, atol=1e-6)

    ref = extractor(photos[::-1][:12])
    fid_files, fid_stream = frechet_distance(from_files.features, ref), frechet_distance(streamed, ref)
    assert abs(fid_stream - fid_files) / fid_files < 1e-6
    with pytest.raises(ValueError, match="added twice"):
        acc.add([photos[0]], [0])


# ---- reference cache ---------------------------------------------------------------------------------------


def _loaders(files: list[Path]):
    return [(f.name, lambda f=f: f.read_bytes()) for f in files]


def _exploding(files: list[Path]):
    def boom():
        raise AssertionError("the cache should have been used")

    return [(f.name, boom) for f in files]


def test_reference_features_are_cached_under_every_choice(tmp_path):
    files = _photo_files()[:3]
    extractor = _extractor()
    key = {"dataset": "cc-test", "split": "val", "count": 3}
    first = reference_features(_loaders(files), extractor, resolution=32, key=key, cache_dir=tmp_path)
    assert not first.cached and first.cache_file.is_file() and first.features.shape == (3, 8)
    sidecar = json.loads(first.cache_file.with_suffix(".json").read_text())
    assert sidecar["key"] == key and sidecar["resolution"] == 32 and sidecar["feature_extractor"] == extractor.name
    # Features are those of the centre-cropped, resized images.
    expected = extractor([to_square(load_rgb(f), 32) for f in files])
    np.testing.assert_allclose(first.features, expected, rtol=1e-6)

    again = reference_features(_exploding(files), extractor, resolution=32, key=key, cache_dir=tmp_path)
    assert again.cached and again.cache_file == first.cache_file
    np.testing.assert_array_equal(again.features, first.features)
    assert again.keys == [f.name for f in files]

    variants = [
        (extractor, 32, {**key, "count": 2}),
        (_extractor(mode="legacy_pytorch"), 32, key),
        (extractor, 24, key),
        (_extractor(seed=1), 32, key),
        (_extractor(dims=4), 32, key),
    ]
    digests = {reference_cache_key(extractor, resolution=32, key=key)[0]}
    for ext, res, k in variants:
        result = reference_features(_loaders(files), ext, resolution=res, key=k, cache_dir=tmp_path)
        assert not result.cached
        digests.add(reference_cache_key(ext, resolution=res, key=k)[0])
    assert len(digests) == 1 + len(variants)
    assert len(list(tmp_path.glob("reference-*.npz"))) == 1 + len(variants)


def test_reference_failures_are_reported_and_an_empty_set_refused(tmp_path):
    files = _photo_files()[:2]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"garbage")
    items = _loaders(files) + [(bad.name, bad.read_bytes), ("gone.jpg", (tmp_path / "gone.jpg").read_bytes)]
    result = reference_features(items, _extractor(), resolution=32, key={"d": 1}, cache_dir=tmp_path / "c")
    assert len(result.keys) == 2 and [n for n, _ in result.failures] == ["broken.jpg", "gone.jpg"]
    cached = reference_features(_exploding(files), _extractor(), resolution=32, key={"d": 1}, cache_dir=tmp_path / "c")
    assert cached.failures == result.failures

    with pytest.raises(BenchError, match="No reference images"):
        reference_features([], _extractor(), resolution=32, key={"d": 2}, cache_dir=tmp_path / "c")
    with pytest.raises(BenchError, match="broken.jpg"):
        reference_features([(bad.name, bad.read_bytes)], _extractor(), resolution=32, key={"d": 3}, cache_dir=tmp_path)


# ---- feature extractors from config ----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_injected_extractors_from_config(tmp_path, photos):
    spec = {"_target_": "bench.testing.RandomConvFeatures", "seed": 3, "dims": 6}
    hydra_built = build_fid_extractor({"feature_extractor": spec}, "cpu")
    assert hydra_built.mode == "clean" and hydra_built.dims == 6
    assert "NOT comparable" in hydra_built.name and "seed=3" in hydra_built.name
    feats = hydra_built(photos[:2])
    assert feats.shape == (2, 6)
    from_yaml = OmegaConf.create({"mode": "legacy_pytorch", "feature_extractor": spec, "inception_path": None})
    legacy = build_fid_extractor(from_yaml, "cpu")
    assert legacy.mode == "legacy_pytorch" and legacy.name == hydra_built.name
    assert legacy.protocol()["generated_resize"]["filter"] == "bilinear"
    # The target the README documented before the stand-ins moved to bench/testing.py still builds the same network.
    old = build_fid_extractor({"feature_extractor": {**spec, "_target_": "bench.features.RandomConvFeatures"}}, "cpu")
    assert old.name == hydra_built.name and np.array_equal(old(photos[:2]), feats)

    path = tmp_path / "feats.pt"
    torch.jit.script(RandomConvFeatures(seed=3, dims=6)).save(str(path))
    scripted = build_fid_extractor({"feature_extractor": str(path)}, "cpu")
    assert scripted.name.startswith("torchscript:feats.pt (sha256 ")
    np.testing.assert_allclose(scripted(photos[:2]), feats, rtol=1e-5, atol=1e-6)

    with pytest.raises(BenchError, match="eval.fid.mode"):
        build_fid_extractor({"mode": "fast", "feature_extractor": spec}, "cpu")
    with pytest.raises(BenchError, match="not a file"):
        build_fid_extractor({"feature_extractor": str(tmp_path / "missing.pt")}, "cpu")


@pytest.fixture
def no_weights_anywhere(tmp_path, monkeypatch):
    """clean-fid's folders point into tmp_path, and every download fails as it does offline."""
    monkeypatch.setattr(features_mod, "CLEANFID_INCEPTION_DIR", tmp_path / "cleanfid")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls = []

    def offline(request, timeout=None):
        calls.append(request.full_url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)  # what the one downloader, bench.core.download, calls
    return calls


def test_missing_inception_offline_says_how_to_supply_it(no_weights_anywhere):
    with pytest.raises(BenchError) as info:
        build_fid_extractor({"mode": "clean"}, "cpu")
    message = str(info.value)
    for part in (INCEPTION_FILE, INCEPTION_URL, INCEPTION_SHA256, "eval.fid.inception_path"):
        assert part in message
    assert "eval.fid.feature_extractor._target_" in message
    assert no_weights_anywhere == [INCEPTION_URL]

    with pytest.raises(BenchError, match=PT_INCEPTION_FILE):
        build_fid_extractor({"mode": "legacy_pytorch"}, "cpu")
    with pytest.raises(BenchError, match="downloads are disabled"):
        build_fid_extractor({"mode": "clean", "download": False}, "cpu")
    assert len(no_weights_anywhere) == 2  # the disabled one did not try


def test_inception_file_with_wrong_sha256_is_refused(tmp_path, no_weights_anywhere):
    fake = tmp_path / INCEPTION_FILE
    fake.write_bytes(b"not the inception weights")
    with pytest.raises(BenchError, match="sha256"):
        build_fid_extractor({"inception_path": str(fake)}, "cpu")
    (tmp_path / "cleanfid").mkdir()
    (tmp_path / "cleanfid" / INCEPTION_FILE).write_bytes(b"a truncated download")
    with pytest.raises(BenchError, match="sha256"):
        build_fid_extractor({}, "cpu")
    with pytest.raises(BenchError, match="does not exist"):
        build_fid_extractor({"inception_path": str(tmp_path / "nope.pt")}, "cpu")


class _TinyInception(nn.Module):
    """Same TorchScript interface as inception-2015-12-05.pt (layers, forward(x, return_features))."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(3, 2048, 1))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.layers((x - 128) / 128)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_inception_weights_load_like_clean_fid(tmp_path, monkeypatch, no_weights_anywhere, photos):
    torch.manual_seed(0)
    tiny = _TinyInception()
    weights = tmp_path / "my-inception-copy.pt"
    torch.jit.script(tiny).save(str(weights))
    monkeypatch.setattr(features_mod, "INCEPTION_SHA256", features_mod.file_sha256(weights))

    clean = build_fid_extractor({"mode": "clean", "inception_path": str(weights)}, "cpu")
    assert clean.dims == 2048 and "inception-2015-12-05" in clean.name
    feats = clean(photos[:2])
    # clean-fid's InceptionV3W: normalise the 299x299 batch, then the network's `layers`.
    batch = torch.stack([clean.preprocess(img) for img in photos[:2]])
    with torch.no_grad():
        expected = tiny.layers((batch - 128) / 128).view(2, 2048).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)

    # Found in clean-fid's own folder without any config, and legacy_tensorflow resizes inside the graph.
    (tmp_path / "cleanfid").mkdir()
    (tmp_path / "cleanfid" / INCEPTION_FILE).write_bytes(weights.read_bytes())
    tf = build_fid_extractor({"mode": "legacy_tensorflow"}, "cpu")
    assert tf(photos[:2]).shape == (2, 2048)
    assert no_weights_anywhere == []


# ---- distances and metric entries ------------------------------------------------------------------------


def test_fid_is_zero_for_a_set_with_itself_and_positive_for_different_sets(photos, noise):
    extractor = _extractor()
    a, b, z = extractor(photos[:12]), extractor(photos[12:]), extractor(noise)
    self_fid = frechet_distance(a, a)
    assert abs(self_fid) < 1e-6 * float(np.trace(np.cov(a, rowvar=False)))
    assert frechet_distance(a, b) > 0
    assert frechet_distance(a, z) > 3 * frechet_distance(a, b)  # noise is further from photos than photos are


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated")  # clean-fid's own scipy call
def test_fid_runs_where_scipy_sqrtm_has_no_disp(monkeypatch, photos, noise, cleanfid_on_any_scipy):
    """SciPy 1.18 (what pip installs on Python 3.12+) removed sqrtm's `disp`, which clean-fid 0.1.35 passes. With
    that signature in place clean-fid's own frechet_distance fails, and ours gives the number clean-fid gives."""
    import scipy.linalg
    from cleanfid.fid import frechet_distance as cleanfid_frechet_distance

    extractor = _extractor()
    gen, ref = extractor(photos[:12] + noise[:6]), extractor(photos[12:])
    stats = (np.mean(gen, axis=0), np.cov(gen, rowvar=False), np.mean(ref, axis=0), np.cov(ref, rowvar=False))
    expected = float(cleanfid_frechet_distance(*stats))
    protocol = fid_protocol(extractor, resolution=SIZE)
    entry = fid_metric(gen, ref, protocol=protocol, bootstrap=4, seed=0).as_dict()

    monkeypatch.setattr(scipy.linalg, "sqrtm", _scipy_118_sqrtm(scipy.linalg.sqrtm))
    with pytest.raises(TypeError, match="disp"):
        cleanfid_frechet_distance(*stats)
    assert expected > 0
    assert abs(frechet_distance(gen, ref) - expected) / expected < 1e-6
    assert fid_metric(gen, ref, protocol=protocol, bootstrap=4, seed=0).as_dict() == entry


def test_the_running_python_is_one_the_package_declares():
    """pyproject's requires-python and classifiers name the Pythons claimed; CI must run one of them."""
    import platform
    import sys
    import tomllib

    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    assert platform.python_version() in SpecifierSet(project["requires-python"])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"Programming Language :: Python :: {version}" in project["classifiers"]


def test_fid_bootstrap_resamples_prompts_with_all_their_images(photos, noise):
    """With K near-identical images per prompt, resampling rows treats them as independent; resampling prompts
    (each with its K rows) is what the protocol then says, and gives a larger error. With one image per
    prompt the two are the same draws."""
    extractor = _extractor()
    base, ref = extractor(photos[:12] + noise[:6]), extractor(photos[12:])
    k = 3
    rng = np.random.default_rng(0)
    gen = np.repeat(base, k, axis=0) + rng.normal(0.0, 1e-3 * base.std(), size=(len(base) * k, base.shape[1]))
    prompts = np.repeat(np.arange(len(base)), k).tolist()
    protocol = fid_protocol(extractor, resolution=SIZE)
    by_row = fid_metric(gen, ref, protocol=protocol, bootstrap=40, seed=0).as_dict()
    by_prompt = fid_metric(gen, ref, protocol=protocol, bootstrap=40, seed=0, groups=prompts).as_dict()
    assert by_prompt["value"] == by_row["value"]
    assert by_prompt["stderr"] > 1.4 * by_row["stderr"]
    assert "prompts (18, each with all its images)" in by_prompt["protocol"]["stderr"]
    single = fid_metric(base, ref, protocol=protocol, bootstrap=5, seed=0, groups=list(range(len(base)))).as_dict()
    assert single["stderr"] == fid_metric(base, ref, protocol=protocol, bootstrap=5, seed=0).as_dict()["stderr"]


def test_kid_is_seeded_and_equals_clean_fid(photos, noise):
    from cleanfid.fid import kernel_distance

    extractor = _extractor()
    gen, ref = extractor(photos[:12] + noise[:4]), extractor(photos[12:])
    value, stderr = kernel_inception_distance(gen, ref, num_subsets=20, max_subset_size=8, seed=5)
    assert (value, stderr) == kernel_inception_distance(gen, ref, num_subsets=20, max_subset_size=8, seed=5)
    assert value != kernel_inception_distance(gen, ref, num_subsets=20, max_subset_size=8, seed=6)[0]
    assert stderr is not None and stderr > 0
    np.random.seed(5)
    assert value == pytest.approx(kernel_distance(gen, ref, num_subsets=20, max_subset_size=8), rel=1e-12)


def test_metric_entries_flag_small_counts_and_are_json(photos, noise):
    extractor = _extractor()
    gen, ref = extractor(photos[:12]), extractor(photos[12:] + noise)
    protocol = {**fid_protocol(extractor, resolution=SIZE), "dataset": "test"}
    fid = fid_metric(gen, ref, protocol=protocol, bootstrap=5, seed=1).as_dict()
    assert fid["value"] == pytest.approx(frechet_distance(gen, ref), rel=1e-12)
    assert fid["higher_is_better"] is False and fid["stderr"] > 0
    assert fid == fid_metric(gen, ref, protocol=protocol, bootstrap=5, seed=1).as_dict()  # seeded bootstrap
    proto = fid["protocol"]
    assert proto["below_minimum"] is True and "rank-deficient" in proto["note"]
    assert (proto["n_generated"], proto["n_reference"], proto["feature_dims"]) == (12, 24, 8)
    assert proto["mode"] == "clean" and proto["feature_extractor"] == extractor.name and proto["dataset"] == "test"
    assert proto["generated_resize"]["filter"] == "bicubic" and proto["reference_resize"]["size"] == [SIZE, SIZE]

    assert fid_metric(gen, ref, protocol=protocol, min_samples=12).as_dict()["protocol"]["below_minimum"] is False
    assert fid_metric(gen, ref, protocol=protocol).as_dict()["stderr"] is None

    kid = kid_metric(gen, ref, protocol=protocol, num_subsets=10, max_subset_size=8).as_dict()
    assert kid["protocol"]["below_minimum"] is True and "1000" in kid["protocol"]["note"]
    assert kid["protocol"]["subset_size"] == 8 and kid["higher_is_better"] is False
    json.dumps([fid, kid], allow_nan=False)

    with pytest.raises(ValueError, match="fid_protocol"):
        fid_metric(gen, ref, protocol={"dataset": "test"})
    with pytest.raises(BenchError, match="at least 2"):
        fid_metric(gen[:1], ref, protocol=protocol)
