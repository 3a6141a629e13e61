"""What the subcommands share: flag helpers, model flags, ``--set`` parsing, the usage error."""

from __future__ import annotations

import argparse
import json
import types
import typing
from dataclasses import fields
from pathlib import Path

from retouch.params import GenerationParams, Img2ImgParams

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _argument_kind(cls: type[GenerationParams], field_name: str) -> str:
    hint = typing.get_type_hints(cls)[field_name]
    args = set(typing.get_args(hint)) if typing.get_origin(hint) in (types.UnionType, typing.Union) else {hint}
    args.discard(type(None))
    if list[str] in args and len(args) == 1:
        return "list"
    if args == {bool}:
        return "bool"
    if args == {int}:
        return "int"
    if args == {float}:
        return "float"
    return "str"


_INTEGER_FLAGS = ("seed", "subseed")  # the library also takes strings ("random" when unparsable); the CLI does not


def add_param_flags(parser: argparse.ArgumentParser, cls: type[GenerationParams] = Img2ImgParams) -> None:
    """One flag per CLI-facing field of ``cls`` (:class:`Img2ImgParams`, :class:`Txt2ImgParams`), defaults left to
    the params object."""
    group = parser.add_argument_group("generation parameters (A1111 names)")
    for f in fields(cls):
        if not f.metadata.get("cli", True):
            continue
        kind = "int" if f.name in _INTEGER_FLAGS else _argument_kind(cls, f.name)
        help_text = f"{f.metadata.get('help', '')} (default: {f.default if f.default is not None else 'auto'})"
        if kind == "bool":
            group.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        elif kind == "list":
            group.add_argument(flag(f.name), dest=f.name, action="append", default=None, help=help_text)
        else:
            converter = {"int": int, "float": float, "str": str}[kind]
            group.add_argument(flag(f.name), dest=f.name, type=converter, default=None, help=help_text,
                               metavar=kind.upper())


PRECISIONS = ("fp32", "bf16", "fp16")
UPSCALER_FLAGS = (("esrgan", "ESRGAN"), ("realesrgan", "Real-ESRGAN"), ("swinir", "SwinIR"), ("dat", "DAT"),
                  ("scunet", "ScuNET"))  # A1111's --esrgan-models-path and friends


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="UNet and text encoder precision (bf16: about 2x faster on CPUs with AVX-512 or AMX, many "
                             "times slower on others: a warning says so)")
    parser.add_argument("--vae-precision", choices=PRECISIONS, default=None,
                        help="VAE precision (default fp32 on CPU); NaNs fall back to fp32")
    parser.add_argument("--channels-last", action="store_true", help="UNet and VAE in channels-last memory format (faster on CPU)")
    parser.add_argument("--compile", nargs="?", const="default", choices=("default", "freeze"), default=None,
                        help="compile the UNet on its first call per image size (slow once, cached on disk for "
                             "the next start): AOTInductor, the model's own weights; 'freeze': with the weights frozen in, "
                             "faster, a copy of the UNet's weights per image size in memory and on disk (jobs with "
                             "LoRA networks run it uncompiled); seamless tiling runs it uncompiled")
    parser.add_argument("--vae-tiling", choices=("auto", "always", "never"), default="auto",
                        help="tiled VAE: auto = when an untiled pass would not fit in free memory, or ran out of it")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--lora-dir", default=None, metavar="DIR",
                        help="folder of LoRA/LoCon/LoHa/LoKr networks for <lora:name:weight> tags")
    parser.add_argument("--embeddings-dir", default=None, metavar="DIR",
                        help="folder of textual-inversion embeddings (used by name in prompts)")
    for kind, what in UPSCALER_FLAGS:
        parser.add_argument(f"--{kind}-models-path", default=None, metavar="DIR",
                            help=f"folder of {what} upscaler models (the hires fix's hr_upscaler, by file name)")
    parser.add_argument("--deterministic-batches", action="store_true",
                        help="every image of a batch gets exactly the pixels it gets alone (one network call per "
                             "image and step instead of one per batch: slower batches)")


def model_kwargs(args: argparse.Namespace) -> dict:
    """load_model keyword arguments from the model flags."""
    import torch

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads: must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    return {"dtype": dtypes[args.precision],
            "vae_dtype": dtypes[args.vae_precision] if args.vae_precision else None,
            "channels_last": args.channels_last, "compile": args.compile or False}


def param_values(args: argparse.Namespace, cls: type[GenerationParams] = Img2ImgParams) -> dict:
    """The generation parameters given on the command line (the rest keep their defaults)."""
    names = [f.name for f in fields(cls) if f.metadata.get("cli", True)]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def network_folders(args: argparse.Namespace) -> dict:
    """``lora_dir`` / ``embeddings_dir`` and the upscaler model folders for load_model, each checked to be a
    folder."""
    out = {}
    for name in ("lora_dir", "embeddings_dir", *(f"{kind}_models_path" for kind, _ in UPSCALER_FLAGS)):
        value = getattr(args, name, None)
        if value is not None and not Path(value).is_dir():
            raise UsageError(f"{flag(name)}: not a folder: {value}")
        out[name] = value
    return out


def parse_settings(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set: expected OPTION=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out
