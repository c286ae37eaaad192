"""Train OSEDiff:

  python -m osediff_jax.train --config configs/tiny.py --workdir tiny_run [--config.steps=100 ...]

`--config` is a Python file with get_config() (configs/: tiny, gpu1, gpu24gb, a100x4); any field
is set with --config.<field>=<value> (--config.train.learning_rate=1e-4, --config.batch_size=8).
The run resumes from the latest checkpoint in --workdir; Ctrl-C or SIGTERM saves the current step
before exiting. Progress on screen, TensorBoard logs in WORKDIR/tensorboard, checkpoints in
WORKDIR/checkpoints, the exported model in WORKDIR/export/step_N.
"""

from __future__ import annotations

import argparse
import sys

from osediff_jax.cli.common import EXIT_CODES, OK, SOME_FAILED, USAGE, Interrupted, UsageError, check_writable_dir, \
    error, interrupts, user_path
from osediff_jax.training import sharding
from osediff_jax.training.config import ConfigError, load
from osediff_jax.training.loop import NonFiniteError, Trainer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m osediff_jax.train", description=__doc__,
                                     epilog=EXIT_CODES + "; 1 also when a loss becomes NaN/Inf (the last good "
                                     "checkpoint is kept)", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=user_path, help="the config file, e.g. configs/tiny.py; "
                        "then --config.<field>=<value> to change its fields")
    parser.add_argument("--workdir", required=True, type=user_path, help="folder of checkpoints, logs and "
                        "exports; a run resumes from it")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    sharding.initialize()  # jax.distributed, when launched as several processes (launch/)
    with interrupts() as check:
        trainer = None
        try:
            config = load(args.config, overrides)
            check_writable_dir(args.workdir)
            trainer = Trainer(config, args.workdir)
            trainer.run()
            check()
            return OK
        except (ConfigError, UsageError) as e:
            error(str(e))
            return USAGE
        except NonFiniteError as e:
            error(str(e))
            return SOME_FAILED
        except Interrupted as e:
            where = (f"saved step {trainer.step} in {args.workdir / 'checkpoints'}; run the same command to resume"
                     if trainer is not None else "nothing saved")
            print(f"interrupted ({e}); {where}", file=sys.stderr)
            return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
