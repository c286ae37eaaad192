"""`python -m osediff_jax.upscale` on a small random SD folder with random OSEDiff weights (non-zero
LoRA B, perturbed conv_in): outputs, sizes, formats, bad inputs, exit codes, and the pixels against
PIL's preprocessing and the network applied directly."""

import contextlib
import dataclasses
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache
from PIL import Image, ImageOps

from osediff_jax import convert, upscale
from osediff_jax.inference import pipeline
from osediff_jax.models import lora
from osediff_jax.weights import bundle, osediff_pkl, random_sd
from tests.references import png as png_ref

pytestmark = pytest.mark.reference  # osediff.pkl, the authors' format, is written with torch
RNG = np.random.default_rng(0)
ROOT = Path(__file__).resolve().parents[1]
RANK = 4
LUMA = np.array([0.299, 0.587, 0.114])
_CACHE = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
          "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(scope="module", autouse=True)
def compile_once(tmp_path_factory):
    """Every run of the command jits its own function; a persistent compilation cache lets runs on
    the same shapes share the compiled programs, which keeps this file fast."""
    old = {n: getattr(jax.config, n) for n in _CACHE}
    for name, value in zip(_CACHE, (str(tmp_path_factory.mktemp("jax_cache")), 0, 0)):
        jax.config.update(name, value)
    yield
    for name, value in old.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def _random_lora(shapes: dict, modules: list[str], rng: np.random.Generator) -> dict:
    """A LoRA tree as if trained: `lora.init`'s layout, A and B both random."""
    tree = lora.init(jax.random.key(0), shapes, modules, RANK)
    return jax.tree_util.tree_map_with_path(
        lambda path, s: ((0.25 if path[-2].key == "lora_A" else 0.05) * rng.standard_normal(s.shape)).astype(np.float32),
        tree)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """sd/ (diffusers) and osediff.pkl (the authors' format); converted: sd-converted/, osediff/, and
    merged/ (`convert merge`)."""
    root = tmp_path_factory.mktemp("models")
    random_sd.write_random_sd(root / "sd", seed=0)
    model = bundle.load(root / "sd")
    unet, vae = model.params["unet"], model.params["vae"]
    rng = np.random.default_rng(2)
    unet_modules, vae_modules = lora.unet_target_lists(unet), lora.vae_target_list(vae)
    conv_in = {k: np.asarray(v) + 0.05 * rng.standard_normal(v.shape).astype(np.float32)
               for k, v in unet["conv_in"].items()}
    w = osediff_pkl.OSEDiffWeights(
        _random_lora(unet, [m for ms in unet_modules.values() for m in ms], rng),
        _random_lora(vae, vae_modules, rng), conv_in, RANK, RANK, unet_modules, vae_modules)
    osediff_pkl.write_pkl(w, root / "osediff.pkl")
    for argv in (["merge", "--sd-path", root / "sd", "--osediff", root / "osediff.pkl", "--dst", root / "merged"],
                 ["sd", "--src", root / "sd", "--dst", root / "sd-converted"],
                 ["osediff", "--sd-path", root / "sd", "--src", root / "osediff.pkl", "--dst", root / "osediff"]):
        assert convert.main(list(map(str, argv))) == 0
    return root


def _two_sources(models: Path) -> list[str]:
    return ["--sd-path", str(models / "sd"), "--osediff-ckpt", str(models / "osediff.pkl")]


def _smooth(h: int, w: int, c: int, hi: int) -> np.ndarray:
    """A smooth random image (so that JPEG keeps it close) in [0, hi]."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w, 2)
    phase = RNG.uniform(0, 6, (c, 2))
    planes = [0.5 + 0.4 * np.sin(3 * x + p[0]) * np.cos(2 * y + p[1]) for p in phase]
    return np.rint(np.stack(planes, -1) * hi)


@dataclasses.dataclass
class Run:
    rc: int
    stderr: str
    traces: int
    network_inputs: list[np.ndarray]
    net: pipeline.Upscaler


def run_cli(argv: list[str]) -> Run:
    """main(argv), recording how often the network is traced (= compiled) and what it is fed."""
    traces, seen, nets = [0], [], []
    make, load = pipeline.make_upscale_fn, upscale.load_upscaler

    def counting_make(*args, **kw):
        fn = make(*args, **kw)

        def traced(*a):
            traces[0] += 1
            return fn(*a)
        return traced

    def recording_load(**kw):
        net = load(**kw)
        nets.append(net)

        def fn(params, lq, embeds, key):
            seen.append(np.asarray(lq))
            return net.fn(params, lq, embeds, key)
        return dataclasses.replace(net, fn=fn)

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.setattr(pipeline, "make_upscale_fn", counting_make)
        mp.setattr(upscale, "load_upscaler", recording_load)
        rc = upscale.main(argv)
    return Run(rc, err.getvalue(), traces[0], seen, nets[0] if nets else None)


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _pil_lq(path: Path, scale: int = 4) -> np.ndarray:
    """The network's input as the authors make it: PIL RGB, bicubic, to_tensor."""
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    return np.asarray(img.resize((img.width * scale, img.height * scale), Image.BICUBIC), np.float32) / 255


def _net(run: Run, lq: np.ndarray, key=None) -> np.ndarray:
    return np.asarray(run.net.fn(run.net.params, lq[None], run.net.prompt_embeds, key)[0])


def _to8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x.astype(np.float64), 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mix(tmp_path_factory) -> Path:
    """Good images of every kind, and bad files. Displayed sizes: 8x8, 5x8 (rotated), 1x1."""
    d = tmp_path_factory.mktemp("mix")
    Image.fromarray(_smooth(8, 8, 3, 255).astype(np.uint8)).save(d / "rgb.png")
    Image.fromarray(_smooth(8, 8, 4, 255).astype(np.uint8), "RGBA").save(d / "rgba.png")
    Image.fromarray(_smooth(8, 8, 1, 255)[..., 0].astype(np.uint8), "L").save(d / "gray.jpg", quality=95)
    Image.fromarray(_smooth(8, 8, 1, 65535)[..., 0].astype(np.uint16)).save(d / "g16.png")
    (d / "c16.png").write_bytes(png_ref.encode(_smooth(8, 8, 3, 65535).astype(np.uint16)))
    Image.fromarray(_smooth(8, 8, 3, 255).astype(np.uint8)).save(d / "lossless.webp", lossless=True)
    Image.fromarray(_smooth(8, 8, 3, 255).astype(np.uint8)).save(d / "t.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 8 high x 5 wide, displayed 5 high x 8 wide
    Image.fromarray(_smooth(8, 5, 3, 255).astype(np.uint8)).save(d / "rot.jpg", exif=exif, quality=95)
    Image.fromarray(np.array([[[200, 30, 90]]], np.uint8)).save(d / "one.png")
    buf = io.BytesIO()
    Image.fromarray(_smooth(8, 8, 3, 255).astype(np.uint8)).save(buf, format="PNG")
    (d / "corrupt.png").write_bytes(buf.getvalue()[:60])
    (d / "empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("not an image: ignored")
    Image.fromarray(_smooth(8, 8, 3, 255).astype(np.uint8)).save(d / "z.png")
    (d / "z.webp").write_bytes((d / "lossless.webp").read_bytes())  # same output name as z.png
    return d


GOOD = ["c16.png", "g16.png", "gray.jpg", "lossless.webp", "one.png", "rgb.png", "rgba.png", "rot.jpg", "t.tif",
        "z.png"]
FAILED = 3  # corrupt.png, empty.png, z.webp


@pytest.fixture(scope="module")
def mix_run(models, mix, tmp_path_factory):
    before = _hashes(mix)
    out = tmp_path_factory.mktemp("out")
    return run_cli([*_two_sources(models), "--input", str(mix), "--output", str(out)]), out, before


def _out(name: str) -> str:
    return f"{Path(name).stem}.png"


def test_mix_outputs_and_summary(mix_run, mix):
    run, out, before = mix_run
    assert run.rc == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(map(_out, GOOD))  # nothing else, no temp files
    assert f"upscaled {len(GOOD)} of {len(GOOD) + FAILED} image(s)" in run.stderr
    assert f"{FAILED} failed" in run.stderr
    assert f"{mix / 'empty.png'}: empty file" in run.stderr
    assert f"{mix / 'corrupt.png'}: not a readable image" in run.stderr
    assert f"{mix / 'z.webp'}: its output {out / 'z.png'} is already written from {mix / 'z.png'}" in run.stderr
    assert "notes.txt" not in run.stderr
    assert _hashes(mix) == before  # inputs untouched


def test_sizes_are_exactly_scale_times_input(mix_run, mix):
    _, out, _ = mix_run
    for name in GOOD:
        shown = ImageOps.exif_transpose(Image.open(mix / name))
        assert Image.open(out / _out(name)).size == (4 * shown.width, 4 * shown.height), name
    assert Image.open(out / "rot.png").size == (32, 20) and Image.open(out / "one.png").size == (4, 4)


def test_compiled_once_per_shape(mix_run):
    run, _, _ = mix_run
    assert len(run.network_inputs) == len(GOOD)
    assert run.traces == 3  # 32x32 (eight images), 20x32, 4x4


def test_network_sees_pils_bicubic_of_the_8bit_image(mix_run, mix):
    run, _, _ = mix_run
    for name, lq in zip(GOOD, run.network_inputs):
        if name not in ("c16.png", "g16.png"):
            np.testing.assert_array_equal(lq[0], _pil_lq(mix / name), err_msg=name)


def test_8bit_pixels_match_the_network(mix_run, mix):
    run, out, _ = mix_run
    for name in ("rgb.png", "lossless.webp", "t.tif", "rot.jpg", "one.png"):
        got = Image.open(out / _out(name))
        assert got.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(got), _to8(_net(run, _pil_lq(mix / name))), err_msg=name)


def test_rgba_keeps_alpha_upscaled_separately(mix_run, mix):
    run, out, _ = mix_run
    src = Image.open(mix / "rgba.png")
    got = Image.open(out / "rgba.png")
    assert got.mode == "RGBA"
    alpha = src.getchannel("A").resize((32, 32), Image.BICUBIC)
    np.testing.assert_array_equal(np.asarray(got)[..., 3], np.asarray(alpha))
    np.testing.assert_array_equal(np.asarray(got)[..., :3], _to8(_net(run, _pil_lq(mix / "rgba.png"))))


def test_gray_in_gray_out(mix_run, mix):
    run, out, _ = mix_run
    got = Image.open(out / "gray.png")
    assert got.mode == "L"
    want = _to8(_net(run, _pil_lq(mix / "gray.jpg")).astype(np.float64) @ LUMA)
    np.testing.assert_array_equal(np.asarray(got), want)


def _pil_float_lq(planes: np.ndarray, scale: int = 4) -> np.ndarray:
    """16-bit planes upsampled as PIL float ('F') images, in [0, 1]."""
    h, w, _ = planes.shape
    up = [np.asarray(Image.fromarray(p.astype(np.float32), "F").resize((w * scale, h * scale), Image.BICUBIC))
          for p in np.moveaxis(planes, -1, 0)]
    return np.clip(np.stack(up, -1) / 65535, 0, 1)


def test_16bit_in_16bit_out(mix_run, mix):
    run, out, _ = mix_run
    g16 = np.asarray(Image.open(mix / "g16.png"), np.float64)
    got = Image.open(out / "g16.png")
    assert got.mode.startswith("I;16")
    sr = _net(run, _pil_float_lq(np.repeat(g16[..., None], 3, -1))).astype(np.float64)
    want = np.rint(np.clip(sr @ LUMA, 0, 1) * 65535)
    np.testing.assert_array_equal(np.asarray(got), want.astype(np.uint16))

    c16 = png_ref.read(mix / "c16.png")
    got = png_ref.read(out / "c16.png")
    assert got.dtype == np.uint16 and got.shape == (32, 32, 3)
    assert np.any(got % 257 != 0)  # really 16-bit, not 8-bit values scaled up
    want = np.rint(np.clip(_net(run, _pil_float_lq(c16)).astype(np.float64), 0, 1) * 65535).astype(np.uint16)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("sources", [["--checkpoint", "merged"],
                                     ["--sd-path", "sd-converted", "--osediff-ckpt", "osediff"]])
def test_converted_checkpoints_give_the_same_pixels(models, mix, mix_run, tmp_path, sources):
    _, mix_out, _ = mix_run
    argv = [a if a.startswith("--") else str(models / a) for a in sources]
    run = run_cli([*argv, "--input", str(mix / "rgb.png"), "--output", str(tmp_path)])
    assert run.rc == 0, run.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rgb.png")),
                                  np.asarray(Image.open(mix_out / "rgb.png")))


def test_plain_sd_checkpoint_is_not_taken_for_osediff(models, mix, tmp_path):
    run = run_cli(["--checkpoint", str(models / "sd-converted"), "--input", str(mix / "rgb.png"),
                   "--output", str(tmp_path / "out")])
    assert run.rc == 2 and "without OSEDiff weights" in run.stderr and str(models / "sd-converted") in run.stderr
    assert not (tmp_path / "out").exists()


def test_posterior_sample_is_seeded_per_image(models, mix, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png"):
        (src / name).write_bytes((mix / "rgb.png").read_bytes())
    run = run_cli([*_two_sources(models), "--input", str(src), "--output", str(tmp_path / "out"),
                   "--posterior", "sample", "--seed", "7"])
    assert run.rc == 0
    lq = _pil_lq(mix / "rgb.png")
    outs = [np.asarray(Image.open(tmp_path / "out" / n)) for n in ("a.png", "b.png")]
    for i, got in enumerate(outs):
        np.testing.assert_array_equal(got, _to8(_net(run, lq, jax.random.fold_in(jax.random.key(7), i))))
    assert np.abs(outs[0].astype(int) - outs[1]).max() > 0  # different keys, different samples
    assert np.abs(outs[0].astype(int) - _to8(_net(run, lq))).max() > 0  # not the posterior mean


def test_non_finite_output_is_reported(models, tmp_path):
    # adain's unbiased variance over a single pixel is undefined: 1x1 at --scale 1 gives NaN.
    Image.fromarray(np.array([[[200, 30, 90]]], np.uint8)).save(tmp_path / "one.png")
    run = run_cli([*_two_sources(models), "--input", str(tmp_path / "one.png"), "--output", str(tmp_path / "out"),
                   "--scale", "1"])
    assert run.rc == 1
    assert f"{tmp_path / 'one.png'}: the network's 1x1 output is not finite" in run.stderr
    assert not (tmp_path / "out" / "one.png").exists()


def test_missing_input_and_weights(models, tmp_path, capsys):
    assert upscale.main([*_two_sources(models), "--input", str(tmp_path / "missing.png"),
                         "--output", str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'missing.png'}: no such file" in capsys.readouterr().err
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "x.png")
    assert upscale.main(["--sd-path", str(models / "sd"), "--osediff-ckpt", str(tmp_path / "missing.pkl"),
                         "--input", str(tmp_path / "x.png"), "--output", str(tmp_path / "out")]) == 2
    assert "missing.pkl" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert upscale.main([*_two_sources(models), "--input", str(tmp_path / "empty"),
                         "--output", str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'empty'}: no images" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _one_image_folder(path: Path) -> Path:
    path.mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path / "a.png")
    return path


@pytest.mark.parametrize("inp,out", [("folder", "folder"), ("folder", "./folder/"), ("folder/a.png", "folder")])
def test_output_equal_to_input_folder_is_refused(models, tmp_path, monkeypatch, capsys, inp, out):
    before = _hashes(_one_image_folder(tmp_path / "folder"))
    monkeypatch.chdir(tmp_path)
    assert upscale.main([*_two_sources(models), "--input", inp, "--output", out]) == 2
    assert "is the input folder" in capsys.readouterr().err
    assert _hashes(tmp_path / "folder") == before


def test_command_exit_code(models, tmp_path):
    _one_image_folder(tmp_path / "folder")
    r = subprocess.run([sys.executable, "-m", "osediff_jax.upscale", *_two_sources(models), "--input", "folder",
                        "--output", "folder"], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "is the input folder" in r.stderr, r.stderr


def test_bfloat16_is_close_to_float32(models, mix, mix_run, tmp_path):
    _, mix_out, _ = mix_run
    run = run_cli([*_two_sources(models), "--input", str(mix / "rgb.png"), "--output", str(tmp_path),
                   "--dtype", "bfloat16"])
    assert run.rc == 0
    got = np.asarray(Image.open(tmp_path / "rgb.png"), np.float64)
    diff = np.abs(got - np.asarray(Image.open(mix_out / "rgb.png")))
    print(f"bfloat16 vs float32 on 8-bit output: mean {diff.mean():.2f}, max {diff.max():.0f} levels")
    assert diff.mean() <= 4 and diff.max() <= 32


def test_usage_errors():
    for argv in (["--input", "a", "--output", "b"], ["--checkpoint", "c", "--sd-path", "s", "--input", "a",
                                                     "--output", "b"],
                 ["--sd-path", "s", "--input", "a", "--output", "b"],
                 ["--checkpoint", "c", "--scale", "0", "--input", "a", "--output", "b"]):
        with pytest.raises(SystemExit) as e:
            upscale.parse_args(argv)
        assert e.value.code == 2
