"""The web demo (``free-atm demo``, ``app.py``): the Gradio page and the session behind it.

Needs the ``demo`` extra (``pip install "free-atm[demo]"``); the session alone needs only the library.
"""

from .session import DemoResult, DemoSession, parse_objects

__all__ = ["DemoResult", "DemoSession", "build_demo", "launch_demo", "parse_objects"]


def __getattr__(name: str):
    if name in ("build_demo", "launch_demo"):
        try:
            from . import app
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(
                f"the web demo needs Gradio ({error.name} is missing): pip install 'free-atm[demo]'"
            ) from error
        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
