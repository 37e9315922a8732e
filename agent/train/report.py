"""Write an evaluation report as JSON, Markdown and a PNG plot."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["markdown_report", "write_report"]

TARGETS = {"shape": 0.97, "simd": 0.93, "kernel": 0.93, "gpu": 0.95}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_report(report: dict[str, Any]) -> str:
    """The report's tables: one per split, one row per method."""
    lines = ["# edgetune evaluation", "",
             f"Datasets: {', '.join(report['datasets'])}. Training and replay of all folds took "
             f"{report['wall_s']:.0f} s (summed over folds).", "",
             "Best-of-k is the geometric mean over held-out cases of optimum / best among the first k "
             "configurations a method evaluates (1.0 = it found the measured optimum). "
             "Evals to 95%/99% is the median number of evaluations until one reaches that share of the "
             "optimum (table size + 1 where never), with the share of cases that reached it. "
             "Random search is its exact expectation; exhaustive search needs every row to know it has the "
             "optimum, so it has no best-of-k.", ""]
    for fold in report["folds"]:
        lines.append(f"- fold `{fold['name']}`: trained on {fold['train_cases']} cases, tested on "
                     + ", ".join(f"{n} {s}" for s, n in fold["test_cases"].items()))
    for split, data in report["splits"].items():
        target = TARGETS.get(split)
        lines += ["", f"## {split}: {data['description']}", ""]
        if target:
            lines.append(f"Target: student Q4 best-of-5 >= {target}.")
            lines.append("")
        lines += ["| method | cases | best-of-1 | best-of-3 | best-of-5 | evals to 95% | reached | evals to 99% "
                  "| reached | ms per case |", "|---|---|---|---|---|---|---|---|---|---|"]
        methods = sorted(data["methods"].items(), key=lambda item: -(item[1].get("best_of_5") or 0))
        for method, s in methods:
            lines.append(f"| {method} | {s['cases']} | {_fmt(s['best_of_1'])} | {_fmt(s['best_of_3'])} | "
                         f"{_fmt(s['best_of_5'])} | {_fmt(s['evals_to_0.95'], 1)} | {_fmt(s['reached_0.95'], 2)} | "
                         f"{_fmt(s['evals_to_0.99'], 1)} | {_fmt(s['reached_0.99'], 2)} | "
                         f"{_fmt(s['wall_ms_median'], 1)} |")
    lines += _ablation_lines(report) + _confidence_lines(report) + _policy_lines(report)
    if report.get("errors"):
        lines += ["", "## Failures", "", "A method that failed on a case is left out of that case's row above:", ""]
        lines += [f"- {e['fold']} / {e['split']} / {e['method']} on `{e['case']}`: {e['error']}"
                  for e in report["errors"]]
    return "\n".join(lines) + "\n"


def _ablation_lines(report: dict[str, Any]) -> list[str]:
    ablation = report.get("ablation")
    if not ablation:
        return []
    means = ablation["best_of_5"]
    return ["", "## Ablation: does the cost model help?", "",
            f"Pooled over {ablation['cases']} held-out cases (every split), geometric-mean best-of-5: "
            + ", ".join(f"{m} {_fmt(v)}" for m, v in means.items()) + ".",
            f"Rule fixed before the run: {ablation['rule']}. Verdict: "
            + ("**kept** (the agent re-ranks its candidates with it)." if ablation["use_cost_model"] else
               "**not kept** (the agent ranks by the student alone; the cost model only feeds confidence).")]


def _policy_lines(report: dict[str, Any]) -> list[str]:
    policy = report.get("policy")
    if not policy:
        return []
    lines = ["", "## Policy: which source ranks in which situation", "",
             f"The model is `{policy['model']}`. Per situation, the source with the highest pooled geometric-mean "
             "best-of-5 over the held-out cases of its splits ranks first on the device (`policy.json`); "
             "\"good\" is the share of those cases within 5% of the optimum, the confidence a device reports "
             "for a source other than the model. The choice is made on these same held-out cases, so the "
             "winner's figure is a little optimistic.", "",
             "| situation | splits | cases | chosen | model | reuse | cost-model | random |",
             "|---|---|---|---|---|---|---|---|"]
    for situation, evidence in policy["evidence"].items():
        cells = [f"{_fmt(evidence['best_of_5'].get(s))} ({_fmt(evidence.get('good', {}).get(s), 2)} good)"
                 if s in evidence["best_of_5"] else "-" for s in ("model", "reuse", "cost-model", "random")]
        lines.append(f"| {situation} | {', '.join(evidence['splits'])} | {evidence['cases']} | "
                     f"**{policy['choices'][situation]}** | " + " | ".join(cells) + " |")
    conf = policy.get("confidence")
    if conf:
        lines += ["", f"The confidence a device reports is its source's good share in its situation. Over the "
                  f"{conf['cases']} held-out cases with the policy applied ({conf['good_share']:.2f} good): Brier "
                  f"{conf['brier']:.3f} ({conf['brier_left_out']:.3f} with each case left out of its own share), "
                  f"against {conf['base_brier']:.3f} for the base rate; AUC {_fmt(conf['auc'])} (it tells the "
                  "situations apart, not cases within one)."]
    return lines


def _confidence_lines(report: dict[str, Any]) -> list[str]:
    conf = report.get("confidence")
    if not conf:
        return []
    overall = conf["all"]
    lines = ["", "## Confidence calibration", "",
             f"Method: {conf['method']}. A case is good when its best-of-5 reaches {conf['success_ratio']} of the "
             f"optimum. Probabilities are cross-fitted (the logistic model scoring a fold never saw it). The "
             f"threshold {conf['threshold']:.3f} is the lowest whose confident cases are at least "
             f"{conf['target_precision']:.0%} good; Brier score {conf['brier']:.3f}.", "",
             "| cases | good | called confident | good when confident | good when not confident |",
             "|---|---|---|---|---|"]
    for name, s in [("all", overall), *conf["per_split"].items()]:
        lines.append(f"| {name} ({s['cases']}) | {_fmt(s['good_share'], 2)} | {_fmt(s['confident_share'], 2)} | "
                     f"{_fmt(s['precision_when_confident'], 2)} | {_fmt(s['good_among_unconfident'], 2)} |")
    lines += ["", "Calibration curve (cross-fitted):", "", "| predicted bin | cases | mean predicted | observed good |",
              "|---|---|---|---|"]
    lines += [f"| {b['bin'][0]:.1f}-{b['bin'][1]:.1f} | {b['cases']} | {b['predicted']:.2f} | {b['observed']:.2f} |"
              for b in conf["curve"]]
    return lines


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(report["splits"])
    curve = report.get("confidence", {}).get("curve")
    panels = len(splits) + (1 if curve else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 4.5), squeeze=False)
    if curve:
        ax = axes[0][-1]
        ax.plot([0, 1], [0, 1], color="tab:gray", linestyle=":", linewidth=1)
        ax.plot([b["predicted"] for b in curve], [b["observed"] for b in curve], marker="o", color="tab:blue")
        for b in curve:
            ax.annotate(str(b["cases"]), (b["predicted"], b["observed"]), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")
        ax.axvline(report["confidence"]["threshold"], color="tab:red", linestyle="--", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(best-of-5 >= 95%)", ylabel="observed share")
        ax.set_title("confidence calibration (cross-fitted)", fontsize=9)
    for ax, split in zip(axes[0], splits, strict=False):
        methods = {m: v for m, v in report["splits"][split]["methods"].items() if v.get("best_of_5") is not None}
        names = sorted(methods, key=lambda m: -(methods[m].get("best_of_5") or 0))
        values = [methods[m].get("best_of_5") or 0 for m in names]
        colors = ["tab:blue" if m.startswith(("student", "teacher")) else "tab:gray" for m in names]
        ax.barh(range(len(names)), values, color=colors)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(min(0.5, min(values or [0.5])), 1.0)
        if split in TARGETS:
            ax.axvline(TARGETS[split], color="tab:red", linestyle="--", linewidth=1)
        ax.set_title(f"{split}: best-of-5 / optimum", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """``report.json`` (everything, per case too), ``report.md`` and ``report.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("report.json", json.dumps(report, indent=1, sort_keys=True) + "\n"),
                       ("report.md", markdown_report(report))):
        partial = out_dir / (name + ".partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, out_dir / name)
    _plot(report, out_dir / "report.png")
