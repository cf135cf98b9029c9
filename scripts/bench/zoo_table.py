"""Markdown table of the block-family benchmark (bench_gpu.sh PARTS=zoo): tok/s and the ratio to GQA.

    python3 scripts/bench/zoo_table.py <OUT dir with zoo_*/summary.json>
"""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])
rows = {}
for f in sorted(out.glob("zoo_*/summary.json")):
    s = json.loads(f.read_text())
    rows[f.parent.name[4:]] = s
gqa = rows.get("gqa_shakespeare", {}).get("mean_tok_s")
print("| config | params | tok/s (bf16) | vs GQA | train loss @300 | wall |")
print("|---|---|---|---|---|---|")
for name, s in rows.items():
    tok = s.get("mean_tok_s") or 0
    ratio = f"{tok / gqa:.2f}x" if gqa else "-"
    print(f"| `{name}` | {s.get('params', 0) / 1e6:.1f}M | {tok:,.0f} | {ratio} | "
          f"{s.get('final_train_loss', float('nan')):.3f} | {s.get('wall_time_s', 0):.0f} s |")
