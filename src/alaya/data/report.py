"""The curation report: per-stage counts with removal reasons, token shares by language and type (pie
charts like the published ones), quality-score and length histograms, mixture achieved vs target."""
from __future__ import annotations

from pathlib import Path


def _pie(ax, values: dict, title: str) -> None:
    items = [(k, v) for k, v in sorted(values.items(), key=lambda kv: -kv[1]) if v > 0]
    if not items:
        ax.set_axis_off()
        return
    ax.pie([v for _, v in items], labels=[k for k, _ in items], autopct="%1.1f%%", startangle=90, counterclock=False,
           textprops={"fontsize": 8})
    ax.set_title(title)


def write_report(out: Path, summary: dict, stats: dict, mixture: dict | None) -> Path:
    """``mixture`` None: no document was left (the report says which stage removed the last ones)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    by_lang: dict[str, int] = {}
    by_type: dict[str, int] = {}
    for src, n in stats["tokens"].items():
        lang, _, typ = src.partition("-")
        by_lang[lang] = by_lang.get(lang, 0) + n
        if lang != "code":
            by_type[typ] = by_type.get(typ, 0) + n
    if by_lang:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), dpi=110)
        _pie(axes[0], by_lang, "tokens by language")
        _pie(axes[1], by_type, "natural-language tokens by type")
        fig.tight_layout()
        fig.savefig(rep / "shares.png")
        plt.close(fig)
    q = stats["quality_hist"]
    panels = 2 if sum(q) else 1  # no quality stage, no empty quality panel
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), dpi=110, squeeze=False)
    axes = axes[0]
    if panels == 2:
        axes[0].bar([(i + 0.5) / len(q) for i in range(len(q))], q, width=1 / len(q), color="#4c78a8")
        axes[0].set_title("quality score (meta.quality)")
        axes[0].set_xlabel("P(fit)")
    edges = stats["length_edges"]
    axes[-1].bar(range(len(edges)), stats["length_hist"], color="#f58518")
    axes[-1].set_xticks(range(0, len(edges), 4), [f"{edges[i]:,}" for i in range(0, len(edges), 4)], fontsize=7)
    axes[-1].set_title("document length")
    axes[-1].set_xlabel("characters (bin's lower edge)")
    axes[-1].set_ylabel("documents")
    fig.tight_layout()
    fig.savefig(rep / "histograms.png")
    plt.close(fig)

    lines = ["# Curation report", "", f"Engine: {summary['engine']}; {summary['documents_in']} documents in, "
             f"{summary['documents_out']} out; {summary['mb_in']} MB in {summary['seconds']} s "
             f"({summary['mb_per_s']} MB/s).", "", "## Stages", "",
             "| stage | in | kept | removed | quarantined | removals by reason | wall s |", "|---|---:|---:|---:|---:|---|---:|"]
    for m in summary["stages"]:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(m["reasons"].items(), key=lambda kv: -kv[1])) or "—"
        lines.append(f"| {m['stage']}{' (' + m['level'] + ')' if m.get('level') else ''} | {m['in']} | {m['kept']} | "
                     f"{m['removed']} | {m['quarantined']} | {reasons} | {m.get('wall_seconds', '—')} |")
    total = sum(stats["tokens"].values()) or 1
    lines += ["", f"## Tokens ({stats['token_count']})", "", "| source | documents | tokens | share |", "|---|---:|---:|---:|"]
    for src, n in stats["tokens"].items():
        lines.append(f"| {src} | {stats['documents'][src]} | {n} | {100 * n / total:.1f} % |")
    if mixture is None:
        lines += ["", "## Mixture", "", f"No mixture: {summary.get('empty_reason', 'no document was left')}.", "",
                  "![histograms](histograms.png)", ""]
        path = rep / "report.md"
        path.write_text("\n".join(lines), encoding="utf-8")
        return path
    lines += ["", "![shares](shares.png)", "", "## Mixture", "",
              f"Token budget {mixture['token_budget']:,} (no source repeated more than {mixture['max_epochs']} times).", "",
              "| language | available | target | achieved |", "|---|---:|---:|---:|"]
    for lang in sorted(set(mixture["target"]["lang"]) | set(mixture["achieved"]["lang"])):
        lines.append(f"| {lang} | {100 * mixture['available']['lang'].get(lang, 0):.1f} % | "
                     f"{100 * mixture['target']['lang'].get(lang, 0):.1f} % | {100 * mixture['achieved']['lang'].get(lang, 0):.1f} % |")
    lines += ["", "| type (natural language) | available | target | achieved |", "|---|---:|---:|---:|"]
    for t in sorted(set(mixture["target"]["type"]) | set(mixture["achieved"]["type_of_natural_language"])):
        lines.append(f"| {t} | {100 * mixture['available']['type_of_natural_language'].get(t, 0):.1f} % | "
                     f"{100 * mixture['target']['type'].get(t, 0):.1f} % | "
                     f"{100 * mixture['achieved']['type_of_natural_language'].get(t, 0):.1f} % |")
    lines += ["", "| source | sampling weight | epochs |", "|---|---:|---:|"]
    for src, w in mixture["weights"].items():
        lines.append(f"| {src} | {w:.4f} | {mixture['epochs'][src]:.3f} |")
    lines += ["", "![histograms](histograms.png)", ""]
    path = rep / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def report_folder(out: str | Path) -> Path:
    """Rewrite the report of a finished ``alaya data curate`` folder from its manifest, stats and mixture."""
    import json

    out = Path(out)
    files = {name: out / f"{name}.json" for name in ("manifest", "stats", "mixture")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{out}: not a finished `alaya data curate` folder (missing {', '.join(missing)})")
    summary, stats, mixture = (json.loads(files[n].read_text(encoding="utf-8")) for n in ("manifest", "stats", "mixture"))
    return write_report(out, summary, stats, mixture)
