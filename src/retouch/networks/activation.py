"""From a batch's ``<lora:…>`` tags to the networks applied for it (A1111 ``extra_networks_lora.activate``
and ``networks.load_networks``).

A1111 facts kept here (measured on v1.10.1): ``<lora:name:te:unet:dyn>``, with ``te=``, ``unet=``, ``dyn=``
overriding; the UNet weight defaults to the text-encoder weight (so ``te=X`` alone sets both); ``<lyco:…>``
is the same network type; only the batch's first prompt counts; the same network named twice is applied
twice, both times with the weights of its last mention; a name that finds no file is reported in the
comment ``Lora not found: …`` and the job runs without it; ``Lora hashes`` lists each network by the name
the prompt used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from retouch.networks import ExtraNetworks
from retouch.networks.embeddings import Embedding, embedding_from_data
from retouch.networks.files import NetworkFile
from retouch.networks.patching import ActiveNetwork
from retouch.prompt_parser import ExtraNetworkParams

logger = logging.getLogger(__name__)

LORA_TYPES = ("lora", "lyco")
_REMOVE_SYMBOLS = str.maketrans("", "", ":,")


@dataclass(frozen=True)
class NetworkCall:
    """One ``<lora:…>`` tag: the network's name (or alias) and its weights."""

    name: str
    te: float = 1.0
    unet: float = 1.0
    dyn: int | None = None


def _number(value: str, what: str, tag: str, kind: type = float) -> Any:
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"prompt: the {what} in {tag} must be a number, got {value!r}") from None
    if not math.isfinite(number):  # float() reads "nan" and "inf": a NaN weight makes a black picture
        raise ValueError(f"prompt: the {what} in {tag} must be a finite number, got {value!r}")
    return number


def network_calls(tags: Mapping[str, list[ExtraNetworkParams]]) -> list[NetworkCall]:
    """The LoRA calls among a prompt's extra-network tags; ValueError for a malformed one."""
    calls = []
    for kind in tags:
        if kind not in LORA_TYPES:
            logger.info("skipping unknown extra network: %s", kind)
            continue
        for params in tags[kind]:
            tag = f"<{kind}:{':'.join(params.items)}>"
            if not params.positional or not params.positional[0]:
                raise ValueError(f"prompt: {tag} names no network")
            positional, named = params.positional, params.named
            te = _number(positional[1], "text encoder weight", tag) if len(positional) > 1 else 1.0
            te = _number(named["te"], "text encoder weight", tag) if "te" in named else te
            unet = _number(positional[2], "UNet weight", tag) if len(positional) > 2 else te
            unet = _number(named["unet"], "UNet weight", tag) if "unet" in named else unet
            dyn = _number(positional[3], "dyn dimension", tag, int) if len(positional) > 3 else None
            dyn = _number(named["dyn"], "dyn dimension", tag, int) if "dyn" in named else dyn
            calls.append(NetworkCall(positional[0], te, unet, dyn))
    return calls


@dataclass
class Activation:
    """What a batch's tags amount to on a model."""

    networks: list[ActiveNetwork] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)  # name as mentioned (":" and "," removed) → short hash
    bundled: list[Embedding] = field(default_factory=list)  # embeddings the networks carry, usable here

    @property
    def key(self) -> tuple:
        return tuple(n.key for n in self.networks)

    def comments(self) -> list[str]:
        return [f"Lora not found: {', '.join(self.missing)}"] if self.missing else []


def activate(extra: ExtraNetworks, calls: Sequence[NetworkCall], keep_in_memory: int = 0) -> Activation:
    """Find, read and weigh the networks ``calls`` name. Raises NetworkError (a ValueError) for a file that
    cannot be applied; a name that finds no file is only reported (``missing``)."""
    activation = Activation()
    last = {call.name: call for call in calls}  # A1111 weighs every mention of a network by its last one
    found: list[tuple[NetworkCall, NetworkFile]] = []
    files = {call.name: extra.loras.lookup(call.name) for call in calls}
    if None in files.values() and extra.loras.folder is not None:
        extra.loras.refresh()  # once per job, however many names were not found: a file added since
        files = {name: file or extra.loras.lookup(name) for name, file in files.items()}
    for call in calls:
        file = files[call.name]
        if file is None:
            activation.missing.append(call.name)
            continue
        found.append((last[call.name], file))
    for call, file in found:
        network = extra.load(file, keep_in_memory)
        activation.networks.append(ActiveNetwork(network, call.te, call.unet, call.dyn))
        if file.short_hash:
            activation.hashes[call.name.translate(_REMOVE_SYMBOLS)] = file.short_hash
    extra.forget({str(f.path) for _, f in found}, keep_in_memory)
    activation.bundled = _bundled_embeddings(extra, activation.networks)
    return activation


def _bundled_embeddings(extra: ExtraNetworks, networks: Sequence[ActiveNetwork]) -> list[Embedding]:
    """Embeddings a LoRA file carries (``bundle_emb.*``), unless the embeddings folder has one of that name."""
    out: dict[str, Embedding] = {}
    for active in networks:
        for name, data in active.network.bundled_embeddings.items():
            if name in extra.embeddings.loaded:
                logger.warning("skip bundled embedding %r: already loaded from the embeddings folder", name)
                continue
            data = _nest(data)
            try:
                embedding = embedding_from_data(data, name)
            except ValueError as e:
                raise ValueError(f"network {active.network.name!r}: bundled embedding {name!r}: {e}") from None
            embedding.bundled_in = active.network.name
            if embedding.width == extra.embeddings.width:
                out[name] = embedding
    return list(out.values())


def _nest(data: Mapping[str, Any]) -> dict[str, Any]:
    """``string_to_param.*`` keys of a bundled embedding → A1111's nested layout."""
    nested: dict[str, Any] = {}
    for key, value in data.items():
        head, _, rest = key.partition(".")
        if head == "string_to_param" and rest:
            nested["string_to_param"] = {rest: value}
        else:
            nested[key] = value
    return nested


def ti_hashes(existing: str | None, embeddings: Sequence[Embedding]) -> str | None:
    """A1111's ``TI hashes`` after one more encoding that used ``embeddings``: the new entries, then what
    was there (an entry per use, repeats included)."""
    entries = [f"{e.name.replace(':', '').replace(',', '')}: {e.short_hash}" for e in embeddings if e.short_hash]
    if not entries:
        return existing
    if existing:
        entries.append(existing)
    return ", ".join(entries)
