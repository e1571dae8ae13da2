"""L5, a face: the magics, the panel, background cells, display and previews, the grid view. Faces use
Flux / AsyncFlux and engine events, never the engine's internals.
"""
