"""The tabular report for people (markdown) and the same numbers as flat metrics for the experiment loggers."""

from __future__ import annotations

from typing import Any

from evaluation.stats import fmt

SETTING_NAMES = {"TRTR": "real only (TRTR)", "TSTR": "synthetic only (TSTR)", "TRSTR": "real + synthetic"}


def utility_rows(report: dict) -> list[list[str]]:
    """[learner, setting, AUC, accuracy] rows with intervals, for tables in markdown, terminal and W&B."""
    rows = []
    util = report["utility"]
    for learner in report["meta"]["learners"]:
        for setting, label in SETTING_NAMES.items():
            r = util[learner][setting]
            rows.append([learner, label, fmt(r["auc"]), fmt(r["accuracy"])])
    return rows


def to_markdown(report: dict) -> str:
    meta, util, fid, priv, qual = (report[k] for k in ("meta", "utility", "fidelity", "privacy", "quality"))
    n = meta["rows"]
    lines = [
        f"# Evaluation: {meta['task']} ({meta['target']})",
        "",
        f"Real train {n['real_train']:,} rows, real test {n['real_test']:,} rows (never seen by the generator), "
        f"synthetic {n['synthetic']:,} rows. {len(meta['seeds'])} seeds; mean [95% interval].",
        "",
        "## Utility: downstream model tested on real data",
        "",
        "| learner | trained on | AUC | accuracy |",
        "|---|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in utility_rows(report)],
        "",
    ]
    for learner in meta["learners"]:
        eff = util[learner]["augmentation_effect_auc"]
        lines.append(f"- {learner}: real+synthetic minus real-only AUC = {fmt(eff, 4)} -> **{eff['verdict']}**")
    lines += [
        "",
        f"Positive rate: real test {util['positive_rate_test']:.3f}, synthetic {util['positive_rate']['TSTR']:.3f}.",
        "",
        "## Fidelity (1 = identical distributions)",
        "",
        "| column shapes | column pair trends | overall |",
        "|---|---|---|",
        f"| {fid['column_shapes']:.3f} | {fid['column_pair_trends']:.3f} | {fid['overall']:.3f} |",
        "",
        "Worst columns: " + ", ".join(f"{c} {v:.3f}" for c, v in sorted(fid["per_column"].items(), key=lambda kv: kv[1])[:4]),
        "",
        "## Privacy",
        "",
        f"- Distance to closest training record, median: synthetic {priv['dcr_synthetic_median']:.3f} vs real holdout "
        f"{priv['dcr_holdout_median']:.3f} (ratio {priv['dcr_ratio']:.2f}; below 1 means closer to training rows "
        "than fresh real data is).",
        f"- Synthetic rows closer than the holdout's 5th percentile: {priv['share_closer_than_holdout_p5']:.1%} "
        f"(5% expected); exact copies of training rows: {priv['exact_copies']} "
        f"(holdout: {priv['holdout_exact_copies']}) of {priv['rows_compared']}.",
        f"- Real identifier values found in the synthetic table: **{priv['identifier_leaks_total']}** "
        f"{priv['identifier_values_found'] or ''}",
        "",
        "## Quality",
        "",
        f"- Values outside the real range: {qual['out_of_range_values']}; non-integers in integer columns: "
        f"{qual['non_integer_values']}; unseen categories: {qual['unseen_category_values']}; largest missing-rate "
        f"gap: {qual['max_null_rate_gap']:.3f}.",
        "",
    ]
    return "\n".join(lines)


def flat_metrics(report: dict) -> dict[str, float]:
    """Scalar metrics for logger.log_metrics: eval/<learner>/<setting>/auc and the headline fidelity/privacy."""
    out: dict[str, Any] = {}
    for learner in report["meta"]["learners"]:
        for setting in SETTING_NAMES:
            for metric, stat in report["utility"][learner][setting].items():
                if stat["mean"] is not None:
                    out[f"eval/{learner}/{setting}/{metric}"] = stat["mean"]
    for k in ("column_shapes", "column_pair_trends", "overall"):
        out[f"eval/fidelity/{k}"] = report["fidelity"][k]
    for k in ("dcr_ratio", "share_closer_than_holdout_p5", "identifier_leaks_total"):
        out[f"eval/privacy/{k}"] = report["privacy"][k]
    return out
