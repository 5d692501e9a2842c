# ruff: noqa: I001  (comfy_env must be imported before any ComfyUI module)
"""The names of ComfyUI 0.30.0's own node types (nodes.py and comfy_extras, no API nodes, no custom nodes), one a
line, for src/twosamplers/data/comfy_core_nodes.txt: refusals tell a core node we do not run from a third-party
one. Only the registered names are kept (facts, not code).

    source ../shared/comfy/env.sh
    (cd tests/comfy_oracle && comfy_python core_node_names.py ../../src/twosamplers/data/comfy_core_nodes.txt)
"""

import asyncio
import sys

import comfy_env  # noqa: F401
import nodes


def main(out_path):
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    names = sorted(nodes.NODE_CLASS_MAPPINGS)
    with open(out_path, "w") as f:
        f.write("# ComfyUI 0.30.0's node types (nodes.py + comfy_extras); made by "
                "tests/comfy_oracle/core_node_names.py\n")
        f.write("".join(n + "\n" for n in names))
    print(len(names), "names")


if __name__ == "__main__":
    main(sys.argv[1])
