"""Operating on stored objects from scripts, tests and tools.

:mod:`roost.admin.inspect` lists and inspects objects and deletes one object's
storage (``roost objects`` is built on it); see ``docs/operations.md``.
"""

from .inspect import (
    ObjectInfo,
    ObjectNotFound,
    ObjectPage,
    ObjectView,
    TableInfo,
    delete_object,
    list_objects,
    render_value,
    show_object,
    value_to_json,
)

__all__ = [
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectPage",
    "ObjectView",
    "TableInfo",
    "delete_object",
    "list_objects",
    "render_value",
    "show_object",
    "value_to_json",
]
