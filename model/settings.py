"""Settings declared once: a setting is one dataclass field made by :func:`setting`, which holds its environment
name, default, parser, bounds and one-line doc. Everything else is derived from those declarations: reading
the environment (:func:`from_environ`), the bound checks (:func:`check_bounds`), ``.env.example`` and the
README's settings table (``python -m bot.config --write-docs``), and ``python -m model serve``'s flags
(:func:`add_flags`). Adding a setting is its declaration plus its one use.

:class:`ComputeSettings` are the settings the inference backends share: the bot's own scheduler reads them
from the bot's settings (``Settings`` extends this class), and the cluster's replicas from the serve
command's flags, which default from the same declarations. No torch here.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .choices import DEVICES, MAP_ENGINES, PRECISIONS, RUNTIMES
from .threads import available_cores


class SettingError(Exception):
    """A setting is missing or malformed; ``str(error)`` is one line that names the variable and says what to do."""


@dataclass(frozen=True)
class Declaration:
    """What a setting is, apart from its value (the dataclass field holds the default)."""

    env: str  # the environment variable (and .env key)
    doc: str  # one line: .env.example's comment, the README's meaning column
    parse: Callable[[str], Any]
    expected: str  # the parser's input in words, for the error message
    low: float | None = None  # bounds, inclusive
    high: float | None = None
    choices: tuple[str, ...] | None = None
    secret: bool = False  # never in repr, redacted from logs
    shown_default: str | None = None  # the README's default column where the default is computed or empty
    section: str = ""  # .env.example's heading
    positive: bool = False  # must be above 0


def parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def parse_auto_bool(raw: str) -> bool | None:
    return None if raw.lower() == "auto" else parse_bool(raw)


def parse_ids(raw: str) -> frozenset[int]:
    return frozenset(int(part) for part in re.split(r"[,\s]+", raw) if part)


_BY_TYPE: dict[type, tuple[Callable[[str], Any], str]] = {
    bool: (parse_bool, "1 or 0"), int: (int, "a whole number"), float: (float, "a number"), str: (str, "a string"),
    Path: (Path, "a path"),
}


def setting(default: Any = dataclasses.MISSING, *, env: str, doc: str, section: str = "",
            parse: Callable[[str], Any] | None = None, expected: str | None = None, low: float | None = None,
            high: float | None = None, choices: tuple[str, ...] | None = None, secret: bool = False,
            default_factory: Callable[[], Any] | None = None, shown_default: str | None = None,
            positive: bool = False) -> Any:
    """One declared setting (a dataclass field). ``parse`` defaults from the default's type; ``choices`` lower-case
    the value and allow only those."""
    sample = default_factory() if default_factory is not None else default
    if parse is None:
        if choices is not None:
            parse = str.lower
        elif isinstance(sample, (bool, int, float, str, Path)):
            parse = next(parser for kind, (parser, _) in _BY_TYPE.items() if isinstance(sample, kind))
        else:
            raise TypeError(f"{env}: give parse= (no parser for a default of {type(sample).__name__})")
    if expected is None:
        expected = (", ".join(choices) if choices else
                    next((words for kind, (_, words) in _BY_TYPE.items() if _BY_TYPE[kind][0] is parse), "a string"))
    declaration = Declaration(env, doc, parse, expected, low, high, choices, secret, shown_default, section, positive)
    extra = {"default_factory": default_factory} if default_factory is not None else {"default": default}
    return field(repr=not secret, metadata={"setting": declaration}, **extra)


def declaration(item: dataclasses.Field) -> Declaration:
    return item.metadata["setting"]


def declared_fields(cls) -> list[dataclasses.Field]:
    return [item for item in fields(cls) if "setting" in item.metadata]


def env_names(cls) -> dict[str, str]:
    """field name -> environment name, for every declared setting of ``cls``."""
    return {item.name: declaration(item).env for item in declared_fields(cls)}


def from_environ(cls, values: Mapping[str, str], **given: Any):
    """An instance of ``cls`` from environment-like ``values`` (blank values mean the default); raises
    :class:`SettingError` naming the variable for a value its parser refuses."""
    kwargs: dict[str, Any] = {}
    for item in declared_fields(cls):
        if item.name in given:
            continue
        what = declaration(item)
        raw = values.get(what.env)
        if raw is None or raw.strip() == "":
            continue
        try:
            kwargs[item.name] = what.parse(raw.strip())
        except ValueError:
            raise SettingError(f"{what.env}={'<hidden>' if what.secret else repr(raw)} is not valid ({what.expected})") from None
    return cls(**kwargs, **given)


def check_bounds(instance) -> None:
    """Every declared bound of ``instance``'s settings (None values are unset and pass)."""
    for item in declared_fields(type(instance)):
        what, value = declaration(item), getattr(instance, item.name)
        if value is None:
            continue
        if what.positive and value <= 0:
            raise SettingError(f"{what.env} must be positive")
        if what.choices is not None and value not in what.choices:
            raise SettingError(f"{what.env} must be one of {', '.join(what.choices)}")
        if what.low is not None and what.high is not None and not what.low <= value <= what.high:
            raise SettingError(f"{what.env} must be between {_number(what.low)} and {_number(what.high)}")
        if what.low is not None and value < what.low:
            raise SettingError(f"{what.env} must be at least {_number(what.low)}" if what.low else
                               f"{what.env} must not be negative")
        if what.high is not None and value > what.high:
            raise SettingError(f"{what.env} must be at most {_number(what.high)}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def shown_default(item: dataclasses.Field) -> str:
    """The default as the docs show it."""
    what = declaration(item)
    if what.shown_default is not None:
        return what.shown_default
    value = item.default
    if value is None or value == "" or value == frozenset():
        return "(none)"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def example_value(item: dataclasses.Field) -> str:
    """The default as a ``.env`` value (empty where it is computed or unset)."""
    what = declaration(item)
    value = item.default
    if what.shown_default is not None or value is None or value is dataclasses.MISSING or what.secret:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, frozenset):
        return ",".join(str(v) for v in sorted(value))
    return str(value)


def _default_decode_workers() -> int:
    # Decoding threads: PIL releases the GIL while decoding, but more threads than cores only adds contention.
    return min(4, available_cores())


COMPUTE = "Inference"


@dataclass(frozen=True)
class ComputeSettings:
    """The inference backends' settings: the bot's scheduler and the cluster's replicas read the same ones."""

    workers: int = setting(default_factory=_default_decode_workers, env="WORKERS", low=1, section=COMPUTE,
                           shown_default="min(4, cores)", doc="download/decode/preprocess threads")
    torch_threads: int = setting(default_factory=available_cores, env="TORCH_THREADS", low=1, section=COMPUTE,
                                 shown_default="cores", doc="torch intra-op threads (in a container: its --cpus)")
    classify_workers: int | None = setting(None, env="CLASSIFY_WORKERS", parse=int, expected="a whole number", low=1,
                                           section=COMPUTE, shown_default="`TORCH_THREADS`",
                                           doc="compute threads running classification batches side by side, one "
                                               "torch thread each (a lone photo gets them all); 1: one batch at a time "
                                               "on all threads")
    max_batch: int = setting(16, env="MAX_BATCH", low=1, section=COMPUTE,
                             doc="micro-batching: photos classified in one forward pass (in all the workers' passes at once)")
    max_batch_wait_ms: float = setting(10.0, env="MAX_BATCH_WAIT_MS", low=0, section=COMPUTE,
                                       doc="how long a batch may wait for photos still downloading or decoding (a photo "
                                           "that arrives alone never waits)")
    warm_up_batch: int | None = setting(None, env="WARM_UP_BATCH", parse=int, expected="a whole number", low=0,
                                        section=COMPUTE, shown_default="`MAX_BATCH`",
                                        doc="photos in the blank forward passes at start-up, before the bot polls, so "
                                            "the first burst runs at full speed; 0: none")
    frozen_graph: bool | None = setting(None, env="FROZEN_GRAPH", parse=parse_auto_bool, expected="auto, 1 or 0",
                                        section=COMPUTE, shown_default="`auto`",
                                        doc="classify with the network traced into one TorchScript graph: auto times it "
                                            "against the eager network at start-up and keeps the faster, 1 the graph, 0 eager")
    precision: str = setting("auto", env="PRECISION", choices=PRECISIONS, section=COMPUTE,
                             doc="fp32, bf16, or auto: bf16 only where the hardware runs it natively, a start-up probe "
                                 "agrees with fp32 and it is faster; logged with its reason, and in /stats")
    runtime: str = setting("auto", env="RUNTIME", choices=RUNTIMES, section=COMPUTE,
                           doc="what computes: torch, openvino, or auto (OpenVINO on a CPU where it is installed and "
                               "faster in the start-up probe)")
    device: str = setting("auto", env="DEVICE", choices=DEVICES, section=COMPUTE,
                          doc="cpu, cuda, or auto (CUDA when torch sees a GPU); cuda on a machine without one stops "
                              "with a clear message")
    map_engine: str = setting("auto", env="MAP_ENGINE", choices=MAP_ENGINES, section=COMPUTE,
                              doc="how an OpenVINO export computes the exact heat maps: batched whole-image passes, "
                                  "incremental (only the windows a patch changes, model/openvino_incremental.py), or auto "
                                  "(by measurement: bench/bench_ov_incremental.py)")
    queue_size: int = setting(128, env="QUEUE_SIZE", low=1, section=COMPUTE,
                              doc="requests in flight at most, then \"busy, try again in a minute\"")
    per_chat_queue: int = setting(20, env="PER_CHAT_QUEUE", low=1, section=COMPUTE,
                                  doc="requests in flight at most per chat")
    why_batch_size: int = setting(16, env="WHY_BATCH_SIZE", low=1, section="Heat maps (/why)",
                                  doc="patch positions per explainer batch: a heat map yields to waiting "
                                      "classifications between batches")
    why_queue_size: int = setting(8, env="WHY_QUEUE_SIZE", low=1, section="Heat maps (/why)",
                                  doc="heat maps waiting at most, then \"busy\"")
    explain_cache_size: int = setting(64, env="EXPLAIN_CACHE_SIZE", low=1, section="Heat maps (/why)",
                                      doc="finished heat maps kept, so a second /why answers at once")

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.classify_workers is not None and self.classify_workers > self.torch_threads:
            raise SettingError("CLASSIFY_WORKERS must be between 1 and TORCH_THREADS")

    @property
    def classify_worker_count(self) -> int:
        return self.torch_threads if self.classify_workers is None else self.classify_workers

    @property
    def warm_up_photos(self) -> int:
        return self.max_batch if self.warm_up_batch is None else self.warm_up_batch

    @property
    def max_batch_wait_s(self) -> float:
        return self.max_batch_wait_ms / 1000.0

    def compute(self) -> ComputeSettings:
        """Just the compute settings (of a subclass's instance: the bot's Settings)."""
        return ComputeSettings(**{item.name: getattr(self, item.name) for item in fields(ComputeSettings)})


def flag_name(env: str) -> str:
    return "--" + env.lower().replace("_", "-")


def add_flags(parser: argparse.ArgumentParser, cls=ComputeSettings, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per declared setting of ``cls`` (``MAX_BATCH`` -> ``--max-batch``), defaulting from the
    declarations; :func:`from_flags` builds the settings back."""
    for item in declared_fields(cls):
        what = declaration(item)
        if item.name in skip:
            continue
        parser.add_argument(flag_name(what.env), dest=f"setting_{item.name}", default=None, type=what.parse,
                            choices=what.choices, metavar=None if what.choices else what.env,
                            help=f"{what.doc} (default: {shown_default(item).strip('`')}; the bot's {what.env})")


def from_flags(args: argparse.Namespace, cls=ComputeSettings):
    """The settings of ``cls`` from flags added by :func:`add_flags` (unset flags: the declared defaults)."""
    given = {item.name: getattr(args, f"setting_{item.name}") for item in declared_fields(cls)
             if getattr(args, f"setting_{item.name}", None) is not None}
    return cls(**given)


def add_flag(parser: argparse.ArgumentParser, cls, name: str, help_prefix: str = "") -> None:
    """One declared setting of ``cls`` as a ``--flag`` (``MAX_BATCH`` -> ``--max-batch``, into ``args.max_batch``), its
    default, parser, choices and help from the declaration: a command's flag and the bot's variable cannot drift."""
    item = next(item for item in declared_fields(cls) if item.name == name)
    what = declaration(item)
    default = item.default_factory() if item.default is dataclasses.MISSING else item.default
    parser.add_argument(flag_name(what.env), dest=name, default=default, type=what.parse, choices=what.choices,
                        metavar=None if what.choices else what.env,
                        help=f"{help_prefix}{what.doc} (default: {shown_default(item).strip('`')}; the bot's {what.env})")
