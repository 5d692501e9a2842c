"""`twosamplers ui`: the web canvas (Gradio, the optional `[ui]` extra). Layout in app.py, the testable
logic in handlers.py (no Gradio import), the one render path in render.py."""
