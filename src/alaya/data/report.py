"""The curation report: per-stage counts with removal reasons, token shares by language and type (pie
charts like the published ones), quality-score and length histograms, mixture achieved vs target."""
from __future__ import annotations

from pathlib import Path


def _pie(ax, values: dict, title: str) -> None:
    items = [(k, v) for k, v in sorted(values.items(), key=lambda kv: -kv[1]) if v > 0]
    if not items:
        ax.set_axis_off()
        return
    total = sum(v for _, v in items)
    big = [v / total >= 0.03 for _, v in items]  # slices under 3 % go to the legend only: their labels would overlap
    wedges, *_ = ax.pie([v for _, v in items], labels=[k if b else "" for (k, _), b in zip(items, big)],
                        autopct=lambda p: f"{p:.1f}%" if p >= 3 else "", startangle=90, counterclock=False,
                        textprops={"fontsize": 8})
    if not all(big):
        ax.legend(wedges, [f"{k} {100 * v / total:.1f} %" for k, v in items], loc="center left",
                  bbox_to_anchor=(0.95, 0.5), fontsize=7, frameon=False)
    ax.set_title(title)


def _short(n: int) -> str:
    """10, 100, 1k, 10k, 100k, 1M, 10M."""
    for div, unit in ((10**6, "M"), (10**3, "k")):
        if n >= div:
            return f"{n // div}{unit}"
    return str(n)


def _charts(rep: Path, stats: dict) -> None:
    """shares.png (token shares by language and type) and histograms.png (quality score, document length)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    decades = [i for i, e in enumerate(edges) if e >= 10 and str(e).rstrip("0") == "1"]  # 10, 100, 1000, ...
    axes[-1].set_xticks(decades, [_short(edges[i]) for i in decades], fontsize=7)
    axes[-1].set_title("document length")
    axes[-1].set_xlabel("characters (bin's lower edge)")
    axes[-1].set_ylabel("documents")
    fig.tight_layout()
    fig.savefig(rep / "histograms.png")
    plt.close(fig)


def write_report(out: Path, summary: dict, stats: dict, mixture: dict | None) -> Path:
    """``mixture`` None: no document was left (the report says which stage removed the last ones)."""
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    _charts(rep, stats)
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
    controlled = mixture.get("types_controlled", True)
    lines += ["", "| type (natural language) | available | target | achieved |", "|---|---:|---:|---:|"]
    for t in sorted(set(mixture["target"]["type"]) | set(mixture["achieved"]["type_of_natural_language"])):
        target = f"{100 * mixture['target']['type'].get(t, 0):.1f} %" if controlled else "—"
        lines.append(f"| {t} | {100 * mixture['available']['type_of_natural_language'].get(t, 0):.1f} % | {target} | "
                     f"{100 * mixture['achieved']['type_of_natural_language'].get(t, 0):.1f} % |")
    if not controlled:
        lines += ["", "The types have no target in this mixture (`type: available`): each language's share is spread "
                  "over its types in proportion to their tokens, so the achieved type shares follow the languages' "
                  "weights (a language with much news and a large share raises news above its share of what is "
                  "available)."]
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
