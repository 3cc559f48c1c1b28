"""Validation of the platform API's JSON; anything else is a `decode` failure."""

import functools
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from exporter.errors import CollectionError


class Item(BaseModel):
    """Base of API items: new fields the platform adds are ignored, wrong types are not."""

    model_config = ConfigDict(extra="ignore", frozen=True)


T = TypeVar("T", bound=Item)


class Agent(Item):
    """An agent."""

    id: str
    name: str
    pool: str
    status: str
    last_heartbeat_at: datetime | None = None
    version: str | None = None


class Process(Item):
    """A process."""

    id: str
    name: str
    enabled: bool


class Schedule(Item):
    """A schedule of a process."""

    id: str
    name: str
    process_id: str
    cron: str
    enabled: bool
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    last_run_status: str | None = None


class Run(Item):
    """A run of a process."""

    id: str
    process_id: str
    schedule_id: str | None = None
    agent_id: str | None = None
    status: str
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime


class Page(BaseModel):
    """One page of a list endpoint."""

    model_config = ConfigDict(extra="ignore")

    items: list[dict[str, Any]]
    next_page_token: str | None = None


def parse_page(endpoint: str, body: object) -> Page:
    """Check a page's envelope, or fail the poll with reason `decode`."""
    try:
        return Page.model_validate(body)
    except ValidationError as exc:
        raise CollectionError("decode", f"{endpoint}: not a page: {_first(exc)}") from None


def parse_items(endpoint: str, model: type[T], items: list[dict[str, Any]]) -> list[T]:
    """Validate every item, or fail naming the endpoint, the item's index and its bad field."""
    try:
        return _list_of(model).validate_python(items)
    except ValidationError as exc:
        problem = _first(exc, ("items",))
        raise CollectionError("decode", f"{endpoint}: invalid item: {problem}") from None


@functools.cache
def _list_of(model: type[T]) -> TypeAdapter[list[T]]:
    # One validation of the whole page instead of one call per item: a third of the time.
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def _first(exc: ValidationError, within: tuple[str, ...] = ()) -> str:
    """The first error as `items[3].status: message` (list indexes in brackets)."""
    error = exc.errors(include_input=False, include_url=False)[0]
    where = ""
    for part in (*within, *error["loc"]):
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    return f"{where or 'body'}: {error['msg']}"
