"""Results of an evaluation and the files written from them: a markdown table, CSV and JSON of every
number, a plot of accuracy against epsilon, and a grid of example images."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

FIELDS = (
    "model", "defense", "attack", "epsilon", "threat_model", "n", "correct", "accuracy", "ci_low", "ci_high",
    "mean_l2", "median_l2", "mean_linf", "defense_s_per_image", "attack_s",
)  # median_l2: over the images the attack changed


#: Confidence of the interval given with every accuracy.
CONFIDENCE = 0.95


def wilson_interval(correct: int, n: int, confidence: float = CONFIDENCE) -> Tuple[float, float]:
    """Wilson score interval of a binomial proportion ``correct / n`` (Wilson 1927): unlike the normal
    approximation it stays inside [0, 1] and does not shrink to a point at 0 or n correct, so a
    20-image result reads as what it is (17/20: 64% to 95%)."""
    if n < 1 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n >= 1, got {correct} of {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Results:
    records: List[Dict[str, Any]] = field(default_factory=list)
    meta: Dict[str, Any] = field(default_factory=dict)
    examples: Dict[str, dict] = field(default_factory=dict)

    def add(self, model: str, defense: str, attack: str, eps: Optional[float], threat_model: str, correct: int,
            x: torch.Tensor, adv: torch.Tensor, *, defense_s_per_image=None, attack_s=None) -> None:
        delta = (adv - x).flatten(1)
        l2 = delta.norm(dim=1)
        changed = l2[l2 > 0]  # images the attack perturbed (CW returns failures unchanged)
        self.records.append({
            "model": model, "defense": defense, "attack": attack, "epsilon": eps, "threat_model": threat_model,
            "n": len(x), "correct": correct, "accuracy": correct / len(x),
            **dict(zip(("ci_low", "ci_high"), wilson_interval(correct, len(x)))),
            "mean_l2": float(l2.mean()), "median_l2": float(changed.median()) if len(changed) else 0.0,
            "mean_linf": float(delta.abs().max(dim=1).values.mean()),
            "defense_s_per_image": defense_s_per_image, "attack_s": attack_s,
        })

    def accuracy(self, model: str, defense: str, attack: str = "clean", eps: Optional[float] = None,
                 threat_model: str = "-") -> float:
        """The accuracy of one cell (raises KeyError if it was not evaluated)."""
        for r in self.records:
            if (r["model"], r["defense"], r["attack"], r["threat_model"]) == (model, defense, attack, threat_model) \
                    and _same_eps(r["epsilon"], eps):
                return r["accuracy"]
        raise KeyError((model, defense, attack, eps, threat_model))

    # -- files ------------------------------------------------------------------------------------

    def write(self, out_dir: str) -> Dict[str, str]:
        """Write results.md, results.csv, results.json, accuracy_vs_epsilon.png and examples.png
        into ``out_dir`` (created); returns their paths. Existing files of those names are replaced,
        nothing else in the folder is touched."""
        os.makedirs(out_dir, exist_ok=True)
        paths = {kind: os.path.join(out_dir, name) for kind, name in (
            ("markdown", "results.md"), ("csv", "results.csv"), ("json", "results.json"),
            ("plot", "accuracy_vs_epsilon.png"), ("examples", "examples.png"))}
        with open(paths["markdown"], "w") as f:
            f.write(self.markdown())
        with open(paths["csv"], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(self.records)
        with open(paths["json"], "w") as f:
            json.dump({"meta": self.meta, "records": self.records}, f, indent=1)
        self.plot(paths["plot"])
        if self.examples:
            self.plot_examples(paths["examples"])
        else:
            del paths["examples"]
        return paths

    def markdown(self) -> str:
        """One table per model and threat model: a row per defense, clean accuracy, defense cost, and
        adversarial accuracy per attack and budget (DeepFool/CW: accuracy and median L2), each
        accuracy with its 95% Wilson interval in brackets."""
        out = []
        for model in _unique(r["model"] for r in self.records):
            info = self.meta.get("tasks", {}).get(model, {})
            out.append(f"### {model}: {info.get('n', '?')} images\n\n{info.get('description', '')}\n")
            for label, why in self.meta.get("skipped", {}).get(model, {}).items():
                out.append(f"Skipped {label}: {why}\n")
            rows = [r for r in self.records if r["model"] == model]
            defenses = _unique(r["defense"] for r in rows)
            for tm in _unique(r["threat_model"] for r in rows if r["threat_model"] != "-"):
                cols = _unique((r["attack"], r["epsilon"]) for r in rows if r["threat_model"] == tm)
                short = _short_names(a for a, _ in cols)
                header = ["defense", "clean", "ms/img"] + [_column(short[a], e) for a, e in cols]
                out.append(f"{tm}:\n")
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "---|" * len(header))
                for d in defenses:
                    clean = _find(rows, d, "clean", None, "-")
                    cells = [d, _pct(clean), f"{1e3 * clean['defense_s_per_image']:.3g}" if clean and clean["defense_s_per_image"] is not None else ""]
                    for a, e in cols:
                        r = _find(rows, d, a, e, tm)
                        cell = _pct(r)
                        if r is not None and e is None:
                            cell += f" (L2 {r['median_l2']:.2f})"
                        cells.append(cell)
                    out.append("| " + " | ".join(cells) + " |")
                out.append("")
            attacks = _unique(r["attack"] for r in rows if r["attack"] != "clean")
            if any(_short_names(attacks)[a] != a for a in attacks):
                out.append("Attacks: " + ", ".join(f"`{a}`" for a in attacks) + ".\n")
        if self.records:
            out.append(f"Accuracies in %, with their {100 * CONFIDENCE:g}% Wilson intervals in brackets.\n")
        if "seconds" in self.meta:
            out.append(f"Total time: {self.meta['seconds']:.0f} s.\n")
        return "\n".join(out)

    def plot(self, path: str) -> None:
        """Accuracy against epsilon, one line per defense with its 95% Wilson band; a panel per model x
        budgeted attack x threat model (epsilon 0 is the clean accuracy with the defense)."""
        plt = _pyplot()
        panels = _unique((r["model"], r["attack"], r["threat_model"]) for r in self.records if r["epsilon"] is not None)
        cols = max(1, min(4, len(panels)))
        rows = max(1, -(-len(panels) // cols))
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
        for ax, (model, attack, tm) in zip(axes.flat, panels):
            for d in _unique(r["defense"] for r in self.records if r["model"] == model):
                pts = sorted((r["epsilon"], r["accuracy"], *wilson_interval(r["correct"], r["n"])) for r in self.records
                             if (r["model"], r["defense"], r["attack"], r["threat_model"]) == (model, d, attack, tm))
                clean = _find([r for r in self.records if r["model"] == model], d, "clean", None, "-")
                if clean is not None:
                    pts = [(0.0, clean["accuracy"], *wilson_interval(clean["correct"], clean["n"]))] + pts
                if pts:
                    eps, acc, low, high = (np.array(v) for v in zip(*pts))
                    line, = ax.plot(eps, 100 * acc, marker="o", label=d)
                    ax.fill_between(eps, 100 * low, 100 * high, color=line.get_color(), alpha=0.12, linewidth=0)
            ax.set_title(f"{model}\n{attack}, {tm}", fontsize=9)
            ax.set_xlabel("epsilon (L-inf)")
            ax.set_ylabel("accuracy %")
            ax.set_ylim(-2, 102)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        if panels:
            axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def plot_examples(self, path: str, amplify: Optional[float] = None) -> None:
        """Per model, a row per image: clean, adversarial (gray-box), |adversarial - clean| x
        ``amplify`` (default 1 / epsilon: the budget shows as white), then the adversarial image after
        each defense; titles give the predictions."""
        plt = _pyplot()
        rows = []
        for model, ex in self.examples.items():
            for i in range(len(ex["labels"])):
                rows.append((model, ex, i))
        ncols = 3 + max(len(ex["defended"]) for ex in self.examples.values())
        fig, axes = plt.subplots(len(rows), ncols, figsize=(1.9 * ncols, 2.1 * len(rows)), squeeze=False)
        for r, (model, ex, i) in enumerate(rows):
            eps = ex["epsilon"]
            gain = amplify or (1.0 / eps if eps else 10.0)
            diff = np.clip(np.abs(ex["adversarial"][i] - ex["clean"][i]) * gain, 0, 1)
            panels = [
                ("clean", ex["clean"][i], ex["clean_pred"][i]),
                (f"{ex['attack']} {_eps_text(eps)}", ex["adversarial"][i], ex["adversarial_pred"][i]),
                (f"|diff| x{gain:.3g}", diff, None),
            ] + [(d, img[i], ex["defended_pred"][d][i]) for d, img in ex["defended"].items()]
            for c in range(ncols):
                ax = axes[r, c]
                ax.axis("off")
                if c >= len(panels):
                    continue
                title, img, pred = panels[c]
                chw = np.asarray(img)
                ax.imshow(chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
                mark = "" if pred is None else f"\npred {pred} (label {ex['labels'][i]})"
                ax.set_title((f"{model}: " if c == 0 else "") + title + mark, fontsize=6)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _unique(items):
    seen = []
    for it in items:
        if it not in seen:
            seen.append(it)
    return seen


def _same_eps(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) < 1e-12)


def _find(rows, defense, attack, eps, tm):
    for r in rows:
        if (r["defense"], r["attack"], r["threat_model"]) == (defense, attack, tm) and _same_eps(r["epsilon"], eps):
            return r
    return None


def _pct(r) -> str:
    if r is None:
        return ""
    low, high = wilson_interval(r["correct"], r["n"])
    return f"{100 * r['accuracy']:.1f} [{100 * low:.0f}, {100 * high:.0f}]"


def _eps_text(eps) -> str:
    if eps is None:
        return ""
    k = eps * 255
    if eps < 0.1 and abs(k - round(k)) < 1e-6 and round(k) > 0:
        return f"{round(k)}/255"
    return f"{eps:g}"


def _short_names(labels) -> Dict[str, str]:
    """Attack labels -> column names: the attack's name without its parameters where that is unique."""
    labels = _unique(labels)
    base = {a: a.split(":", 1)[0] for a in labels}
    counts = {b: list(base.values()).count(b) for b in base.values()}
    return {a: base[a] if counts[base[a]] == 1 else a for a in labels}


def _column(attack: str, eps) -> str:
    return attack if eps is None else f"{attack} {_eps_text(eps)}"
