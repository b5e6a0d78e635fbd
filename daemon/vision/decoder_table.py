"""Decoder lookup by the manifest's `decoder:` name, over the generic decoders and the RKNN model-zoo layouts.

Its own module so that neither decoder module has to import the other (the zoo layouts build on the generic ones).
"""

from __future__ import annotations

from . import decoders, zoo_decoders
from .decoders import Decoder

DECODERS: dict[str, Decoder] = {**decoders.DECODERS, **zoo_decoders.DECODERS}


def get_decoder(name: str) -> Decoder:
    try:
        return DECODERS[name]
    except KeyError as exc:
        raise ValueError(f"unknown decoder {name!r}; known: {', '.join(sorted(DECODERS))}") from exc
