"""Per-file VUS-PR of the LSTM-VAE against the best published method, as a PNG.

    .venv/bin/python bench/plot_quality.py var/evaluate/summary.csv \
        ../shared/data/tsbad-m/published_vus_pr.csv docs/quality-per-file.png
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

METHOD_COLUMNS_END = "ts_len"  # published_vus_pr.csv: method columns come before this one


def main(summary: str, published: str, out: str) -> None:
    ours = pd.read_csv(summary).set_index("file")
    table = pd.read_csv(published).set_index("file")
    methods = list(table.columns[: list(table.columns).index(METHOD_COLUMNS_END)])
    table = table.loc[ours.index, methods]
    best = table.max(axis=1)
    best_name = table.idxmax(axis=1)
    labels = [f"{f.split('_')[1]} {f.split('_')[3]}" for f in ours.index]
    x = np.arange(len(ours))
    fig, ax = plt.subplots(figsize=(12, 4.5))
    ax.bar(x - 0.2, ours["vus_pr"], 0.4, label="lvad (LSTM-VAE)")
    ax.bar(x + 0.2, best, 0.4, label="best of 23 published methods")
    for i, name in enumerate(best_name):
        ax.text(x[i] + 0.2, best.iloc[i] + 0.01, name, rotation=90, fontsize=6, ha="center")
    ax.set_xticks(x, labels, rotation=70, fontsize=7)
    ax.set_ylabel("VUS-PR")
    ax.set_ylim(0, 1.15)
    ax.set_title("Per-file VUS-PR on the shared TSB-AD files (TSB-AD protocol)", pad=28)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main(*sys.argv[1:4])
