"""The ``edge-sr`` command line: thin argparse wrappers over the library functions."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from runtime.threads import prepare

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[fn.__name__.removeprefix("cmd_").replace("_", "-")] = fn
    return fn


@command
def cmd_models(args: argparse.Namespace) -> int:
    from .models import MODELS

    for name, spec in MODELS.items():
        have = "weights" if spec.weights_path.exists() else "-"
        print(f"{name:<20} x{spec.scale}  {spec.colour:<4} {spec.family:<9} {have}")
    return 0


@command
def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    cfg = TrainConfig(model=args.model, iters=args.iters, batch=args.batch,
                      lr_patch=args.lr_patch, lr=args.lr, warmup=args.warmup, seed=args.seed,
                      out=args.out or "", val_every=args.val_every, export=args.export or "",
                      init=args.init or "", adversarial=args.adversarial, threads=args.threads,
                      stop_after=args.stop_after, minutes=args.minutes, device=args.device,
                      bf16=args.bf16, compile=args.compile, loss=args.loss, ema=args.ema,
                      qat=args.qat,
                      distill=args.distill, teacher=args.teacher,
                      teacher_x8=args.teacher_x8,
                      downscales=args.downscales, finish=args.finish, lr_mult=args.lr_mult)
    result = train(cfg)
    print(json.dumps(result))
    return 0


@command
def cmd_train_zoo(args: argparse.Namespace) -> int:
    from .train_zoo import ZooTrainConfig, train_zoo

    result = train_zoo(ZooTrainConfig(models=args.model or [], minutes=args.minutes,
                                      runs=args.runs, threads=args.threads,
                                      device=args.device, jobs=args.jobs,
                                      early=args.early, weights=args.weights))
    print(json.dumps(result, indent=1))
    return 0


@command
def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import EvalConfig, evaluate, format_table

    result = evaluate(EvalConfig(args.model, args.dataset, args.weights, args.limit))
    print(json.dumps(result) if args.json else format_table(result))
    return 0


@command
def cmd_zoo(args: argparse.Namespace) -> int:
    from .zoo import format_zoo, zoo_table

    rows = zoo_table(args.dataset, args.model or None)
    print(json.dumps(rows) if args.json else format_zoo(rows))
    return 0


@command
def cmd_targets(args: argparse.Namespace) -> int:
    import targets

    aliases = {}
    for alias, name in targets.ALIASES.items():
        aliases.setdefault(name, []).append(alias)
    for name, spec in targets.TARGETS.items():
        extra = f" (alias: {', '.join(aliases[name])})" if name in aliases else ""
        linker = spec.cross_compiler or "cc"
        print(f"{name:<13} {spec.arch:<8} {spec.kind:<5} {linker:<22} {spec.description}{extra}")
    return 0


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` (e.g. ``360x640``) -> (H, W)."""
    h, sep, w = text.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or int(h) < 1 or int(w) < 1:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 360x640; got {text!r}")
    return int(h), int(w)


def add_model_hints(p: argparse.ArgumentParser) -> None:
    """``--scale``/``--colour``: what a model from outside the registry is, where probing it
    is ambiguous (a network that takes 1 and 3 channels alike)."""
    p.add_argument("--scale", type=int, help="the model's upscaling factor (checked against "
                   "a probe call; default: read from it)")
    p.add_argument("--colour", choices=["y", "rgb"],
                   help="luma or RGB model (default: the channel count its probe call takes)")


def add_build_args(p: argparse.ArgumentParser) -> None:
    """The arguments of ``edge-sr build`` and ``compile/build.py``."""
    from .pipeline.builder import DEFAULT_MODEL, DEFAULT_SIZE

    p.add_argument("--target", default="arm", help="target name or alias (default arm = rpi4)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"registry name, MODULE:FACTORY or a .pt2 file (default {DEFAULT_MODEL})")
    add_model_hints(p)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=parse_size, default=DEFAULT_SIZE,
                      help="static LR input HxW; larger images are tiled (default %(default)s)")
    size.add_argument("--dynamic", nargs="?", const="default", metavar="MAXHxMAXW",
                      help="dynamic H/W up to a bound (default: --size's default)")
    p.add_argument("--dtype", default="float32", choices=["float32", "int8"])
    p.add_argument("--layout", choices=["NCHW", "NHWC"],
                   help="conv layout inside the module (default: the target's choice)")
    p.add_argument("--io", choices=["float32", "uint8"], default="float32",
                   help="image tensors in and out of the module: float32 on [0, 1] or "
                        "uint8 pixels (no float conversion on the device)")
    p.add_argument("--frame", choices=["yuv420p", "rgb24"], default="",
                   help="also compile frame(): one raw video frame of --size in, the "
                        "upscaled frame out, colour work included (runtime.stream uses it)")
    p.add_argument("--tuning-db", help="MetaSchedule database folder (default: committed one)")
    p.add_argument("--out", default="artifacts", help="parent folder of the artifact")
    p.add_argument("--dump-ir", metavar="DIR", help="write the IR after every pass")
    p.add_argument("--weights", help="checkpoint (default: the committed one)")
    p.add_argument("--reference-dataset", default="set5",
                   help="dataset for the reference PSNR in the manifest ('' to skip)")
    q = p.add_argument_group("int8")
    q.add_argument("--observer", default="mse", choices=["minmax", "percentile", "mse"],
                   help="activation range observer (default mse)")
    q.add_argument("--calib-images", type=int, default=64,
                   help="calibration crops from the training sets (default 64)")
    q.add_argument("--calib", metavar="DIR", default="",
                   help="calibrate on this image folder (or dataset name) instead of the "
                        "training sets")
    q.add_argument("--max-psnr-drop", type=float, default=0.1,
                   help="fail when int8 loses more Set5 PSNR than this (dB, default 0.1)")
    q.add_argument("--no-fallback", dest="fallback", action="store_false",
                   help="full int8: every tensor 8-bit, every layer quantized (no 16-bit "
                        "activations, no float fallback)")


def build_config(args: argparse.Namespace):
    """``BuildConfig`` from parsed ``add_build_args`` arguments."""
    from .pipeline import BuildConfig

    size, dynamic = args.size, args.dynamic is not None
    if dynamic and args.dynamic != "default":
        size = parse_size(args.dynamic)
    return BuildConfig(model=args.model, target=args.target, size=size, dynamic=dynamic,
                       dtype=args.dtype, tuning_db=args.tuning_db, out=args.out,
                       dump_ir=args.dump_ir, weights=args.weights,
                       reference_dataset=args.reference_dataset, observer=args.observer,
                       calib_images=args.calib_images, calib=args.calib,
                       max_psnr_drop=args.max_psnr_drop,
                       fallback=args.fallback, layout=args.layout, io=args.io,
                       frame=args.frame)


def tune_config(args: argparse.Namespace, trials: int):
    """``TuneConfig`` from parsed build + tune arguments."""
    from .pipeline.tune import TuneConfig

    return TuneConfig(build=build_config(args), trials=trials, minutes=args.minutes,
                      per_iter=args.per_iter, timeout=args.timeout, number=args.number,
                      tracker=args.tracker, device=args.device, key=args.key,
                      missing_only=args.missing_only,
                      kernels=args.kernel or [])


def add_tune_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tuning")
    g.add_argument("--minutes", type=float, default=0, help="wall-clock budget (0: none)")
    g.add_argument("--per-iter", type=int, default=16,
                   help="candidates per kernel per search step (a round is kernels x this; "
                        "smaller rounds suit slow devices, default 16)")
    g.add_argument("--timeout", type=float, default=60.0,
                   help="seconds one candidate may take to build or run (default 60; "
                        "large kernels on an emulated board need more)")
    g.add_argument("--number", type=int, default=3,
                   help="runs averaged into one measurement (default 3; 1 for kernels that "
                        "take seconds on an emulated board)")
    g.add_argument("--device", help="the board's RPC server HOST:PORT (device targets: "
                                    "python -m runtime.server on the board; no tracker needed)")
    g.add_argument("--tracker", help="tracker HOST:PORT that grants a board (a pool of boards)")
    g.add_argument("--key", default="", help="device key at the tracker (default: the target's)")
    g.add_argument("--missing-only", action="store_true",
                   help="tune only the kernels with no record in the database yet (after a "
                        "graph rewrite changed some)")
    g.add_argument("--kernel", action="append", metavar="NAME",
                   help="tune only kernels whose name contains NAME (repeatable; names as in "
                        "`edge-sr profile`)")


@command
def cmd_tune(args: argparse.Namespace) -> int:
    from .pipeline.tune import tune

    result = tune(tune_config(args, args.trials))
    print(json.dumps(result) if args.json else
          f"{result['state']}: {result['tuned']}/{result['kernels']} kernels have a tuned "
          f"schedule in {result['database']} ({result['records']} records, "
          f"{result['trials']} trials in {result['seconds']} s)")
    return 0


@command
def cmd_prune(args: argparse.Namespace) -> int:
    from .pipeline.prune import PruneConfig, prune

    r = prune(PruneConfig(build=build_config(args), keep=args.keep, dry_run=args.dry_run))
    after = "would keep" if args.dry_run else "kept"
    print(json.dumps(r) if args.json else
          f"{r['database']}: {after} {r['records_after']} of {r['records_before']} records, "
          f"{r['workloads_after']} of {r['workloads_before']} workloads, "
          f"{r['bytes_before'] / 1e6:.2f} -> {r['bytes_after'] / 1e6:.2f} MB "
          f"({r['seconds']} s)")
    return 0


@command
def cmd_build(args: argparse.Namespace) -> int:
    from .pipeline import build

    if args.tune:
        from .pipeline.tune import tune

        tune(tune_config(args, args.tune))
    path = build(build_config(args))
    manifest = json.loads((path / "manifest.json").read_text())
    ref = manifest.get("reference", {})
    tuning = manifest["tuning"]
    default = tuning.get("default_scheduled", 0)
    untuned = (" (no tuning database: dlight's default GPU schedules)"
               if manifest["target"]["kind"] == "cuda" else
               f" (no tuning database: default CPU schedules for {default} of "
               f"{tuning['kernels']} kernels; `edge-sr tune` measures faster ones)")
    if tuning["state"] == "partial":
        untuned = (f" ({tuning.get('tuned')}/{tuning.get('kernels')} kernels in the tuning "
                   f"database, default schedules for {default})")
    state = tuning["state"] + ("" if tuning["state"] == "tuned" else untuned)
    print(f"built {path} in {manifest['build']['seconds']} s: {manifest['model']} for "
          f"{manifest['target']['name']} ({manifest['target']['arch']}), input "
          f"{'x'.join(map(str, manifest['input']['shape']))}, {state}")
    if tuning.get("warning"):
        print(f"edge-sr build: warning: {tuning['warning']}", file=sys.stderr)
    if ref:
        print(f"reference on {ref['dataset']}: PSNR torch {ref['psnr_torch']:.2f} dB, host TVM "
              f"{ref['psnr_tvm_host']:.2f} dB, bicubic {ref['psnr_bicubic']:.2f} dB")
    if "quality" in manifest:
        qual = manifest["quality"]
        print(f"int8 guard: float32 {qual['psnr_float32']:.3f} dB -> int8 "
              f"{qual['psnr_int8']:.3f} dB (drop {qual['drop']:.3f} <= {qual['max_drop']}"
              f"{_goal_note(qual)}); "
              f"16-bit activations: {', '.join(qual.get('int16_activations', [])) or 'none'}; "
              f"float layers: {', '.join(qual['float_layers']) or 'none'}"
              + (f"; ops run in float32: {', '.join(qual['float_ops'])}"
                 if qual.get("float_ops") else ""))
    return 0


def _goal_note(qual: dict) -> str:
    goal = qual.get("goal")
    if goal is None or goal >= qual["max_drop"]:
        return ""
    return f"; model goal {goal}: {'met' if qual['drop'] <= goal else 'NOT met'}"


@command
def cmd_bench_device(args: argparse.Namespace) -> int:
    from .device.rpc import parse_device
    from .harness import BenchConfig, Resilience, bench_device, format_report

    if args.stream:
        return _bench_stream(args)

    restart = None
    if args.serial:
        from .device import RpcConfig, rpc_restarter

        port = parse_device(args.device)[1] if args.device else 9090
        restart = rpc_restarter(console_config(args), RpcConfig(port=port))
    report = bench_device(BenchConfig(
        artifact=args.artifact, device=args.device, tracker=args.tracker, key=args.key,
        dataset=args.dataset, limit=args.limit, repeat=args.repeat, number=args.number,
        timeout=args.timeout, out=args.out, restart=restart,
        resilience=Resilience(call_timeout=args.call_timeout, retries=args.retries)))
    print(json.dumps(report) if args.json else format_report(report))
    if not report["complete"]:
        gaps = report["not_measured"]
        why = gaps[0]["reason"] if gaps else "latency not measured"
        print(f"edge-sr bench-device: error: {len(gaps)} image(s) not measured ({why}); "
              f"partial report in {report['report_dir']}", file=sys.stderr)
        return 1
    return 0


def _bench_stream(args: argparse.Namespace) -> int:
    from runtime.stream import format_report, parse_size

    from .harness.stream import StreamBenchConfig, bench_stream

    report = bench_stream(StreamBenchConfig(
        artifact=args.artifact, device=args.device, tracker=args.tracker, key=args.key,
        size=parse_size(args.stream_size, "--stream-size"), pix_fmt=args.pix_fmt,
        frames=args.frames, side_nice=args.side_nice, timeout=args.timeout,
        serial=console_config(args) if args.serial else None))
    if args.json:
        print(json.dumps(report))
        return 0
    if report["via"] == "serial":
        print(f"over the serial console: artifact in {report['board_artifact']} on the board "
              f"(sent in {report['upload_s']:.1f} s)")
    print(format_report(report))
    return 0


@command
def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runtime.artifact import write_json_atomic

    from .benchmark import bench_models
    from .benchmark.report import markdown, plot_latency, plot_pareto
    from .evaluate import EvalConfig, evaluate

    results = bench_models(args.model, target=args.target, size=args.size, repeat=args.repeat,
                           runtimes=tuple(args.runtimes), device=args.device,
                           timeout=args.timeout, load=args.load, rounds=args.rounds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "bench.json", results)
    (out / "bench.md").write_text(markdown(results) + "\n")
    plot_latency(results, out / "latency.png")
    points = []
    for res in results:
        fp32 = res["runtimes"].get("tvm_tuned_fp32", {})
        if "median_ms" in fp32:
            psnr = evaluate(EvalConfig(res["model"], "set5"))["mean"]["psnr"]
            points.append({"label": f"{res['model']} fp32", "scale": res["scale"],
                           "psnr": psnr, "latency_ms": fp32["median_ms"]})
        int8 = res["runtimes"].get("tvm_tuned_int8", {})
        if "median_ms" in int8:
            points.append({"label": f"{res['model']} int8", "scale": res["scale"],
                           "psnr": int8["set5_psnr"], "latency_ms": int8["median_ms"]})
    if points:
        plot_pareto(points, out / "pareto.png")
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results))
    else:
        print(markdown(results))
        print(f"written: {out}/bench.json, bench.md, latency.png" + (", pareto.png" if points
                                                                      else ""))
    return 0


@command
def cmd_pareto(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runtime.artifact import write_json_atomic

    from .benchmark.pareto import (
        ParetoConfig,
        format_pareto,
        format_pruning,
        plot_zoo,
        zoo_points,
    )

    points = zoo_points(ParetoConfig(models=args.model or [], target=args.target,
                                     runtime=args.runtime, output=args.output,
                                     datasets=args.dataset, repeat=args.repeat,
                                     device=args.device, timeout=args.timeout,
                                     rounds=args.rounds))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "pareto.json", points)
    plot_zoo(points, out / "pareto.png")
    print(json.dumps(points) if args.json else format_pareto(points))
    if not args.json:
        pruning = format_pruning(points)
        if pruning:
            print(f"\n{pruning}")
        print(f"written: {out}/pareto.json, pareto.png")
    return 0 if all("latency_ms" in p for p in points) else 1


@command
def cmd_profile(args: argparse.Namespace) -> int:
    from .device.rpc import DeviceError
    from .harness.profile import format_profile, profile_artifact

    if args.onnxruntime and (args.device or args.tracker):
        raise DeviceError("--onnxruntime profiles on this machine only: leave out "
                           "--device/--tracker")
    if args.ncnn:
        from .baselines.ncnn_profile import require

        require()  # before the TVM profile, not after it
    prof = profile_artifact(args.artifact, args.device, args.tracker, args.key, args.repeat)
    out, tables = {"tvm": prof}, [format_profile(prof)]
    if args.onnxruntime:
        from .baselines.onnxrt_profile import format_ort_profile, profile_onnxruntime

        out["onnxruntime"] = profile_onnxruntime(args.artifact, args.repeat)
        tables.append(format_ort_profile(out["onnxruntime"]))
    if args.ncnn:
        from .baselines.ncnn_profile import format_ncnn_profile, profile_ncnn

        out["ncnn"] = profile_ncnn(args.artifact, args.device, args.tracker, args.key,
                                   args.repeat)
        tables.append(format_ncnn_profile(out["ncnn"]))
    if args.json:
        print(json.dumps(prof if len(out) == 1 else out))
    else:
        print("\n\n".join(tables))
    return 0


def console_config(args: argparse.Namespace):
    """The serial console settings of a command (password only from a file or the env)."""
    from pathlib import Path

    from .device import ConsoleConfig

    password = Path(args.password_file).read_text().strip() if args.password_file else None
    return ConsoleConfig(args.serial, baudrate=args.baud, user=args.user, password=password,
                         timeout=args.serial_timeout)


@command
def cmd_device(args: argparse.Namespace) -> int:
    from .device import RpcConfig, SerialConsole, board_info, start_rpc, stop_rpc

    with SerialConsole(console_config(args)) as con:
        if args.action == "info":
            info = board_info(con)
            if args.json:
                print(json.dumps(info))
            else:
                for key, value in info.items():
                    print(f"{key:<14} {value if value is not None else '-'}")
        elif args.action == "start-rpc":
            res = start_rpc(con, RpcConfig(port=args.port, host=args.bind,
                                           tracker=args.tracker, key=args.key))
            state = "already running" if res["already_running"] else "started"
            print(f"RPC server {state} on the board, port {res['port']} (pid {res['pid']}, "
                  f"log {res['log']})")
        else:
            stopped = stop_rpc(con, args.port)
            print("RPC server stopped" if stopped else "no RPC server of ours was running")
    return 0


def add_console_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--serial", required=required,
                   help="console: /dev/ttyUSB0, a PTY path, socket://HOST:PORT (pyserial URL)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--user", help="login name (default $EDGE_SR_SERIAL_USER)")
    p.add_argument("--password-file",
                   help="file holding the password (default $EDGE_SR_SERIAL_PASSWORD)")
    p.add_argument("--serial-timeout", type=float, default=30.0,
                   help="seconds to wait for a prompt or a command")


def _runtimes() -> tuple[str, ...]:
    from .benchmark.runtimes import RUNTIMES

    return RUNTIMES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-sr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the model registry")

    p = sub.add_parser("train", help="train a model on its recipe (resumable)")
    p.add_argument("--model", required=True)
    recipe = "default: the model's recipe (edge_sr/models/recipe.py)"
    p.add_argument("--iters", type=int, help=f"steps of the schedule; {recipe}")
    p.add_argument("--batch", type=int, help=recipe)
    p.add_argument("--lr-patch", type=int, help=f"LR patch side in pixels; {recipe}")
    p.add_argument("--lr", type=float, help=f"peak learning rate; {recipe}")
    p.add_argument("--warmup", type=int, help=f"linear warm-up steps; {recipe}")
    p.add_argument("--downscales", type=float, nargs="*", metavar="F",
                   help="extra training images: each one bicubic-downscaled by these "
                   f"factors in (0, 1), e.g. 0.9 0.8 0.7 0.6; {recipe}")
    p.add_argument("--lr-mult", nargs="*", metavar="NAME=F",
                   help="per-layer learning-rate multipliers replacing the recipe's: "
                   "parameters whose name contains NAME learn at lr * F (first match "
                   f"wins), e.g. deconv=0.1; none: every layer at lr; {recipe}")
    p.add_argument("--loss",
                   help=f"pixel loss: l1 or mse; {recipe}")
    p.add_argument("--ema", type=float, metavar="DECAY",
                   help="validate and export a moving average of the weights with this "
                   f"decay per step, e.g. 0.999 (0: off); {recipe}")
    p.add_argument("--seed", type=int, help=f"seed of the init and the sampler; {recipe}")
    p.add_argument("--out", help="run folder (default runs/MODEL)")
    p.add_argument("--val-every", type=int, help=recipe)
    p.add_argument("--export", help="best weights path (default: the committed location; "
                   "written only when they beat it on the held-out images)")
    p.add_argument("--init", help="start from these weights")
    p.add_argument("--adversarial", action="store_true", help="add the SRGAN adversarial loss")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast (default: where the hardware has it)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help=f"torch.compile the training step; {recipe}")
    p.add_argument("--qat", action="store_true",
                   help="quantization-aware fine-tuning for int8 (writes MODEL.qat.pt)")
    p.add_argument("--finish", action="store_true",
                   help="the recipe's finishing fine-tune (float32, downscaled copies, low "
                   "rate) from --init or the committed weights; run folder runs/MODEL/finish")
    p.add_argument("--teacher", help="a model of the same scale and colour whose committed "
                   "weights teach this one (its outputs, computed once, are a second L1 "
                   f"target); '' for none; {recipe}")
    p.add_argument("--teacher-x8", action=argparse.BooleanOptionalAction, default=None,
                   help="the teacher's output is the mean over the eight flips and rotations "
                   "of each image (EDSR's self-ensemble; eight passes at start-up)")
    p.add_argument("--distill", type=float, default=1.0,
                   help="weight of the L1 distance to the teacher's output (QAT: the float "
                   "model's)")
    p.add_argument("--stop-after", type=int, default=0,
                   help="checkpoint and stop after N steps this run (rerun to continue)")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="checkpoint and stop after M minutes this run (rerun to continue)")

    p = sub.add_parser("train-zoo", help="advance every recipe's resumable run in "
                       "edge_sr/weights/runs (a time budget; rerun to continue)")
    p.add_argument("--model", action="append", help="only these models (repeatable)")
    p.add_argument("--minutes", type=float, default=60.0, help="total budget of this call")
    p.add_argument("--runs", default="", help="runs folder (default edge_sr/weights/runs)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, one process each (a GPU fits every zoo run "
                        "side by side; keep 1 on a small CPU)")
    p.add_argument("--early", action="store_true",
                   help="start pruned/transferred runs from their source's committed "
                        "weights before its schedule ends (recorded in source.json)")
    p.add_argument("--weights", default="",
                   help="folder for each run's best weights (default: the committed files, "
                        "replaced only when a run beats them on the held-out images)")

    p = sub.add_parser("eval", help="PSNR/SSIM of a model vs bicubic on a dataset")
    p.add_argument("--model", required=True,
                   help="registry name, MODULE:FACTORY or a .pt2 file")
    add_model_hints(p)
    p.add_argument("--dataset", default="set5", help="name under shared/datasets or a folder")
    p.add_argument("--weights")
    p.add_argument("--limit", type=int, default=0, help="first N images only")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("zoo", help="evaluate every committed model (a markdown table)")
    p.add_argument("--dataset", nargs="+", default=["set5"])
    p.add_argument("--model", nargs="*", help="only these models")
    p.add_argument("--json", action="store_true")

    sub.add_parser("targets", help="list the device targets")
    p = sub.add_parser("build", help="compile a model into a deployable artifact")
    add_build_args(p)
    p.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                   help="tune this many trials into the database first")
    add_tune_args(p)

    p = sub.add_parser("tune", help="MetaSchedule tuning into the database build applies")
    add_build_args(p)
    p.add_argument("--trials", type=int, default=64, help="measured candidates this run")
    p.add_argument("--json", action="store_true")
    add_tune_args(p)

    p = sub.add_parser("prune", help="keep only the records a model's builds use in its "
                                     "tuning database")
    add_build_args(p)
    p.add_argument("--keep", type=int, default=8, help="best records kept per kernel")
    p.add_argument("--dry-run", action="store_true", help="count only, write nothing")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("bench-device", help="run an artifact on a device over RPC")
    p.add_argument("--artifact", required=True)
    p.add_argument("--device", default="127.0.0.1:9090", help="RPC server HOST:PORT")
    p.add_argument("--tracker", help="RPC tracker HOST:PORT (use with --key)")
    p.add_argument("--key", default="", help="device key at the tracker, e.g. rpi4")
    p.add_argument("--dataset", default="set5")
    p.add_argument("--limit", type=int, default=0, help="first N images only")
    p.add_argument("--repeat", type=int, default=10, help="time_evaluator repeats")
    p.add_argument("--number", type=int, default=1, help="calls per repeat")
    p.add_argument("--timeout", type=float, default=600, help="RPC session timeout (s)")
    p.add_argument("--out", help="report folder (default reports/ARTIFACT)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--call-timeout", type=float, default=300,
                   help="seconds one remote call may take before the device counts as hung")
    p.add_argument("--retries", type=int, default=3, help="reconnection attempts after a fault")
    p.add_argument("--stream", action="store_true",
                   help="time the device's stream pipeline (runtime.stream) on noise frames "
                   "against its module alone, instead of images; with --serial, over the "
                   "console (artifact sent over it too), no RPC")
    p.add_argument("--stream-size", default="640x360", help="stream frame WIDTHxHEIGHT")
    p.add_argument("--pix-fmt", choices=("yuv420p", "rgb24"), default="yuv420p")
    p.add_argument("--frames", type=int, default=30, help="stream frames timed")
    p.add_argument("--side-nice", type=int, default=10,
                   help="niceness added to the stream's threads beside the module's")
    add_console_args(p, required=False)

    p = sub.add_parser("bench", help="latency of PyTorch, ONNX Runtime and TVM side by side")
    p.add_argument("--model", nargs="+", default=["fsrcnn_x2"],
                   help="registry names, MODULE:FACTORY references or .pt2 files")
    add_model_hints(p)
    p.add_argument("--target", default="host")
    p.add_argument("--size", type=parse_size, default=None,
                   help="LR input HxW (default 360x640; 180x320 for x4 models)")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--runtimes", nargs="+", default=list(_runtimes()),
                   help="subset of: %(default)s")
    p.add_argument("--device", help="RPC HOST:PORT for device targets (emulated Pi: "
                                    "127.0.0.1:9090)")
    p.add_argument("--timeout", type=float, default=300,
                   help="RPC session seconds per device runtime and round (warm-up and "
                        "timed calls; default 300)")
    p.add_argument("--rounds", type=int, default=1,
                   help="time the runtimes this many times each, in turn (the median of "
                        "the rounds is reported): on a machine whose speed drifts, 3-5 "
                        "rounds compare like with like")
    p.add_argument("--load", type=int, default=0, metavar="N",
                   help="also time every runtime with N processes spinning on the machine "
                        "that runs it (here, or the device), and report the slowdown")
    p.add_argument("--out", default="reports/bench", help="folder for json, md and png")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("pareto", help="PSNR against latency for every zoo model at one "
                                      "output size, frontier per scale (the pruning study "
                                      "is its x4 panel)")
    p.add_argument("--model", nargs="+", help="default: every model with a checkpoint")
    p.add_argument("--target", default="host")
    p.add_argument("--runtime", default="tvm_default_fp32",
                   choices=["tvm_default_fp32", "tvm_tuned_fp32", "tvm_tuned_int8",
                            "onnxruntime_fp32"])
    p.add_argument("--output", type=parse_size, default=(720, 1280),
                   help="HR frame HxW every model delivers (default 720x1280)")
    p.add_argument("--dataset", nargs="+", default=["set5", "set14"],
                   help="PSNR on each; the first is plotted")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--rounds", type=int, default=1,
                   help="time the models in turn this many times (median of the rounds)")
    p.add_argument("--device", help="RPC HOST:PORT for device targets")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--out", default="reports/pareto", help="folder for json and png")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("profile", help="per-kernel times of an artifact, mapped to layers")
    p.add_argument("--artifact", required=True)
    p.add_argument("--device", help="RPC server HOST:PORT (default: run here)")
    p.add_argument("--tracker", help="RPC tracker HOST:PORT (use with --key)")
    p.add_argument("--key", default="")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--onnxruntime", action="store_true",
                   help="also ONNX Runtime's per-node profile of the same model and input "
                        "(this machine only)")
    p.add_argument("--ncnn", action="store_true",
                   help="also ncnn's per-layer profile of the same model and input, where "
                        "the artifact runs")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("device", help="the board over its serial console (info, RPC server)")
    p.add_argument("action", choices=["info", "start-rpc", "stop-rpc"])
    add_console_args(p, required=True)
    p.add_argument("--port", type=int, default=9090, help="RPC server port on the board")
    p.add_argument("--bind", default="127.0.0.1",
                   help="address the RPC server binds (non-loopback adds --allow-remote)")
    p.add_argument("--tracker", help="register the server with this tracker HOST:PORT")
    p.add_argument("--key", default="", help="tracker key")
    p.add_argument("--json", action="store_true")
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the user gave bad input": printed as one line."""
    from runtime.artifact import ArtifactError
    from runtime.stream import StreamError
    from runtime.upscale import ImageError
    from targets import TargetError

    from .data.datasets import DatasetError
    from .errors import EdgeSRError
    from .models import ModelError

    return (EdgeSRError, DatasetError, ModelError, TargetError, ArtifactError, ImageError,
            StreamError, FileNotFoundError)


def _declare_models(args: argparse.Namespace) -> None:
    """Apply ``--scale``/``--colour`` to the models a command names (``models.declare``)."""
    scale, colour = getattr(args, "scale", None), getattr(args, "colour", None)
    if scale is None and colour is None:
        return
    from .models import declare

    for ref in args.model if isinstance(args.model, list) else [args.model]:
        declare(ref, scale, colour)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``edge-sr`` and ``python -m edge_sr``."""
    args = build_parser().parse_args(argv)
    prepare()  # TVM's pool and MetaSchedule's workers: one thread per core, workers sleep
    try:
        _declare_models(args)
        return COMMANDS[args.command](args)
    except _user_errors() as exc:
        print(f"edge-sr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM to a training run: it checkpointed
        print(f"edge-sr {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edge-sr targets | head`: the reader left, not an error
        sys.stderr.close()
        return 0
