"""Progress for the command line: one tqdm bar per stage (read, segment, export)."""

from __future__ import annotations

from tqdm import tqdm

STAGES = {"read": "reading frames", "segment": "segmenting", "export": "writing masks"}


class TqdmProgress:
    def __init__(self) -> None:
        self._bar: tqdm | None = None
        self._stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=total, desc=STAGES.get(stage, stage), unit="frame")
        self._bar.update(done - self._bar.n)  # tqdm redraws at most every 0.1 s
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._stage = None, None
