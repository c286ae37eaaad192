"""Independent implementations that tests and benchmarks compare the package with: SD models built
with diffusers/transformers (`sd`), the authors' OSEDiff pipeline with peft (`osediff`), basicsr's
degradation (`degradation`). Each module imports its reference libraries (torch and others) itself;
this package holds only the path of the shared data."""

from pathlib import Path

# ../shared beside the repository: real photographs, the SD-2.1-base configs, the authors' logs.
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
