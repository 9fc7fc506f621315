#!/usr/bin/env bash
# Mutation testing of the simulation core (sim/engine, sim/fleet, sim/cost.py, sim/metrics.py) with
# mutmut (configured in pyproject.toml, [tool.mutmut]): every mutant is run against the tests that
# cover the mutated function; prints the count by outcome and the kill rate.
#   pip install -e '.[mutation]' && bash benchmarks/mutation.sh        (about an hour on 2 cores)
#   bash benchmarks/mutation.sh --results                              (reprint the last run's table)
# Survivors: `mutmut results` lists them, `mutmut show NAME` shows one.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" != "--results" ]]; then
    rm -rf mutants
    mutmut run --max-children "${MUTMUT_CHILDREN:-2}" >/dev/null 2>&1 || true
fi
mutmut export-cicd-stats >/dev/null
python - <<'PY'
import json
from pathlib import Path

stats = json.loads(Path("mutants/mutmut-cicd-stats.json").read_text())
for key, value in stats.items():
    print(f"{key:>12}: {value}")
decided = stats["killed"] + stats["survived"]
print(f"kill rate: {stats['killed']}/{decided} = {stats['killed'] / decided:.1%} of mutants with a verdict")
PY
