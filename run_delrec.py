"""Command line: ``python run_delrec.py --model=DELRec --dataset=ml-100k [--key=value ...]``.

Like RecBole's ``run_recbole.py``: ``--config_files`` takes space-separated YAML files, and
any other ``--key=value`` overrides a configuration value (RecBole reads them itself).

Run folders: ``--load=<run dir>`` evaluates a finished run without training,
``--resume=<run dir>`` continues an interrupted stage 2, ``--explain=<user id>`` prints that
user's prompt and DELRec's and the teacher's rankings.  ``--model=TSLRec --backbone=SASRec``
runs the second model (plain backbone, CI variant and TSLRec side by side).

``--nproc=N`` trains with N processes under RecBole's distributed mode (DDP: one GPU each,
or gloo on the CPU); ``--world_size``, ``--ip``, ``--port``, ``--group_offset`` span machines.

Evidence (docs/evidence.md): ``--seeds=N`` (or a ``seeds:`` list) runs the whole pipeline once
per seed and summarises the seeds (intervals, paired tests, buckets); ``--load=<run dir>
--candidate_orders=P`` measures candidate-order sensitivity of a finished run; ``--report``
writes the Markdown report of the run folders given to ``--load`` (space-separated), or of the
run or seeds just run.

With ``--tune=<space file>`` it runs a Ray Tune sweep instead (see docs/tuning.md); the other
``--key=value`` overrides then apply to every trial.
"""

import argparse
import sys

from recbole_delrec import run_delrec
from recbole_delrec.registry import MODELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", "-m", default="DELRec")
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files")
    parser.add_argument("--load", default=None, help="evaluate a finished run folder, no training")
    parser.add_argument("--resume", default=None, help="continue an interrupted run folder")
    parser.add_argument("--explain", default=None, help="a user id (atomic-file token) to explain")
    parser.add_argument("--backbone", default="SASRec", help="TSLRec: the RecBole backbone to enhance")
    proof = parser.add_argument_group("evidence (docs/evidence.md)")
    proof.add_argument("--seeds", default=None, help="N seeds (seed .. seed+N-1) or a list '[1,2,3]'")
    proof.add_argument("--candidate_orders", type=int, default=None,
                          help="with --load: re-score the test prompts under P candidate orders; "
                               "without: the evaluation option (mean score over P orders)")
    proof.add_argument("--report", action="store_true", help="write the report of the run(s): this run, its seeds, or --load's folders")
    ddp = parser.add_argument_group("distributed training (RecBole's options; one process per GPU)")
    ddp.add_argument("--nproc", type=int, default=1, help="processes on this machine")
    ddp.add_argument("--world_size", type=int, default=-1, help="processes on all machines (default: nproc)")
    ddp.add_argument("--ip", default="localhost", help="address of the machine of rank 0")
    ddp.add_argument("--port", default="5678", help="a free port on that machine")
    ddp.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    sweep = parser.add_argument_group("hyper-parameter sweep (only with --tune)")
    sweep.add_argument("--tune", default=None, help="search space file (RecBole's hyper-parameter format)")
    sweep.add_argument("--samples", type=int, default=None, help="trials (default 10; grid: grid repeats, default 1)")
    sweep.add_argument("--search", default="hyperopt", choices=["hyperopt", "random", "grid"])
    sweep.add_argument("--scheduler", default="asha", choices=["asha", "fifo"])
    sweep.add_argument("--cpus-per-trial", type=float, default=1)
    sweep.add_argument("--gpus-per-trial", type=float, default=0)
    sweep.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: a local one)")
    sweep.add_argument("--output-dir", default=None, help="default: saved/sweeps/<model>-<dataset>-<time>")
    args, rest = parser.parse_known_args()
    check_model(parser, args.model)
    files = args.config_files.strip().split(" ") if args.config_files else None
    sys.argv = sys.argv[:1] + rest  # RecBole's Config reads the remaining --key=value itself
    if args.tune:
        tune(args, files, rest)
    elif args.model == "TSLRec":
        from recbole_delrec.tslrec.quick_start import run_tslrec

        run_tslrec(dataset=args.dataset, backbone=args.backbone, config_file_list=files)
    else:
        evidence(args, files)


def check_model(parser: argparse.ArgumentParser, model: str) -> None:
    """``--model`` is one of the plugin's models, spelt as RecBole spells them (case matters there)."""
    if model in MODELS:
        return
    spelt = [name for name in MODELS if name.lower() == model.lower()]
    parser.error(f"--model={model}: use --model={spelt[0]} (RecBole's model names are case-sensitive)" if spelt else
                 f"--model={model}: run_delrec.py runs {' or '.join(MODELS)}; a RecBole model runs with RecBole's "
                 f"run_recbole.py, or here as DELRec's teacher (--teacher_model) or a baseline (--baselines)")


def evidence(args: argparse.Namespace, files) -> None:
    """DELRec: one run, several seeds, an order analysis of a finished run, and the report."""
    if args.candidate_orders is not None and not args.load:
        sys.argv.append(f"--candidate_orders={args.candidate_orders}")  # the evaluation option
    if args.seeds is not None and not args.load:
        sys.argv.append(f"--seeds={args.seeds}")  # read by run_delrec, like a `seeds:` key
    if args.load and (args.candidate_orders is not None or args.report):
        loaded(args, files)
        return
    result = run_delrec(model=args.model, dataset=args.dataset, config_file_list=files,
                        load=args.load, resume=args.resume, explain=args.explain, nproc=args.nproc,
                        world_size=args.world_size, ip=args.ip, port=args.port, group_offset=args.group_offset)
    if args.report:
        report(result["run_dirs"] if "summary_dir" in result else [result["run_dir"]], result.get("summary_dir"))


def loaded(args: argparse.Namespace, files) -> None:
    """``--load`` with ``--candidate_orders`` (order analysis) and/or ``--report``."""
    run_dirs = args.load.split()
    if args.candidate_orders is not None:
        from recbole_delrec.evaluation.order import analyse_run, order_table

        for run_dir in run_dirs:
            print(order_table(analyse_run(run_dir, args.candidate_orders, args.model, args.dataset, files)))
    if args.report:
        report(run_dirs, None)


def report(run_dirs: list[str], out_dir) -> None:
    from recbole_delrec.report import write_report

    print(f"report: {write_report(run_dirs, out_dir)}")


def tune(args: argparse.Namespace, files, rest) -> None:
    """A sweep: the remaining ``--key=value`` become ``config_dict`` (no Config reads sys.argv)."""
    from recbole_delrec.config import external_values
    from recbole_delrec.tune import run_sweep

    run_sweep(
        model=args.model, dataset=args.dataset, space_file=args.tune, samples=args.samples,
        search=args.search, scheduler=args.scheduler, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, ray_address=args.ray_address, config_file_list=files,
        config_dict=external_values(argv=rest), output_dir=args.output_dir,
    )


if __name__ == "__main__":
    main()
