"""The central service (registry, rounds on a SuperLink, decisions API).

Only the decision serving has landed: :class:`DecisionService` answers strategic power
modes and tactical slice shares from ONNX policies, without importing torch.
"""

from coordinator._decisions import DecisionService, StrategicDecision, TacticalDecision

__all__ = ["DecisionService", "StrategicDecision", "TacticalDecision"]
