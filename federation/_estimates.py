"""The server's tracked error-feedback estimates (EF21), one per node, bounded in memory.

Each node that sent a tracked update has an estimate as large as the model. Held in a
dict they grow with every node a run ever sampled; here at most ``capacity`` stay in
memory (least recently used first out) and the others are spilled to a private
temporary directory and read back when their node is sampled again, so the feedback
stays exact and memory follows the nodes of a round, not the nodes of a run.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from fedge.federation._codec import Arrays

# About 170 KB per estimate for the reference forecaster: 256 is some 45 MB.
ESTIMATES_IN_MEMORY = 256


class EstimateStore:
    """``node -> (updates the estimate holds, estimate)``, an LRU over a spill directory."""

    def __init__(self, capacity: int = ESTIMATES_IN_MEMORY) -> None:
        if capacity < 1:
            raise ValueError(f"estimate capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._memory: OrderedDict[int, tuple[int, Arrays]] = OrderedDict()
        self._spilled: set[int] = set()
        self._counts: dict[int, int] = {}  # every node's count, spilled or not (an int each)
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __len__(self) -> int:
        return len(self._memory) + len(self._spilled)

    def count(self, node: int) -> int | None:
        """How many updates the node's estimate holds, without reading it back."""
        return self._counts.get(node)

    def in_memory(self) -> int:
        return len(self._memory)

    def _path(self, node: int) -> Path:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="fedge-estimates-")
        return Path(self._dir.name) / f"{node}.npz"

    def get(self, node: int) -> tuple[int, Arrays] | None:
        held = self._memory.get(node)
        if held is not None:
            self._memory.move_to_end(node)
            return held
        if node not in self._spilled:
            return None
        with np.load(self._path(node), allow_pickle=False) as z:
            count = int(z["seq"])
            arrays = [z[f"a{i}"] for i in range(len(z.files) - 1)]
        self._spilled.discard(node)
        self._path(node).unlink(missing_ok=True)
        self.put(node, (count, arrays))
        return count, arrays

    def put(self, node: int, value: tuple[int, Arrays]) -> None:
        if node in self._spilled:
            self._spilled.discard(node)
            self._path(node).unlink(missing_ok=True)
        self._memory[node] = value
        self._memory.move_to_end(node)
        self._counts[node] = value[0]
        while len(self._memory) > self.capacity:
            old, (count, arrays) = self._memory.popitem(last=False)
            named = {f"a{i}": a for i, a in enumerate(arrays)}
            np.savez(self._path(old), seq=np.int64(count), **named)  # type: ignore[arg-type]
            self._spilled.add(old)

    def pop(self, node: int) -> None:
        """Forget a node's estimate (its site starts over)."""
        self._memory.pop(node, None)
        self._counts.pop(node, None)
        if node in self._spilled:
            self._spilled.discard(node)
            self._path(node).unlink(missing_ok=True)
