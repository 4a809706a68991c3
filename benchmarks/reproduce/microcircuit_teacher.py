"""Teacher-student regression with dendritic cortical microcircuits, next to backprop.

Published experiment (Sacramento et al. 2018, Fig. 2; spec microcircuit.md §4, numbers unverified):
a student microcircuit learns to reproduce a random teacher network of the same effective
architecture (the map ``u_k = c_k Wpp_k phi(u_{k-1})`` that a self-predicting microcircuit computes
without target, spec §1.5), with learning curves close to backprop's.

Stand-in here (CPU, about a minute): teacher = the effective network of a microcircuit 30-20-10
with softplus ``phi`` and synaptic weights ``Wpp ~ N(0, 4/fan_in)`` (seed 1000 + seed); inputs
``x ~ N(0, I)``, 1000 train / 500 test samples, targets = the teacher's output potentials. Students
start from one ``Network.init([30, 20, 10], softplus, linear, init="normal")`` per seed and are
trained with ``refimpl.train.compare`` (SGD lr 0.1, batch 32, mse, same initial weights for every
rule):

* ``bp``: backprop;
* ``mc``: ``Microcircuit()`` at the paper's conductances (lam_out = 0.42, transposed top-down,
  lateral weights in the self-predicting state of the current weights, ``lateral="ideal"``);
* ``mc_weak``: lam_out = 0.01 (the theorem's regime; updates are rescaled by 1/(alpha_k lam_out));
  its limit is BP with the output error weighted by phi'(u_N) (the output cells' rate is phi(u_N));
* ``mc_weak_linear_out``: lam_out = 0.01 with a linear output rate: its limit is BP itself;
* ``mc_random_td``: fixed random top-down weights (the feedback-alignment variant);

Not in the default list: lateral weights that *follow* the changing forward weights only through
the two lateral rules (``Microcircuit(lateral="plastic", eta_pi=eta, eta_ip=eta)``, one free-phase
step per batch). At this forward learning rate they lag: eta = 0.1 ended at test mse 1.15 / 16.2 /
1.26 (seeds 0, 1, 2; seed 1 did not learn), eta = 0.5 lost the stable fixed point (seed 1), and
random initial lateral weights (0.1 N(0, 1/fan_in)) lost it within the first epoch. Reproduce with
``--plastic ETA``.

All microcircuits solve the steady state to residual 1e-10 with damping 0.7 (defaults 1e-14, 0.5).

Output: ``<out>/results.json`` (every epoch of every rule and seed), ``<out>/table.md``,
``<out>/learning_curves.png`` (test mse per epoch, mean over seeds, and the angle to BP's update).

Usage: ``python benchmarks/reproduce/microcircuit_teacher.py [--epochs 20] [--seeds 0,1,2] [--out DIR]``
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np

import refimpl as ri
from refimpl import train as T
from refimpl.data import Dataset
from refimpl.rules.microcircuit import Microcircuit, effective_network

SIZES = (30, 20, 10)


def teacher_data(seed: int, n_train: int = 1000, n_test: int = 500) -> Dataset:
    """Inputs N(0, I) labelled by the effective network of a random softplus microcircuit."""
    gen = np.random.default_rng(1000 + seed)
    wpp = [2.0 * gen.standard_normal((SIZES[i + 1], SIZES[i])) / math.sqrt(SIZES[i]) for i in range(len(SIZES) - 1)]
    teacher = effective_network(Microcircuit(), wpp, "softplus")
    x = gen.standard_normal((n_train + n_test, SIZES[0]))
    y = np.asarray(teacher(x))
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], 0, "regression",
                   f"microcircuit teacher {list(SIZES)} (seed {1000 + seed})")


def rules() -> dict:
    weak = 0.01 * (0.1 + 1.0) / (1 - 0.01)  # g_som giving lam_out = 0.01
    fast = dict(tol=1e-10, damping=0.7)  # solver: residual <= 1e-10 is plenty for training
    return {
        "bp": ri.rules.BP(loss="mse"),
        "mc": Microcircuit(**fast),
        "mc_weak": Microcircuit(g_som=weak, **fast),
        "mc_weak_linear_out": Microcircuit(g_som=weak, output_rate="linear", **fast),
        "mc_random_td": Microcircuit(top_down="random", **fast),
    }


def _mean(vals):
    vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.mean(vals) if vals else math.nan


def _ms(vals, fmt="{:.4f}"):
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return fmt.format(vals[0])
    return (fmt + " ± " + fmt).format(statistics.mean(vals), statistics.stdev(vals))


def plot(results, keys, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {k: f"C{i}" for i, k in enumerate(keys)}
    for key in keys:
        runs = [r["rules"][key] for r in results if key in r["rules"] and r["rules"][key]["epochs"]]
        if not runs:
            continue
        n = min(len(e["epochs"]) for e in runs)
        ep = list(range(0, n + 1))
        curve = [_mean([e["initial"]["test_loss"] for e in runs])] + \
                [_mean([e["epochs"][i]["test_loss"] for e in runs]) for i in range(n)]
        ax.semilogy(ep, curve, label=key, color=colours[key], lw=2 if key == "bp" else 1.5,
                    ls="--" if key == "bp" else "-")
        if key != "bp":
            ang = [_mean([_mean(e["epochs"][i]["angles"] or [math.nan]) for e in runs]) for i in range(n)]
            bx.plot(ep[1:], ang, label=key, color=colours[key])
    ax.set_xlabel("epoch")
    ax.set_ylabel("test mse (mean over seeds)")
    ax.set_title("teacher-student regression, 30-20-10 softplus")
    ax.legend()
    bx.set_xlabel("epoch")
    bx.set_ylabel("angle to BP's update (deg)")
    bx.set_title("angle to BP's update (mean over layers and batches)")
    bx.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--only", default=None, help="comma-separated rule keys")
    p.add_argument("--plastic", type=float, default=None,
                   help="also train lateral='plastic' microcircuits with this lateral learning rate")
    p.add_argument("--out", default=os.path.join("runs", "reproduce", "microcircuit_teacher"))
    a = p.parse_args(argv)
    seeds = tuple(int(s) for s in a.seeds.split(","))
    rs = rules()
    if a.plastic is not None:
        rs["mc_plastic"] = Microcircuit(lateral="plastic", eta_pi=a.plastic, eta_ip=a.plastic, lateral_steps=1,
                                        tol=1e-10, damping=0.7)
    if a.only:
        rs = {k: v for k, v in rs.items() if k in a.only.split(",")}
    os.makedirs(a.out, exist_ok=True)
    results = []
    t0 = time.perf_counter()
    for s in seeds:
        data = teacher_data(s)
        r = T.compare(rs, data, seed=s, hidden=SIZES[1:-1], activation="softplus", output_activation="linear",
                      init="normal", optimizer=ri.optim.SGD(lr=a.lr), epochs=a.epochs, batch_size=32, loss="mse")
        results.append(r)
        print(f"[seed {s}] " + ", ".join(
            f"{k} {e['epochs'][-1]['test_loss']:.4g}" if e["epochs"] else f"{k} -" for k, e in r["rules"].items()),
            flush=True)
    rows = []
    for key in rs:
        entries = [r["rules"][key] for r in results]
        last = [e["epochs"][-1] for e in entries if e["epochs"]]
        init = [e["initial"]["test_loss"] for e in entries]
        angs = [_mean(x["angles"] or [math.nan]) for x in last]
        rows.append({"rule": key, "initial_test_mse": _ms(init), "final_test_mse": _ms([x["test_loss"] for x in last]),
                     "final_train_mse": _ms([x["train_loss"] for x in last]),
                     "per_seed": [round(x["test_loss"], 5) for x in last],
                     "angle_deg_last_epoch": _ms(angs, "{:.1f}"),
                     "seconds": _ms([e.get("seconds") for e in entries], "{:.1f}"),
                     "errors": [e["error"] for e in entries if "error" in e]})
    lines = ["| rule | initial test mse | final test mse (mean ± std) | per seed | final train mse | "
             "angle to BP (deg, last epoch) | s per run |", "|" + "---|" * 7]
    for r in rows:
        lines.append(f"| {r['rule']} | {r['initial_test_mse']} | {r['final_test_mse']} | "
                     f"{', '.join(f'{v:.4f}' for v in r['per_seed'])} | {r['final_train_mse']} | "
                     f"{r['angle_deg_last_epoch']} | {r['seconds']} |")
        for e in r["errors"][:1]:
            lines.append(f"| {r['rule']} (error) | {e[:120]} | | | | | |")
    md = "\n".join(lines)
    T.write_metrics(os.path.join(a.out, "results.json"), {"rows": rows, "runs": results})
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(md + "\n")
    plot(results, list(rs), os.path.join(a.out, "learning_curves.png"))
    print(f"\n{a.epochs} epochs, SGD lr {a.lr}, batch 32, seeds {list(seeds)}")
    print(md)
    print(f"\n({time.perf_counter() - t0:.1f} s; written to {a.out}/)")
    return rows


if __name__ == "__main__":
    main()
