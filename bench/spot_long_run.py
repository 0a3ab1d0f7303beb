"""The share of a stationary stream that SPOT flags, block by block over a long run.

Scores drawn i.i.d. (Gumbel: an exponential tail; lognormal: a heavier one) start a
plain SPOT state from 2,000 of them (``model.spot.fit_spot``, as a model's validation
tail starts its streams), then ``--points`` more are decided in order. On such a
stream every flag is a false one, so the share flagged is what a risk of ``--risk``
turns into over months of a 1-minute metric (50,000 points: ~35 days).

    .venv/bin/python bench/spot_long_run.py [--points 1000000] [--block 50000] [--risk 1e-3]
"""

from __future__ import annotations

import argparse

import numpy as np

from model.spot import fit_spot, run_spot

DRAWS = {
    "gumbel": lambda rng, n: rng.gumbel(size=n),
    "lognormal": lambda rng, n: rng.lognormal(sigma=0.5, size=n),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--block", type=int, default=50_000)
    parser.add_argument("--risk", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, draw in DRAWS.items():
        rng = np.random.default_rng(args.seed)
        state = fit_spot(draw(rng, 2_000), args.risk, 0)
        shares = []
        for _ in range(args.points // args.block):
            result = run_spot(state, draw(rng, args.block))
            state = result.state
            shares.append(result.flags.mean() / args.risk)
        print(f"{name}: share flagged per block of {args.block:,}, in multiples of the risk:")
        print("  " + " ".join(f"{share:.1f}" for share in shares))


if __name__ == "__main__":
    main()
