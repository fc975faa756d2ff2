"""The ``free-atm`` command (also ``python -m free_atm``, so ``torchrun -m free_atm generate`` works)."""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from .paths import local_path
from .usage import OneLineErrors, check_ranges


def generate(args: argparse.Namespace) -> None:
    """Generate a masked dataset into ``--out`` (Parquet shards, card, sample grid)."""
    from .generation import GenerationConfig, generate_dataset

    root = generate_dataset(GenerationConfig(**{f.name: getattr(args, f.name) for f in fields(GenerationConfig)}))
    print(f"dataset in {root} (sample grid: {root / 'sample_grid.png'})")


def annotate(args: argparse.Namespace) -> None:
    """Annotate your own images (a folder, a glob or a dataset) into a masked dataset in ``--out``."""
    from .generation import AnnotationConfig, annotate_dataset

    root = annotate_dataset(AnnotationConfig(**{f.name: getattr(args, f.name) for f in fields(AnnotationConfig)}))
    print(f"dataset in {root} (sample grid: {root / 'sample_grid.png'})")


def show(args: argparse.Namespace) -> None:
    """Draw samples of a dataset folder with their masks, boxes and object names."""
    from .data.loading import load_dataset_split
    from .data.schema import check_columns, check_row
    from .data.shards import check_complete
    from .visualize import dataset_grid

    check_ranges({"--num-samples": args.num_samples, "--columns": args.columns, "--cell": args.cell}, SHOW_RANGES)
    if Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise ValueError(f"--out {args.out} must end in .png, .jpg, .jpeg or .webp")
    if not args.dataset.is_dir():
        raise ValueError(f"dataset folder {args.dataset} does not exist")
    check_complete(args.dataset, args.allow_incomplete)
    dataset = load_dataset_split(str(args.dataset))
    check_columns(dataset.features, ["image", "prompt", "objects", "masks", "boxes"], str(args.dataset))
    rows = []
    for index in range(min(args.num_samples, len(dataset))):
        try:  # a dataset decodes a row's images as the row is read
            row = dataset[index]
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(
                f"row {args.dataset}:{index}: an image does not decode ({type(error).__name__}: {error})"
            ) from None
        check_row(row, f"{args.dataset}:{index}")  # a mask of another size would be stretched over the image
        rows.append(row)
    dataset_grid(rows, columns=args.columns, cell=args.cell).save(args.out)
    print(f"wrote {len(rows)} samples to {args.out}")


def export(args: argparse.Namespace) -> None:
    """Write a dataset as COCO instances, YOLO-seg files or Pascal VOC PNGs."""
    from .data.export import ExportConfig, export_dataset

    config = ExportConfig(str(args.dataset), args.format, str(args.out), args.label_map, args.polygons, args.tolerance)
    out = export_dataset(config)
    print(f"exported {args.dataset} as {args.format} to {out}")


def probe(args: argparse.Namespace) -> None:
    """kNN and linear-probe accuracy of a backbone on rendered shapes-world scenes (JSON): object level, or
    image level (``--pooling mean|cls``) on one-object scenes."""
    import json

    import torch
    from transformers import AutoModel, ViTMAEModel

    from .training import ObjectMapCollator, probe_backbone, shapes_probe_splits
    from .training.mae import vit_encoder
    from .training.probes import POOLINGS
    from .usage import load_reporting_failures, names_a_folder

    if args.pooling not in POOLINGS:
        raise ValueError(f"--pooling must be one of {', '.join(POOLINGS)}, got {args.pooling!r}")
    check_ranges({"--scenes": args.scenes, "--image-size": args.image_size}, PROBE_RANGES)
    if names_a_folder(args.backbone) and not local_path(args.backbone).is_dir():
        raise ValueError(f"backbone folder {args.backbone} does not exist")
    model = load_reporting_failures(lambda: AutoModel.from_pretrained(args.backbone), args.backbone, "backbone")
    # a whole contrastive model folder, or its backbone/; a whole MAE folder (whose encoder masks), or encoder/
    backbone = vit_encoder(model) if isinstance(model, ViTMAEModel) else getattr(model, "backbone", model)
    size = args.image_size or getattr(backbone.config, "image_size", 64)
    objects = 3 if args.pooling == "object" else 1  # image-level features name the kind of a lone object
    splits = shapes_probe_splits(args.scenes, seed=args.seed, max_objects=objects)
    probe_with = {"collator": ObjectMapCollator(size), "pooling": args.pooling}
    result = {"backbone": args.backbone, **probe_backbone(backbone, splits["train"], splits["test"], **probe_with)}
    if args.random_init:
        torch.manual_seed(args.seed)
        initial = AutoModel.from_config(backbone.config)
        result["random_init"] = probe_backbone(initial, splits["train"], splits["test"], **probe_with)
    print(json.dumps(result))


#: what a BLIP folder for ``free-atm retrieval`` holds beside its weights (any one file of each group)
BLIP_FILES = (("config.json",), ("processor_config.json", "preprocessor_config.json"), ("tokenizer_config.json",))


def retrieval(args: argparse.Namespace) -> None:
    """Image-text retrieval recalls of a BLIP on rendered scenes in mirrored layouts whose captions say
    where each object is (JSON; :mod:`free_atm.training.blip.evaluation`)."""
    import json

    from transformers import BlipForImageTextRetrieval, BlipProcessor

    from .training.blip.evaluation import evaluate_retrieval, positional_retrieval_set
    from .usage import load_reporting_failures, names_a_folder

    check_ranges({"--scenes": args.scenes, "--grid": args.grid, "--k": args.k}, RETRIEVAL_RANGES)
    path = local_path(args.model)
    if names_a_folder(args.model) and not path.is_dir():
        raise ValueError(f"model folder {args.model} does not exist")
    if (path / "retrieval" / "config.json").is_file():  # a train_blip.py output: its retrieval export
        path = path / "retrieval"
    source = str(path) if path.is_dir() else args.model
    held = {file.name for file in path.iterdir()} if path.is_dir() else set()
    missing = [" or ".join(names) for names in BLIP_FILES if path.is_dir() and not held.intersection(names)]
    if missing:
        raise ValueError(
            f"model folder {path} has no {', '.join(missing)}: free-atm retrieval needs a BLIP saved with its "
            "processor (model.save_pretrained and processor.save_pretrained into one folder, as train_blip.py does)"
        )
    model = load_reporting_failures(lambda: BlipForImageTextRetrieval.from_pretrained(source).eval(), args.model)
    processor = load_reporting_failures(lambda: BlipProcessor.from_pretrained(source), args.model, "processor")
    size = model.config.vision_config.image_size
    scenes = positional_retrieval_set(args.scenes, seed=args.seed, size=size, grid=args.grid)
    recalls = evaluate_retrieval(model, processor, scenes, k=args.k)
    print(json.dumps({"model": args.model, "images": len(scenes.images), "grid": args.grid, **recalls}))


def demo(args: argparse.Namespace) -> None:
    """Serve the web demo: generate (and annotate) with masks in the browser."""
    from .demo import DemoSession, build_demo, launch_demo

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    _check_port_free(args.host, args.port)
    launch_demo(build_demo(DemoSession(args.model, args.device)), server_name=args.host, server_port=args.port,
                share=args.share)  # fmt: skip


def _check_port_free(host: str, port: int) -> None:
    """``ValueError`` if ``host:port`` cannot be bound (a host that is not this machine's, a port taken by
    another server or needing privileges), before the model loads."""
    import errno
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed server's TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except socket.gaierror as error:
            raise ValueError(f"--host {host} is not a name or address of this machine ({error.strerror})") from None
        except OSError as error:
            if error.errno == errno.EADDRNOTAVAIL:
                raise ValueError(f"--host {host} is not an address of this machine ({error.strerror})") from None
            if error.errno == errno.EACCES:
                raise ValueError(
                    f"--port {port} on {host} cannot be served ({error.strerror}): ports below 1024 need "
                    "privileges; choose another --port"
                ) from None
            raise ValueError(
                f"--port {port} on {host} cannot be served ({error.strerror}): another server holds it; "
                "choose another --port"
            ) from None


def _add_field(parser: argparse.ArgumentParser, name: str, hint: object, default: object, help: str | None) -> None:
    """An option for a dataclass field: ``T | None`` takes a ``T``, a tuple several values, a bool a
    ``--name/--no-name`` pair."""
    kind = next(t for t in (*typing.get_args(hint), hint) if t is not type(None))
    options: dict = {"dest": name, "default": default, "help": help}
    if typing.get_origin(kind) is tuple:
        items = typing.get_args(kind)
        options.update(type=items[0], nargs="+" if Ellipsis in items else len(items))
    elif kind is bool:
        options.update(action=argparse.BooleanOptionalAction)
    else:
        options.update(type=kind)
    parser.add_argument(f"--{name.replace('_', '-')}", **options)


class OneLineParser(OneLineErrors, argparse.ArgumentParser):
    """free-atm's parser: argument errors in one line (:class:`free_atm.usage.OneLineErrors`), its
    subcommands' too."""


def build_parser() -> argparse.ArgumentParser:
    from .evaluation.reproduction import command as reproduction
    from .generation import GenerationConfig

    parser = OneLineParser(prog="free-atm", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (and library warnings)")
    parser.add_argument("--verbose", action="store_true", help="show the libraries' warnings and loading bars")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate images with attention masks as a dataset")
    hints = typing.get_type_hints(GenerationConfig)
    for f in fields(GenerationConfig):
        _add_field(gen, f.name, hints[f.name], f.default, f.metadata.get("help"))
    gen.set_defaults(run=generate)
    notes = commands.add_parser(
        "annotate", help="masks for your own images (a folder, a glob or a dataset) as a dataset"
    )
    from .generation import AnnotationConfig

    hints = typing.get_type_hints(AnnotationConfig)
    for f in fields(AnnotationConfig):
        if f.name == "images":
            notes.add_argument("images", help=f.metadata["help"])
        else:
            _add_field(notes, f.name, hints[f.name], f.default, f.metadata.get("help"))
    notes.set_defaults(run=annotate)
    view = commands.add_parser("show", help="draw dataset samples with their masks")
    view.add_argument("dataset", type=local_path, help="a dataset folder written by free-atm generate")
    view.add_argument("--out", default="grid.png", help="the picture to write (.png, .jpg, .jpeg or .webp)")
    view.add_argument("--num-samples", type=int, default=8, help="the first rows to draw, 1 to 256")
    view.add_argument("--columns", type=int, default=4, help="cells per row, 1 to 64")
    view.add_argument("--cell", type=int, default=256, help="pixels of each image's longer side, 64 to 2,048")
    view.add_argument(
        "--allow-incomplete", action="store_true", help="draw a generation that stopped early (else refused)"
    )
    view.set_defaults(run=show)
    out = commands.add_parser(
        "export", help="write a dataset as COCO instances, YOLO-seg files or Pascal VOC PNGs (reruns resume)"
    )
    out.add_argument("dataset", type=local_path, help="a dataset folder written by free-atm generate or annotate")
    out.add_argument("--format", required=True, help="coco, yolo or voc")
    out.add_argument("--out", required=True, type=local_path, help="the folder to write (empty, new, or its export)")
    out.add_argument("--label-map", help="a JSON file of object phrase -> category (default: one per phrase)")
    out.add_argument("--polygons", action="store_true", help="COCO: outlines instead of RLE masks")
    out.add_argument("--tolerance", type=float, default=0.5, help="outline simplification, in pixels (0: none)")
    out.set_defaults(run=export)
    check = commands.add_parser("probe", help="kNN and linear probes of a pretrained backbone on the shapes world")
    check.add_argument("backbone", help="a backbone folder or Hub id (or a whole contrastive model)")
    check.add_argument(
        "--scenes", type=int, default=1000, help="rendered scenes, half to fit and half to test: 2 to 100,000"
    )
    check.add_argument("--image-size", type=int, help="16 to 1,024 (default: the backbone's image size, else 64)")
    check.add_argument("--pooling", default="object", help="object (maps), or mean or cls of one-object scenes")
    check.add_argument("--seed", type=int, default=2, help="the rendered scenes' seed")
    check.add_argument("--random-init", action="store_true", help="also probe the same architecture untrained")
    check.set_defaults(run=probe)
    find = commands.add_parser("retrieval", help="image-text retrieval of a BLIP on scenes captioned with positions")
    find.add_argument("model", help="a train_blip.py output, a BlipForImageTextRetrieval folder or a Hub id")
    find.add_argument(
        "--scenes", type=int, default=64, help="rendered scenes in up to four mirrored layouts, 1 to 10,000"
    )
    find.add_argument("--grid", type=int, default=3, help="the block grid of the position prompts, 1 to 16")
    find.add_argument("--k", type=int, default=16, help="ITC candidates re-ranked by ITM, 1 to 1,024")
    find.add_argument("--seed", type=int, default=3, help="the rendered scenes' seed")
    find.set_defaults(run=retrieval)
    page = commands.add_parser("demo", help="the web demo (needs the demo extra: pip install 'free-atm[demo]')")
    page.add_argument("--model", default="shapes", help="as for generate: 'shapes', 'tiny-random', a folder or Hub id")
    page.add_argument("--device", help="default: cuda when available, else cpu")
    page.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    page.add_argument("--port", type=int, default=7860, help="the port to serve on")
    page.add_argument("--share", action="store_true", help="also serve through a public Gradio link")
    page.set_defaults(run=demo)
    tables = commands.add_parser(
        "reproduce",
        help="the paper's tables in miniature on the shapes world (hours; reruns resume)",
        description=reproduction.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reproduction.add_arguments(tables)
    tables.set_defaults(run=reproduction.reproduce)
    for command in commands.choices.values():
        command.set_defaults(command_parser=command)
    return parser


#: the ranges of the commands' numbers: what a run finishes in (the drawn grid's memory, the probes' time)
SHOW_RANGES = {"--num-samples": (1, 256), "--columns": (1, 64), "--cell": (64, 2048)}
PROBE_RANGES = {"--scenes": (2, 100_000), "--image-size": (16, 1024)}
RETRIEVAL_RANGES = {"--scenes": (1, 10_000), "--grid": (1, 16), "--k": (1, 1024)}

#: what each writing command keeps when interrupted, and how it goes on
INTERRUPTED_KEEPS = {
    "generate": "the finished shards are kept; rerun the same command to finish the dataset",
    "annotate": "the finished shards are kept; rerun the same command to finish the dataset",
    "export": "the finished files are kept; rerun the same command to finish the export",
    "reproduce": "the finished runs are kept; rerun the same command to go on",
    "demo": "the demo stopped",
}


def main(argv: Sequence[str] | None = None) -> None:
    """Run a command; bad input is one line on stderr and exit status 2 (:mod:`free_atm.usage`)."""
    from .usage import quiet_libraries, run_reporting_bad_input

    argv = sys.argv[1:] if argv is None else list(argv)
    if not {"--debug", "--verbose"} & set(argv):  # before the parser: building it imports the libraries
        quiet_libraries()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named with the command they were given to, not the top-level program
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    kept = INTERRUPTED_KEEPS.get(args.command, "nothing was written")
    run_reporting_bad_input(lambda: args.run(args), f"free-atm {args.command}", args.debug, kept)
