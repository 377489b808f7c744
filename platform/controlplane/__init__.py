"""The control plane: one FastAPI app over two backends (kubernetes, embedded).

`main.create_app` builds it; `routers/` hold one router per resource; `deps.py` the
dependencies (settings, backend, the caller and what the caller may touch); `backends/`
the two implementations of one interface.
"""
