"""The gNB edge agent (MQTT ingestion, ONNX Runtime forecasts, local retraining).

Empty until its issue lands: nothing here is advertised by the ``fedge`` command yet.
"""

__all__: list[str] = []
