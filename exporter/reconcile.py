"""What a reload changes: jobs added, removed, changed or left alone."""

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Diff(Generic[T]):
    """New-side items added or changed, old-side items removed, and how many stayed equal."""

    added: list[T]
    removed: list[T]
    changed: list[T]
    unchanged: int

    @property
    def summary(self) -> dict[str, int]:
        """Counts for logs."""
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "changed": len(self.changed),
            "unchanged": self.unchanged,
        }


def diff(old: Mapping[Hashable, T], new: Mapping[Hashable, T]) -> Diff[T]:
    """Compare two keyed collections of jobs."""
    return Diff(
        added=[item for key, item in new.items() if key not in old],
        removed=[item for key, item in old.items() if key not in new],
        changed=[item for key, item in new.items() if key in old and old[key] != item],
        unchanged=sum(1 for key, item in new.items() if old.get(key) == item),
    )
