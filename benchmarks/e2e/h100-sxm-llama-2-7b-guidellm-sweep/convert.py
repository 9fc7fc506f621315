"""Write requests.jsonl from the run's vLLM OpenTelemetry request traces (`traces.json.gz`, unchanged).

vLLM 0.11.0 (`--otlp-traces-endpoint`) exports one `llm_request` span per finished request: the span starts at the
request's arrival in the engine and ends when it finishes; its attributes give the prompt and completion token counts
and the engine's TTFT, E2E and time in queue. So, on the engine's clock (seconds from the first arrival):
queued_ts = span start, scheduled_ts = queued_ts + time_in_queue, first_token_ts = queued_ts + TTFT,
last_token_ts = queued_ts + E2E (the span's end agrees with it to within 2.2 ms).

    python benchmarks/e2e/h100-sxm-llama-2-7b-guidellm-sweep/convert.py
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _spans() -> list[dict[str, float | int | str]]:
    rows: list[dict[str, float | int | str]] = []
    for line in gzip.decompress((HERE / "traces.json.gz").read_bytes()).decode().splitlines():
        if not line.strip():
            continue
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                for span in scope["spans"]:
                    a = {x["key"]: next(iter(x["value"].values())) for x in span["attributes"]}
                    rows.append(
                        {
                            "id": a["gen_ai.request.id"],
                            "start_ns": int(span["startTimeUnixNano"]),
                            "end_ns": int(span["endTimeUnixNano"]),
                            "ttft": float(a["gen_ai.latency.time_to_first_token"]),
                            "e2e": float(a["gen_ai.latency.e2e"]),
                            "queue": float(a["gen_ai.latency.time_in_queue"]),
                            "input": int(a["gen_ai.usage.prompt_tokens"]),
                            "output": int(a["gen_ai.usage.completion_tokens"]),
                        }
                    )
    return sorted(rows, key=lambda r: r["start_ns"])


def main() -> None:
    rows = _spans()
    t0 = int(rows[0]["start_ns"])
    worst = max(abs((int(r["end_ns"]) - int(r["start_ns"])) / 1e9 - float(r["e2e"])) for r in rows)
    print(
        f"{len(rows)} requests over {(int(rows[-1]['end_ns']) - t0) / 1e9:.1f} s; span end vs E2E: at most {worst * 1e3:.1f} ms apart"
    )
    with (HERE / "requests.jsonl").open("w") as out:
        for r in rows:
            q = (int(r["start_ns"]) - t0) / 1e9
            row = {
                "request_id": r["id"],
                "input_toks": r["input"],
                "output_toks": r["output"],
                "arrival_time": int(r["start_ns"]) / 1e9,
                "queued_ts": round(q, 6),
                "scheduled_ts": round(q + float(r["queue"]), 6),
                "first_token_ts": round(q + float(r["ttft"]), 6),
                "last_token_ts": round(q + float(r["e2e"]), 6),
            }
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
