"""The dependency-free core: what several layers share, with numpy at most."""
