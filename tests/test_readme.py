"""README's examples are tests: every shell and Python block of README.md runs, in README's order, in
one fresh working folder, with README's relative paths, against a random SD-shaped model and random
OSEDiff weights placed under the names README uses (`stable-diffusion-2-1-base/`, `osediff.pkl`).

Commands after a comment that says `[flags checked only]` (the real weights, a GPU, the network or
the test suite) are not run: their command and every flag they use must exist. `pip install`
steps are skipped everywhere: this environment is the installed one. README's first command (the
tiny training config, the repository's configs/ beside the examples as in a clone) runs here, so CI
runs it once.
"""

import ast
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from osediff_jax import convert, evaluate, train, upscale
from osediff_jax.training import checkpoints, config
from osediff_jax.weights import bundle, osediff_pkl, random_sd
from tests.references import SHARED

pytestmark = pytest.mark.reference  # osediff.pkl, the authors' format, is written with torch
ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"osediff_jax.convert": convert, "osediff_jax.evaluate": evaluate, "osediff_jax.train": train,
            "osediff_jax.upscale": upscale}
CHECK_ONLY = "[flags checked only]"


def blocks() -> list[tuple[int, str, str]]:
    """(line, language, text) of every fenced block of README.md."""
    text = (ROOT / "README.md").read_text()
    return [(text[:m.start()].count("\n") + 1, m.group(1), m.group(2))
            for m in re.finditer(r"^```(\w+)\n(.*?)^```", text, flags=re.S | re.M)]


def shell_commands(text: str) -> list[tuple[str, bool]]:
    """(command, check_only) for every command of a shell block, continuation lines joined; a
    comment with the marker marks the commands after it, until the next comment."""
    out, check_only = [], False
    for line in text.replace("\\\n", " ").splitlines():
        if line.startswith("#"):
            check_only = CHECK_ONLY in line
        elif line.strip():
            out.append((line.split(" # ")[0].strip(), check_only))
    return out


def _random_osediff_pkl(sd_folder: Path, dst: Path) -> None:
    """osediff.pkl in the authors' format with A and B random, as a trained file has them."""
    model = bundle.load(sd_folder, ("unet", "vae"))
    rng = np.random.default_rng(1)
    w = osediff_pkl.new(jax.random.key(0), model.params["unet"], model.params["vae"], model.params["unet"])
    noisy = lambda t: jax.tree.map(lambda a: (0.05 * rng.standard_normal(a.shape)).astype(np.float32) + a, t)
    osediff_pkl.write_pkl(osediff_pkl.OSEDiffWeights(noisy(w.unet_lora), noisy(w.vae_lora), w.conv_in, w.rank_unet,
                                                     w.rank_vae, w.unet_modules, w.vae_modules), dst)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """What README's examples expect to find beside them: the user's files, random where they
    would be weights, and ../shared (the RealSR images) as in a checkout of this project."""
    root = tmp_path_factory.mktemp("readme")
    work = root / "work"
    work.mkdir()
    (root / "shared").symlink_to(SHARED)
    (work / "configs").symlink_to(ROOT / "configs")
    random_sd.write_random_sd(work / "stable-diffusion-2-1-base")
    _random_osediff_pkl(work / "stable-diffusion-2-1-base", work / "osediff.pkl")
    rng = np.random.default_rng(0)
    (work / "photos").mkdir()
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(work / "photos" / name)
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(work / "photo.jpg")
    hr = sorted((SHARED / "data" / "realsr" / "HR").glob("*.png"))
    for folder, files in (("LSDIR/HR/0001000", hr[:3]), ("ffhq/00000", hr[3:5])):
        (work / folder).mkdir(parents=True)
        for f in files:
            (work / folder / f.name).symlink_to(f)
    return work


def _check_flags(command: str) -> None:
    """The command exists and knows every flag it is given."""
    argv = shlex.split(command)
    while re.match(r"^\w+=", argv[0]):  # VAR=value before the command
        argv = argv[1:]
    if argv[0] == "pip":
        return
    if argv[0] == "bash":
        assert subprocess.run(["bash", "-n", str(ROOT / argv[1])]).returncode == 0, command
        return
    assert argv[:2] == ["python", "-m"], command
    module, rest = argv[2], argv[3:]
    flags = {a.split("=")[0] for a in rest if a.startswith("--") and not a.startswith(config.PREFIX)}
    if module == "osediff_jax.train":  # --config.<field>=<value>: the config has the field and takes the value
        config.load(ROOT / rest[rest.index("--config") + 1], [a for a in rest if a.startswith(config.PREFIX)])
    if module == "pytest":
        assert all((ROOT / a).is_file() for a in rest if a.startswith("tests/")), command
        return
    if module in COMMANDS:
        parser = COMMANDS[module].build_parser()
        sub = next((a for a in parser._actions if a.dest == "command"), None)
        if sub is not None:
            parser = sub.choices[rest[0]]
        known = {s for a in parser._actions for s in a.option_strings}
    else:  # benchmarks: the flags their argparse declares, theirs and the shared harness's
        source = "".join((ROOT / "benchmarks" / f"{name}.py").read_text() for name in (module.split(".")[1], "harness"))
        known = set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", source))
    assert flags <= known, f"{command}: unknown flags {sorted(flags - known)}"


def _check_python(text: str) -> None:
    """Parses, and every name it imports from the package exists (a module or an attribute)."""
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.module.startswith("osediff_jax"):
            for alias in node.names:
                module = importlib.import_module(node.module)
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                    f"{node.module}.{alias.name}"


def test_readme_examples_run(work):
    ran, checked = [], []
    for line, lang, text in blocks():
        if lang == "bash":
            for command, check_only in shell_commands(text):
                if check_only:
                    for part in command.split("&&"):
                        _check_flags(part.strip())
                    checked.append(command)
                    continue
                command = " && ".join(p.strip() for p in command.split("&&") if not p.strip().startswith("pip "))
                r = subprocess.run(command, shell=True, cwd=work, capture_output=True, text=True,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
                assert r.returncode == 0, f"README line {line}: {command}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
                ran.append(command)
        elif lang == "python":
            _check_python(text)
            r = subprocess.run([sys.executable, "-c", text], cwd=work, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert r.returncode == 0, f"README line {line}:\n{text}\n{r.stderr[-3000:]}"
            ran.append(f"python block at line {line}")
    print(f"\nran {len(ran)}, checked {len(checked)} README examples")
    assert len(ran) >= 12 and len(checked) >= 8
    # What the examples say they leave behind.
    run = work / "tiny_run"
    assert checkpoints.read(run / "checkpoints")[0] == 300
    assert sorted(p.name for p in (run / "export" / "step_300").iterdir()) == ["merged", "osediff", "osediff.pkl"]
    assert sorted(p.name for p in (run / "validation").iterdir()) == ["step_150.png", "step_300.png"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert Image.open(run / "sample" / "sr.png").size == (64, 64) and Image.open(work / "tiny_x4" / "lq.png").size == (64, 64)
    assert sorted(p.name for p in (work / "photos_x4").iterdir()) == ["a.png", "b.png"]
    assert Image.open(work / "photos_x4" / "a.png").size == (96, 64)
    assert Image.open(work / "out" / "photo.png").size == (64, 48)
    assert (work / "osediff-again.pkl").is_file() and (work / "sd21-diffusers" / "model_index.json").is_file()
    assert '"psnr"' in (work / "metrics.json").read_text()
