"""Extra networks in a job: which LoRA-family networks each batch applies, and the embeddings its prompts
may use (A1111 ``parse_extra_network_prompts`` + ``extra_networks.activate`` + the embedding database).

Every batch's networks are read before the job starts, so a network file that cannot be applied fails
the job before any work, never halfway through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from retouch.networks import Embedding, ExtraNetworks
from retouch.networks.activation import Activation, NetworkCall, activate, network_calls, ti_hashes
from retouch.options import Options
from retouch.prompt_parser import parse_extra_networks, parse_extra_networks_batch


def default_network_prompts(prompts: list[str], extra: ExtraNetworks, options: Options, first_batch: Sequence[str],
                            disabled: bool) -> list[str]:
    """A1111's ``sd_lora`` option: a network added to every prompt (``<lora:name:multiplier>``) unless the first
    batch's prompt already names it."""
    name = options.sd_lora
    if disabled or name in ("", "None") or name not in extra.loras.names:
        return prompts
    mentioned = network_calls(parse_extra_networks(first_batch[0])[1]) if first_batch else []
    if any(call.name == name for call in mentioned):
        return prompts
    return [f"{p}<lora:{name}:{options.extra_networks_default_multiplier}>" for p in prompts]


@dataclass
class JobNetworks:
    """The networks and embeddings of one job on one model."""

    extra: ExtraNetworks
    options: Options
    disabled: bool = False
    ti_hashes: str | None = None
    _activations: dict[tuple[NetworkCall, ...], Activation] = field(default_factory=dict)

    def prepare(self, first_prompts: Sequence[str]) -> None:
        """Rescan the embeddings folder if it changed, and read every batch's networks (``first_prompts``: the
        first prompt of each batch); NetworkError for a file that cannot be applied."""
        self.extra.embeddings.check_for_changes()
        for prompt in first_prompts:
            self._activation(self._calls(parse_extra_networks(prompt)[1]))

    def batch(self, prompts: Sequence[str]) -> tuple[list[str], Activation]:
        """A batch's prompts without their tags, and the networks its first prompt asks for."""
        texts, tags = parse_extra_networks_batch(prompts)
        return texts, self._activation(self._calls(tags))

    def find_embedding(self, activation: Activation):
        """The embedding lookup for prompts encoded under ``activation`` (its bundled embeddings first)."""
        database = self.extra.embeddings
        extra_index = database.index(activation.bundled) if activation.bundled else None
        return lambda tokens, offset: database.find_at(tokens, offset, extra_index)

    def note_embeddings(self, used: list[Embedding]) -> None:
        self.ti_hashes = ti_hashes(self.ti_hashes, used)

    def _calls(self, tags: dict[str, Any]) -> tuple[NetworkCall, ...]:
        return () if self.disabled else tuple(network_calls(tags))

    def _activation(self, calls: tuple[NetworkCall, ...]) -> Activation:
        if calls not in self._activations:
            self._activations[calls] = activate(self.extra, calls, int(self.options.lora_in_memory_limit))
        return self._activations[calls]
