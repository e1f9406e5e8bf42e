"""Beam's overhead, measured: `score` on a runner next to a plain Python loop doing the same work.

    python -m serving.scoring.bench dist/resnet50-heads-1 --model dense --format onnx --images 192

Both sides read the same JPEG files, decode and resize them by the image contract (export.images),
run the same ModelHandler (load once, batches of the bundle's max_batch_size) and write the
same JSON rows; the loop does it in order in this process, `score` through fileio,
BatchElements and RunInference on the runner (DirectRunner unless Beam options say
otherwise). Prints images/s for each and the ratio; the model load is inside both timings.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def write_images(folder: Path, n: int, size: int = 320) -> list[Path]:
    """`n` JPEGs (the sample photos, cycled, each re-encoded at a slightly different size)."""
    from PIL import Image

    from export.model import samples
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        name = samples.PHOTO_NAMES[i % len(samples.PHOTO_NAMES)]
        path = folder / f"{i:05d}_{name}.jpg"
        Image.fromarray(samples.load_photo(name, size + i % 7)).save(path, quality=90)
        paths.append(path)
    return paths


def plain_loop(job, paths: list[Path], out: Path) -> float:
    """Seconds to score `paths` in a loop with `job`'s handler; rows written to `out`."""

    from export.images import ImageContract, pil
    from serving.scoring.handlers import make_handler
    from serving.scoring.pipeline import to_row
    start = time.perf_counter()
    handler = make_handler(job.format, job.artifact, num_threads=job.num_threads, max_batch_size=job.max_batch_size)
    model = handler.load_model()
    with open(out, "w") as f:
        for i in range(0, len(paths), job.max_batch_size):
            chunk = paths[i:i + job.max_batch_size]
            batch = [pil.decode(p.read_bytes(), ImageContract(job.input_size, job.aspect)) for p in chunk]
            for path, result in zip(chunk, handler.run_inference(batch, model), strict=True):
                row = to_row((str(path), result), job)
                f.write(json.dumps(row) + "\n")
    return time.perf_counter() - start


def _top1(lines: list[str]) -> dict[str, int]:
    return {row["path"]: row["top_k"][0]["index"] for row in map(json.loads, lines)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle")
    p.add_argument("--model", required=True)
    p.add_argument("--format", default="savedmodel")
    p.add_argument("--precision", default=None)
    p.add_argument("--images", type=int, default=192)
    p.add_argument("--repeats", type=int, default=3, help="timings per side, in alternating order (median kept)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--runner", default="DirectRunner")
    p.add_argument("--json", action="store_true")
    args, beam_args = p.parse_known_args(argv)
    import os
    import statistics
    from dataclasses import replace

    from export import import_tensorflow_quietly
    from serving.scoring import pipeline as scoring
    from serving.scoring.command import quiet_beam_logging
    quiet_beam_logging()
    import_tensorflow_quietly()  # TF loaded before either timing
    loop_s: list[float] = []
    beam_s: list[float] = []
    load = [round(os.getloadavg()[0], 2)]
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-scorebench.") as tmp:
        work = Path(tmp)
        paths = write_images(work / "images", args.images)
        job = scoring.plan(args.bundle, args.model, str(work / "images"), str(work / "beam" / "scores"),
                           args.format, args.precision, num_threads=args.threads)
        for i in range(args.repeats):  # loop first, then score first, ...: no side always runs warm
            for which in (("loop", "score") if i % 2 == 0 else ("score", "loop")):
                if which == "loop":
                    loop_s.append(plain_loop(job, paths, work / "loop.jsonl"))
                else:
                    summary = scoring.run(replace(job, output=str(work / f"beam{i}" / "scores")), args.runner,
                                          beam_args)
                    assert summary.scored == len(paths), f"score wrote {summary.scored} rows for {len(paths)} images"
                    beam_s.append(summary.seconds)
                load.append(round(os.getloadavg()[0], 2))
        same = _top1((work / "loop.jsonl").read_text().splitlines()) == _top1(
            [line for shard in summary.outputs for line in Path(shard).read_text().splitlines()])
    n = len(paths)

    def side(times: list[float]) -> dict[str, object]:
        return {"seconds": [round(t, 2) for t in times], "images_per_second": round(n / statistics.median(times), 2)}
    result = {"bundle": str(args.bundle), "model": args.model, "format": job.format, "precision": job.precision,
              "images": n, "max_batch_size": job.max_batch_size, "runner": args.runner, "beam_args": beam_args,
              "cpus": os.cpu_count(), "load_1m": load, "same_top1": same,
              "plain_loop": side(loop_s), "score": side(beam_s)}
    result["score_vs_loop"] = round(statistics.median(loop_s) / statistics.median(beam_s), 3)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{job.model} {job.format} {job.precision}: {n} JPEGs, batches of {job.max_batch_size}, model load "
          f"included, median of {args.repeats}; 1-min load average {load} on {os.cpu_count()} CPUs")
    print(f"  plain loop          {result['plain_loop']['images_per_second']:8.2f} images/s  {loop_s}")
    print(f"  score ({args.runner}) {result['score']['images_per_second']:8.2f} images/s  {beam_s}  "
          f"= {result['score_vs_loop']:.2f}x the loop; same top-1: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
