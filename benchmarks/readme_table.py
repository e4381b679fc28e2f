"""The README's headline speed table, from a ``python -m fastgan bench`` results.json.

    python benchmarks/readme_table.py bench-results/results.json

One row per case: eager, torch.compile and fastgan's fastest implementation of that case that was
checked against eager and matched (its name in parentheses) with the ratios. A compile that failed
prints ``fails``, one not measured ``-``. An implementation that did not match is never picked;
where the only ones left are unchecked (the bench does not compare them: finite differences on a
LeakyReLU critic, the approximated R1, a different penalty) the row says "unchecked".
The first line names the machine, commit and date the results carry.
"""
import json
import sys


def fmt_t(s):
    return f"{s * 1e3:.1f} ms" if s >= 1e-3 else f"{s * 1e6:.0f} µs"


def table(data):
    m = data["machine"]
    cases = {}
    for r in data["rows"]:
        cases.setdefault((r["op"], r["shape"]), {})[r["impl"]] = r
    lines = [f"Machine: {m.get('cpu', '?')}, {m['threads']} threads, torch {m['torch']}; "
             f"commit {data['commit'][:7]}, {data['date'][:10]}.", "",
             "| op | shape | eager | torch.compile | fastgan | vs eager | vs compile |",
             "|---|---|---|---|---|---|---|"]
    for (op, shape), impls in cases.items():
        eager = impls.get("eager", {}).get("median_s")
        comp = impls.get("compile", {})
        ours = [r for name, r in impls.items() if name.startswith("fastgan:") and "median_s" in r]
        if eager is None:
            continue
        checked = [r for r in ours if r.get("matched") is True]
        unchecked = [r for r in ours if r.get("matched") is None]
        best = min(checked or unchecked, key=lambda r: r["median_s"]) if checked or unchecked else None
        c = comp.get("median_s")
        c_txt = fmt_t(c) if c else ("fails" if "failed" in str(comp.get("skipped", "")) else "-")
        if best is None:
            lines.append(f"| {op} | {shape} | {fmt_t(eager)} | {c_txt} | no matching fastgan result | - | - |")
            continue
        name = best["impl"].split(":", 1)[1] + ("" if checked else ", unchecked")
        vc = f"{c / best['median_s']:.2f}x" if c else "-"
        lines.append(f"| {op} | {shape} | {fmt_t(eager)} | {c_txt} | {fmt_t(best['median_s'])} ({name}) | "
                     f"{eager / best['median_s']:.2f}x | {vc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1] if len(sys.argv) > 1 else "bench-results/results.json") as f:
        print(table(json.load(f)))
