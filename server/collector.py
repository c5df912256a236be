"""The cyclic garbage collector in a serving process.

What a server holds once its models are loaded (torch, transformers, the models' modules and
tokenizers: millions of objects) lives as long as the process, yet every full collection walked all of
it: 200-250 ms with all-MiniLM-L6-v2 loaded, every few seconds under load, stalling the event loop and
every request in flight (it was the p99 of short requests). Frozen after loading, those objects are
left out of collections, which then walk only what requests make.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("embedserve.host")


def freeze_loaded_objects() -> None:
    """Collects what loading left behind, then freezes the rest (gc.freeze): once, when the models are in."""
    gc.collect()
    gc.freeze()
    log.info("objects frozen for the collector", extra={"objects": gc.get_freeze_count()})
