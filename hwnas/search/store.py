"""A search's output folder: config, candidates.jsonl, history, report split, pareto.json (append as we go, resume)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from hwnas.errors import SearchError

# ---------------------------------------------------------------------------- output folder
CANDIDATES_FILE = "candidates.jsonl"
HISTORY_FILE = "history.jsonl"
CONFIG_FILE = "config.json"
PARETO_FILE = "pareto.json"
REPORT_FILE = "report.jsonl"  # report-split accuracy of the front and the full model, appended as measured
REMEASURE_FILE = "remeasured.json"  # final interleaved latency of the front and the full model
SCREEN_FILE = "generation_screen.jsonl"  # generation check of front records before their report split
# What must match for --resume to continue a folder (evaluations may grow).
IDENTITY_KEYS = ("model_sha256", "space", "tasks", "limit", "metric", "target", "latency_source", "objectives",
                 "constraints", "strategy", "seed", "population")


class SearchStore:
    """The --out folder: checks before anything is written, appends as it goes."""

    def __init__(self, out: str | Path):
        self.out = Path(out)

    @classmethod
    def prepare(cls, out: str | Path, identity: Mapping[str, Any], resume: bool) -> "SearchStore":
        """Raise SearchError (touching nothing) unless `out` can be started or resumed with `identity`."""
        store = cls(out)
        p = store.out
        if p.exists() and not p.is_dir():
            raise SearchError(f"--out {p} exists and is not a folder")
        nonempty = p.is_dir() and any(p.iterdir())
        if not resume:
            if nonempty:
                raise SearchError(f"--out {p} is not empty; pass --resume to continue that search or choose a new folder")
            return store
        if not (p / CONFIG_FILE).is_file():
            if nonempty:
                raise SearchError(f"--resume: {p} holds no {CONFIG_FILE}, so it is not a search folder")
            return store  # nothing to resume: a fresh start
        old = store.read_config().get("identity", {})
        for k in IDENTITY_KEYS:
            if k in identity and k in old and _canon(old[k]) != _canon(identity[k]):
                raise SearchError(
                    f"--resume: {p} was searched with a different {k} "
                    f"({_short(old[k])} there, {_short(identity[k])} now); use the same settings or a new --out"
                )
        return store

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads((self.out / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise SearchError(f"cannot read {self.out / CONFIG_FILE}: {e}") from None

    def write_config(self, doc: Mapping[str, Any]) -> None:
        from hwnas.io import write_json_atomic

        write_json_atomic(self.out / CONFIG_FILE, dict(doc))

    def _load_jsonl(self, name: str) -> list[dict[str, Any]]:
        """Read a JSONL file and drop a torn last line for good, so later appends start clean."""
        from hwnas.io import read_jsonl, write_text_atomic

        path = self.out / name
        if not path.exists():
            return []
        try:
            recs = read_jsonl(path)
        except json.JSONDecodeError as e:
            raise SearchError(f"{path} is corrupt (line {e.lineno}): {e.msg}") from None
        text = path.read_text(encoding="utf-8")
        clean = "".join(json.dumps(r) + "\n" for r in recs)
        if text != clean and not text.endswith("\n"):
            write_text_atomic(path, clean)
        return recs

    def load_records(self) -> list[dict[str, Any]]:
        recs, seen = [], set()
        for r in self._load_jsonl(CANDIDATES_FILE):
            if r["key"] not in seen:  # defensive: never count a subnet twice
                seen.add(r["key"])
                recs.append(r)
        return recs

    def load_history(self) -> list[dict[str, Any]]:
        return self._load_jsonl(HISTORY_FILE)

    def load_reports(self) -> dict[str, dict[str, Any]]:
        return {r["key"]: r["report"] for r in self._load_jsonl(REPORT_FILE)}

    def load_screens(self) -> dict[str, dict[str, Any]]:
        return {r["key"]: r["screen"] for r in self._load_jsonl(SCREEN_FILE)}

    def append_screen(self, key: str, screen: Mapping[str, Any]) -> None:
        from hwnas.io import append_jsonl

        append_jsonl(self.out / SCREEN_FILE, {"key": key, "screen": dict(screen)})

    def load_remeasured(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads((self.out / REMEASURE_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def write_remeasured(self, data: Mapping[str, Any]) -> None:
        from hwnas.io import write_json_atomic

        write_json_atomic(self.out / REMEASURE_FILE, dict(data))

    def append_report(self, key: str, report: Mapping[str, Any]) -> None:
        from hwnas.io import append_jsonl

        append_jsonl(self.out / REPORT_FILE, {"key": key, "report": dict(report)})

    def append_record(self, rec: Mapping[str, Any]) -> None:
        from hwnas.io import append_jsonl

        append_jsonl(self.out / CANDIDATES_FILE, dict(rec))

    def append_history(self, line: Mapping[str, Any]) -> None:
        from hwnas.io import append_jsonl

        append_jsonl(self.out / HISTORY_FILE, dict(line))

    def write_pareto(self, front: Sequence[Mapping[str, Any]]) -> None:
        from hwnas.io import write_json_atomic

        write_json_atomic(self.out / PARETO_FILE, [dict(r) for r in front])


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= 40 else s[:37] + "..."


