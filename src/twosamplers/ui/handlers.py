"""The page's logic without Gradio (what app.py's events call, and the tests drive), one module per concern:
`fields` (the page's fields <-> a job dict), `lines` (LoRA / ControlNet lines), `canvas` (canvas layers and
uploads -> masks, the overlay), `png_load` ("Load settings from PNG"), `models` (the models folder's pickers),
`confine` (what a page request may name), `values` (numbers, labels, one-line errors). `render` holds the
process's model cache: the page's job, its render and its mask view."""

from .canvas import *  # noqa: F403
from .confine import *  # noqa: F403
from .fields import *  # noqa: F403
from .lines import *  # noqa: F403
from .models import *  # noqa: F403
from .png_load import *  # noqa: F403
from .values import *  # noqa: F403
