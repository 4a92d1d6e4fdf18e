import json
import sys
from pathlib import Path
runs, gens = Path(sys.argv[1]), Path(sys.argv[2])
out = {}
for run in sorted(p for p in runs.iterdir() if p.is_dir()):
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    rows = [json.loads(line) for line in lines if '"loss"' in line]
    curve = [[r["step"], round(r["loss"], 5), round(r["elapsed_s"], 1)]
             for r in rows if r["step"] % 500 == 0 or r is rows[-1]]
    entry = {"curve": curve}
    res = gens / run.name / "results.json"
    if res.is_file():
        data = json.loads(res.read_text())
        import statistics
        entry["results"] = {"generated": data["summary"]["generated"], "checkpoints": data["summary"]["checkpoints"],
                            "noise_matched": data["summary"].get("noise_matched"),
                            "novelty_median": statistics.median(data["novelty"]["generated"]),
                            "against_noise": data.get("against_noise")}
    if (run / "run.json").is_file():
        entry["sizing"] = json.loads((run / "run.json").read_text()).get("sizing")
    out[run.name] = entry
print(json.dumps(out, indent=1))
