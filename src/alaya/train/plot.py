"""``alaya plot RUN_DIR``: the loss curve of a run as PNG, resume points marked (like the published
"Alaya Training Loss" figure): training loss per step (and its moving average), held-out loss, and a
dashed line where the run was resumed from a checkpoint."""
from __future__ import annotations

import json
from pathlib import Path


def read_metrics(run_dir: str | Path) -> tuple[list[dict], list[dict], list[dict]]:
    """(train steps, eval points, resume events) from metrics.jsonl; torn lines are skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics; is {run_dir} a run folder of `alaya pretrain`?")
    train, evals, resumes = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("event") == "resume":
            resumes.append(rec)
        elif "eval_loss" in rec:
            evals.append(rec)
        elif "loss" in rec:
            train.append(rec)
    if not train:
        raise ValueError(f"{path}: holds no training steps yet")
    return train, evals, resumes


def plot_run(run_dir: str | Path, output: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals, resumes = read_metrics(run_dir)
    output = Path(output) if output else Path(run_dir) / "loss.png"
    steps = [r["step"] for r in train]
    loss = [r["loss"] for r in train]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    ax.plot(steps, loss, color="#9bbbd9", linewidth=0.8, label="training loss")
    k = max(1, len(loss) // 50)
    if k > 1:
        smooth = [sum(loss[max(0, i - k + 1): i + 1]) / len(loss[max(0, i - k + 1): i + 1]) for i in range(len(loss))]
        ax.plot(steps, smooth, color="#1f5a96", linewidth=1.5, label=f"moving average ({k} steps)")
    if evals:
        # few held-out points are drawn as points: a line between two evaluations 600 steps apart says nothing
        style = "o-" if len(evals) > 4 else "o"
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], style, color="#d9662b",
                markersize=3 if len(evals) > 4 else 6, linewidth=1, label="held-out loss")
    for i, r in enumerate(resumes):
        ax.axvline(r["step"], color="grey", linestyle="--", linewidth=0.8, label="resumed" if i == 0 else None)
    ax.set_title("Alaya Training Loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(output)
    return output
