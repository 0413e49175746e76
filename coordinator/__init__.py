"""The central service (registry, rounds on a SuperLink, decisions API).

Empty until its issue lands: nothing here is advertised by the ``fedge`` command yet.
"""

__all__: list[str] = []
