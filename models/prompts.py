"""Named prompts (prefixes put before a text), as a model folder or its settings declare them."""

from __future__ import annotations

from collections.abc import Mapping

from embedserve.models.errors import InvalidInput
from embedserve.models.types import ModelInfo


def prompt_text(info: ModelInfo, name: str | None) -> str:
    """The prefix for a prompt name; with no name (None or ""), the model's default prompt (or none)."""
    if not name:
        default = info.default_prompt
        return info.prompts.get(default, "") if default else ""
    if name not in info.prompts:
        known = ", ".join(sorted(info.prompts)) or "none"
        raise InvalidInput(f"model {info.id!r} has no prompt {name!r}; its prompts: {known}", param="prompt_name")
    return info.prompts[name]


def merged_prompts(folder: Mapping[str, str] | None, settings: Mapping[str, str]) -> dict[str, str]:
    """The folder's named prompts (empty ones dropped: they mean "no prompt") with the model's settings
    added over them."""
    return {**{name: text for name, text in (folder or {}).items() if text}, **settings}


PROMPTS_FOR_TASK: Mapping[str, tuple[str, ...]] = {
    "search_query": ("query", "search_query", "Retrieval-query"),
    "search_document": ("document", "passage", "search_document", "Retrieval-document"),
    "classification": ("classification", "Classification"),  # EmbeddingGemma capitalizes its task names
    "clustering": ("clustering", "Clustering"),
}
"""The names models give their prompts for each task (Cohere's input types), most usual first."""


def prompt_for_task(prompts: Mapping[str, str], task: str) -> str | None:
    """The name of the model's prompt for `task` (a key of PROMPTS_FOR_TASK); None where it has none."""
    return next((name for name in PROMPTS_FOR_TASK[task] if name in prompts), None)
