"""The tier boundary on a GPU: fastrnn forced onto the persistent tier, forced onto the
cooperative tier, and nn.RNN (cuDNN), at hidden sizes where both tiers can run, so
launch.MAX_PERSISTENT_H is set from measurement.  Each contender is validated against
float64 nn.RNN first (fastrnn.bench.measure.validate), then timed with the contenders
alternated.  Prints a markdown table; --json writes every number.

    python tools/gpu_tier_ab.py --json gpu-results/tiers.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from fastrnn.bench.contenders import make_contenders
from fastrnn.bench.measure import ValidationError, time_contenders, validate
from fastrnn.bench.shapes import Shape
from fastrnn.triton import launch

# (dtype, shape) at the tier boundary: fp32 at H=128, the persistent tier's largest;
# fp16 at H=256, where both tiers compile within the GPU's limits.
CASES = [
    (torch.float32, Shape("single-step", 1, 1, 64, 128)),
    (torch.float32, Shape("small", 100, 32, 64, 128)),
    (torch.float32, Shape("long-B1", 1000, 1, 64, 128)),
    (torch.float16, Shape("medium", 100, 64, 256, 256)),
    (torch.float16, Shape("bi2L", 100, 32, 128, 256, layers=2, bidirectional=True)),
    (torch.float16, Shape("bigbatch", 100, 1024, 128, 256)),
]
TIERS = ("persistent", "cooperative")


def on_tier(contender, tier: str):
    """The fastrnn contender with every call forced onto `tier`."""

    def run(x, module=contender.module):
        launch.FORCE_TIER = tier
        try:
            return module(x)
        finally:
            launch.FORCE_TIER = None

    return dataclasses.replace(contender, name=tier, run=run)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda")
    rows = []
    print("| dtype | shape | mode | persistent ms | cooperative ms | cuDNN ms |")
    print("|---|---|---|---|---|---|")
    for dtype, shape in CASES:
        for mode in ("inference", "training"):
            fast, cudnn = make_contenders(shape, device, dtype, ["fastrnn", "nn.RNN"])
            contenders = [on_tier(fast, tier) for tier in TIERS] + [cudnn]
            row = {"dtype": str(dtype), "shape": dataclasses.asdict(shape), "mode": mode}
            try:
                validate(contenders, shape, mode, device, dtype)
            except ValidationError as error:
                row["error"] = str(error)
                print(f"| {dtype} | {shape.name} | {mode} | ABORTED: {error} |||", flush=True)
                rows.append(row)
                continue
            timings = time_contenders(contenders, shape, mode, device, dtype, args.repeats, 0.02)
            row["timings"] = timings
            ms = [f"{timings[name]['median_s'] * 1e3:.3f}" for name in (*TIERS, "nn.RNN")]
            print(f"| {dtype} | {shape.name} | {mode} | {' | '.join(ms)} |", flush=True)
            rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(device), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
