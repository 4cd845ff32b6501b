"""Config dataclasses whose field names follow a diffusers model's config.json, convertible both ways."""

import dataclasses
from typing import Any, ClassVar


class DiffusersConfig:
  """Mixin for frozen dataclass configs mirroring a diffusers config.

  DIFFUSERS_CLASS names the diffusers model; DIFFUSERS_FIXED lists diffusers fields we do not model and accept only
  at the given values (with why, for the error); OWN_FIELDS are ours and absent from diffusers.
  """

  DIFFUSERS_CLASS: ClassVar[str]
  DIFFUSERS_FIXED: ClassVar[dict[str, Any]]
  FIXED_REASON: ClassVar[str]
  OWN_FIELDS: ClassVar[tuple[str, ...]]

  @classmethod
  def from_diffusers(cls, config: dict[str, Any], **overrides):
    """Builds a config from a diffusers config.json dict (private `_` keys ignored)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in config.items():
      if key.startswith("_"):
        continue
      if key in cls.DIFFUSERS_FIXED:
        if value != cls.DIFFUSERS_FIXED[key]:
          raise ValueError(f"diffusers {cls.DIFFUSERS_CLASS} config: {key}={value!r} (expected "
                           f"{cls.DIFFUSERS_FIXED[key]!r}); {cls.FIXED_REASON}")
        continue
      if key not in fields:
        raise ValueError(f"diffusers config: unknown field {key!r}; is this a {cls.DIFFUSERS_CLASS} config?")
      kwargs[key] = value
    return cls(**{**kwargs, **overrides})

  def to_diffusers(self) -> dict[str, Any]:
    """The diffusers config dict of this model."""
    config = {k: list(v) if isinstance(v, tuple) else v
              for k, v in dataclasses.asdict(self).items() if k not in self.OWN_FIELDS}
    return {"_class_name": self.DIFFUSERS_CLASS, **config, **self.DIFFUSERS_FIXED}
