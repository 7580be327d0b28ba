"""RecBole-style command line: ``python -m recbole_ext --model=MVAE --dataset=ml-100k
--config_files="a.yaml b.yaml" --epochs=20`` (any ``--key=value`` is a config override,
as in RecBole's ``run_recbole.py``).  Installed as the ``lightning-genrec`` command."""
from __future__ import annotations

import argparse
import sys

import recbole_ext
from lightning_genrec.errors import USER_ERRORS
from recbole_ext.quick_start import format_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lightning-genrec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)   # --mode (CFGAN) is not --model
    parser.add_argument("--model", "-m", default="MVAE", help="model name (default MVAE)")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default ml-100k)")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files")
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine (RecBole's nproc)")
    parser.add_argument("--world_size", type=int, default=-1, help="processes on all machines (default: nproc)")
    parser.add_argument("--ip", default="localhost", help="address of the machine of rank 0")
    parser.add_argument("--port", default="5678", help="free port on the machine of rank 0")
    parser.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    args, _ = parser.parse_known_args(argv)
    files = args.config_files.strip().split(" ") if args.config_files else None

    try:
        result = recbole_ext.run(model=args.model, dataset=args.dataset, config_file_list=files, nproc=args.nproc,
                                 world_size=args.world_size, ip=args.ip, port=args.port,
                                 group_offset=args.group_offset)
    except USER_ERRORS as exc:
        print(f"lightning-genrec: error: {exc}", file=sys.stderr)
        return 2
    print()
    print(f"{args.model} on {args.dataset} (best validation epoch; RecBole's evaluator)")
    print(format_results(result))
    if result.get("saved_model_file"):
        print(f"\nRecBole checkpoint: {result['saved_model_file']}")
    if result.get("comet_archive"):
        print(f"Comet offline archive: {result['comet_archive']}  (send it with: comet upload <file>)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
