"""Run ComfyUI workflows headless: `twosamplers.workflow.run(workflow, models=..., overrides=...)`.

- `formats`: API / UI format and PNG / WebP reading, UI -> API conversion;
- `registry`: the supported node types (ComfyUI name -> node class);
- `graph`: checks before anything runs, and the run order;
- `execute`: running the nodes and writing the outputs.
"""

from ..nodes.registry import ALIASES, IN_PROGRESS, NODES, node_list_markdown, out_of_scope_markdown
from .errors import WorkflowError
from .execute import apply_overrides, load, run
from .formats import Workflow, ui_to_api

__all__ = ["ALIASES", "IN_PROGRESS", "NODES", "Workflow", "WorkflowError", "apply_overrides", "load",
           "node_list_markdown", "out_of_scope_markdown", "run", "ui_to_api"]
