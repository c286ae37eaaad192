"""The training loop of `python -m osediff_jax.train`: resume from the workdir, step, log, validate,
checkpoint and export.

    workdir/
      config.json        the resolved config of the latest start
      checkpoints/N/     Orbax checkpoints (train state + data iterator state), the last `keep`
      tensorboard/       event files: every loss term, gradient norms, lr, step time, images/s,
                         validation PSNR/SSIM/LPIPS and LQ | SR | HR strips
      validation/        the strips as step_N.png
      export/step_N/     osediff/, merged/, osediff.pkl (`export.py`)
      sample/            lq.png and sr.png: one validation image upscaled by the final model

Signals: SIGINT/SIGTERM that arrive during a step take effect after it (`signals_deferred`); the
loop then saves the state of the last completed step and re-raises. A non-finite metric stops the
run before anything is saved from the bad state: the last good checkpoint stays the latest.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from osediff_jax.data.hq_images import make_loader
from osediff_jax.files import images
from osediff_jax.files.atomic import signals_deferred, write_bytes
from osediff_jax.training import checkpoints, export, inputs, prompts, sharding, validation
from osediff_jax.training import config as config_lib
from osediff_jax.training.state import init_train_state
from osediff_jax.training.step import make_train_step


class NonFiniteError(RuntimeError):
    """A loss or gradient norm became NaN or Inf; the message names them and the kept checkpoint."""


class Trainer:
    """Everything a run holds; `run()` trains to `config.steps` from wherever the workdir stands."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path):
        self.config, self.workdir = config, workdir
        self.train_config = config_lib.train_config(config)
        self.main = jax.process_index() == 0
        # Everything the config points at is checked before anything is written.
        inputs.sd_folder(config)
        lpips = inputs.load_lpips(config)
        ram = inputs.load_ram(config)
        workdir.mkdir(parents=True, exist_ok=True)
        # Process 0 writes what every process then reads (the random model, the photographs, the
        # built dataset), while the others wait; with the real config they only check and read.
        if not self.main:
            sharding.barrier("inputs written")
        dataset = inputs.build_dataset(config, workdir)
        val_dirs = inputs.validation_dirs(config, workdir) if config.val.every else None
        self.model = inputs.load_model(config, workdir)
        if self.main:
            sharding.barrier("inputs written")
        self.mesh = sharding.make_mesh(config.fsdp)
        state, frozen = init_train_state(self.model, lpips, jax.random.key(config.seed), self.train_config)
        source = prompts.fixed_prompt
        if ram is not None:  # the authors' prompts: RAM's tags of each GT crop, encoded inside the step
            frozen = prompts.with_ram(frozen, ram[1], self.model.params["text_encoder"])
            source = prompts.ram_prompt(ram[0], self.model.modules["text_encoder"], self.model.tokenizer_dir)
        state_sh, frozen_sh = (sharding.shardings(tree, self.mesh, config.fsdp_min_size) for tree in (state, frozen))
        self.state, self.frozen = sharding.put(state, state_sh), sharding.put(frozen, frozen_sh)
        self.loader = iter(make_loader(dataset, config.batch_size, config.data.crop, seed=config.seed,
                                       num_threads=config.data.threads))
        self.ckpt = checkpoints.manager(workdir / "checkpoints", config.keep)
        if self.ckpt.latest_step() is not None:
            self.state, data_state = checkpoints.restore(self.ckpt, self.state)
            self.loader.set_state(data_state)
            self.log(f"resumed from {workdir / 'checkpoints'} at step {int(self.state['step'])}")
        self.step_fn = make_train_step(self.model.modules["unet"], self.model.modules["vae"],
                                       self.model.alphas_cumprod, self.train_config, source, mesh=self.mesh,
                                       state_shardings=state_sh, frozen_shardings=frozen_sh)
        if val_dirs is not None:
            degr = self.train_config.degradation
            self.val_set = validation.load_set(*val_dirs, config.val.crop, config.val.count, config.val.seed, degr)
            self.val_gen = validation.make_generator(self.model, self.train_config.rank)
            self.val_scores = validation.make_scorer(config.lpips_weights or None, config.random_lpips)
        # Imported here, after every check: tensorboardX imports torch when it is installed (1.5 s).
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(workdir / "tensorboard")) if self.main else None
        if self.main:
            write_bytes(workdir / "config.json", config_lib.to_text(config).encode())

    def log(self, line: str) -> None:
        if self.main:
            tqdm.write(line, file=sys.stderr)

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def save(self) -> None:
        if self.ckpt.latest_step() != self.step:
            checkpoints.save(self.ckpt, self.state, self.loader.get_state())

    def run(self) -> None:
        c = self.config
        start, consistent = self.step, True
        bar = tqdm(total=c.steps, initial=start, unit="step", disable=not self.main, dynamic_ncols=True,
                   smoothing=0.1)
        try:
            for step in range(start, c.steps):
                with signals_deferred():
                    t0 = time.perf_counter()
                    batch = sharding.global_batch(next(self.loader), self.mesh)
                    key = jax.random.fold_in(self.state["key"], step)
                    consistent = False  # the old state is donated to the step
                    if jax.process_count() > 1 and step == start:
                        # CPU collectives give processes 30 s to meet; compile first, then meet.
                        self.step_fn = sharding.compile_together(self.step_fn, self.state, self.frozen, batch, key)
                    self.state, metrics = self.step_fn(self.state, self.frozen, batch, key)
                    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
                    if bad:
                        kept = self.ckpt.latest_step()
                        raise NonFiniteError(
                            f"step {step + 1}: non-finite {', '.join(f'{k}={metrics[k]}' for k in bad)}; nothing saved "
                            f"from this state; the last good checkpoint is "
                            f"{'step ' + str(kept) if kept is not None else 'none'} in {self.workdir / 'checkpoints'} "
                            "(lower --config.train.learning_rate or --config.train.max_grad_norm and resume)")
                    consistent = True
                    dt = time.perf_counter() - t0
                    images_per_s = c.batch_size / dt
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", img_s=f"{images_per_s:.1f}", refresh=False)
                    done = step + 1
                    if self.main and (done % c.log_every == 0 or done == c.steps or done == start + 1):
                        scalars = {**metrics, "learning_rate": self.train_config.learning_rate, "step_time_s": dt,
                                   "images_per_s": images_per_s}
                        for k, v in scalars.items():
                            self.writer.add_scalar(f"train/{k}", v, done)
                    if done % c.checkpoint_every == 0:
                        self.save()
                    if c.val.every and done % c.val.every == 0 and done != c.steps:
                        self.validate()
                    if c.export_every and done % c.export_every == 0 and done != c.steps:
                        self.export()
            self.save()
        except BaseException as e:
            # Ctrl-C / SIGTERM (not an Exception): keep the last completed step.
            if not isinstance(e, Exception) and consistent:
                self.save()
            raise
        finally:
            bar.close()
            self.ckpt.wait_until_finished()
            if self.writer is not None:
                self.writer.flush()
        self.finish()

    def validate(self) -> None:
        scores, sr, strips = validation.run(self.val_gen, self.state["gen"], self.frozen, self.val_set,
                                            self.val_scores, self.train_config.degradation.scale,
                                            place=lambda x: sharding.put(x, sharding.replicated(self.mesh)))
        if not self.main:
            return
        for k, v in scores.items():
            self.writer.add_scalar(f"val/{k}", v, self.step)
        self.writer.add_image("val/lq_sr_hr", strips, self.step, dataformats="HWC")
        images.write_png(self.workdir / "validation" / f"step_{self.step}.png", strips)
        self.log(f"step {self.step} validation: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
                 + f" ({self.workdir / 'validation' / f'step_{self.step}.png'}: LQ | SR | HR)")
        self.last_sr = sr

    def export(self) -> None:
        folder = self.workdir / "export" / f"step_{self.step}"
        w = export.weights(self.state["gen"], self.model, self.train_config.rank)
        if self.main and not folder.exists():
            for line in export.export(w, self.model, folder):
                self.log(line)

    def finish(self) -> None:
        """The end of the run: validation, export and the sample image of the final model."""
        if self.config.val.every:
            self.validate()
            if self.main:
                images.write_png(self.workdir / "sample" / "lq.png", self.val_set.lq[0])
                images.write_png(self.workdir / "sample" / "sr.png", self.last_sr[0])
                self.log(f"sample: {self.workdir / 'sample'}/lq.png upscaled to sr.png")
        self.export()
        if self.writer is not None:
            self.writer.close()
        # Nobody leaves before process 0 has written the export: jax.distributed's shutdown would
        # otherwise time out waiting for it and abort it mid-write.
        sharding.barrier("finished")
