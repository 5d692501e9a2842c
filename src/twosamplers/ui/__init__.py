"""`twosamplers ui`: the web canvas (Gradio, the optional `[ui]` extra). Widgets and events in app.py; the page's
logic without Gradio in the modules handlers.py gathers; the page's job, its render and its mask view in
render.py (the job layer's `prepare_job` -> `render` -> `write_outputs`, as the CLI runs them)."""
