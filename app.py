"""The free-atm web demo as a Hugging Face Space runs it (``python app.py``).

The model is ``FREE_ATM_MODEL`` (default: the shipped shapes model; any value of ``free-atm generate --model``,
such as ``stable-diffusion-v1-5/stable-diffusion-v1-5``). A Space needs ``free-atm[demo]`` in its
``requirements.txt``.
"""

import os

from free_atm.demo import build_demo, launch_demo

demo = build_demo(os.environ.get("FREE_ATM_MODEL", "shapes"))

if __name__ == "__main__":
    launch_demo(demo, server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
