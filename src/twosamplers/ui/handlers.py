"""The page's logic without Gradio (what app.py's events call and the tests drive), one module per concern:

- `fields`: the page's fields <-> a job dict (validated by the job layer), kept fields;
- `lines`: LoRA / ControlNet text lines <-> job entries, the pickers' "add";
- `canvas`: canvas layers and uploads -> masks (the one mask reader), editor values, the overlay;
- `png_load`: "Load settings from PNG";
- `models`: the models folder's pickers (the workflow runner's listing rule);
- `confine`: what a page request may name (the page's own files), the page's saved uploads;
- `values`: widget values as numbers, the page's labels and one-line errors;
- `render` (not gathered here: it holds the process's model cache): the page's job, its render and mask view.
"""

from .canvas import (  # noqa: F401
    REGION_COLOURS,
    blank_canvas,
    canvas_masks,
    editor_background,
    editor_value,
    eight_bit,
    fit_mask,
    layer_mask,
    mask_image,
    overlay,
    uploaded_mask,
)
from .confine import confine_settings, page_file, page_inputs, save_input  # noqa: F401
from .fields import (  # noqa: F401
    FIELDS,
    KEPT_KEYS,
    MAX_REGIONS,
    MODES,
    REGIONAL_ALGORITHMS,
    UI_MASK_NAME,
    default_fields,
    fields_to_settings,
    kept_line,
    kept_settings,
    model_field,
    random_seed,
    settings_to_fields,
)
from .lines import (  # noqa: F401
    CONTROLNET_LINE,
    LORA_LINE,
    add_controlnet_line,
    add_lora_line,
    controlnet_entries,
    controlnet_lines,
    lora_entries,
    lora_lines,
)
from .models import SAME_MODEL, home_short, model_choices, model_folders, own_model, scan_models  # noqa: F401
from .png_load import load_png_settings, own_image  # noqa: F401
from .values import UIError, error_message, label, number  # noqa: F401
