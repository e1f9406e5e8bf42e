"""The machine's ceiling per precision: how fast this CPU multiplies two 2048² matrices in fp32,
int8 and bf16, measured in the same run as the artifacts, so each row reads as a % of its own
precision's limit (export.bench.run measures fp32 with NumPy and TensorFlow; in the paired rounds,
fp32 is ONNX Runtime's `MatMul`, whose threads can be told to sleep after a run).

- int8: ONNX Runtime's `MatMulInteger` (uint8 activations x int8 weights → int32, the U8S8
  scheme of the ONNX int8 artifacts, VNNI kernels where the CPU has them), and OpenVINO on a
  FakeQuantize(u8) x int8-weights matmul (what its low-precision transformations turn an NNCF
  IR's layers into). Counted as 2·n³ integer operations ("GOP/s").
- bf16: OpenVINO's fp32 matmul compiled at the bf16 inference precision hint; only where the CPU
  has bf16 units (AMX-BF16 or AVX512-BF16), otherwise recorded as skipped.
Each is the best of `reps` timed runs after one warm-up.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

#: Which precision each kind of row is measured against (a row's precision, or its runner hint).
PRECISIONS = ("fp32", "int8", "bf16")


def time_matmul(matmul, n: int, reps: int) -> dict[str, Any]:
    """GFLOP/s of an n x n x n matmul (2 n^3 operations): best and median of `reps` timed runs."""
    matmul()  # warm-up: thread pool start, page faults, tracing
    seconds = []
    for _ in range(reps):
        t = time.perf_counter()
        matmul()
        seconds.append(time.perf_counter() - t)
    flops = 2.0 * n ** 3
    return {"gflops": round(flops / min(seconds) / 1e9, 2),
            "gflops_median": round(flops / float(np.median(seconds)) / 1e9, 2),
            "seconds": [round(s, 5) for s in seconds]}


def _ort_int8_kernel(n: int, threads: int, spinning: bool = True) -> tuple[Any, str]:
    """(run, kernel text): ONNX Runtime's MatMulInteger on a u8 [n, n] x s8 [n, n], built once.
    `spinning` False: its threads sleep after a run (beside other runtimes in the paired rounds)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    b = rng.integers(-127, 128, size=(n, n), dtype=np.int8)
    node = helper.make_node("MatMulInteger", ["a", "b", "a_zero", "b_zero"], ["y"])
    consts = [numpy_helper.from_array(b, "b"), numpy_helper.from_array(np.array(128, np.uint8), "a_zero"),
              numpy_helper.from_array(np.array(0, np.int8), "b_zero")]
    a = rng.integers(0, 256, size=(n, n), dtype=np.uint8)
    return _ort_kernel(node, consts, TensorProto.UINT8, TensorProto.INT32, a, threads, spinning,
                       "MatMulInteger u8×s8")


def _ort_fp32_kernel(n: int, threads: int, spinning: bool = True) -> tuple[Any, str]:
    """(run, kernel text): ONNX Runtime's float32 MatMul on [n, n] x [n, n] (MLAS, the kernels of the
    ONNX fp32 artifacts), built once; `spinning` as for _ort_int8_kernel."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    consts = [numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "b")]
    a = rng.standard_normal((n, n), dtype=np.float32)
    return _ort_kernel(helper.make_node("MatMul", ["a", "b"], ["y"]), consts, TensorProto.FLOAT, TensorProto.FLOAT,
                       a, threads, spinning, "MatMul fp32")


def _ort_kernel(node, consts, in_type: int, out_type: int, a: np.ndarray, threads: int, spinning: bool,
                name: str) -> tuple[Any, str]:
    """One ONNX Runtime session running `node` on the input `a` [n, n] and the constants: (run, kernel text)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", in_type, list(a.shape))],
                              [helper.make_tensor_value_info("y", out_type, list(a.shape))], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return (lambda: sess.run(None, {"a": a})), f"{name} (ONNX Runtime {ort.__version__}, onnx {onnx.__version__})"


def _ort_int8(n: int, reps: int, threads: int) -> dict[str, Any]:
    run, kernel = _ort_int8_kernel(n, threads)
    return {"precision": "int8", "library": "onnxruntime", "kernel": kernel, **time_matmul(run, n, reps)}


def _openvino_model(n: int, int8: bool):
    from export.core.telemetry import import_openvino
    ov = import_openvino()
    import openvino.opset13 as ops
    rng = np.random.default_rng(0)
    a = ops.parameter([n, n], ov.Type.f32, name="a")
    if int8:
        lo, hi = ops.constant(np.float32(0.0)), ops.constant(np.float32(4.0))
        x = ops.fake_quantize(a, lo, hi, lo, hi, 256)
        w = ops.constant(rng.integers(-127, 128, size=(n, n), dtype=np.int8))
        w = ops.multiply(ops.convert(w, ov.Type.f32), ops.constant(np.float32(0.01)))
    else:
        x = a
        w = ops.constant(rng.standard_normal((n, n), dtype=np.float32))
    return ov.Model([ops.matmul(x, w, False, False)], [a], "gemm")


def _openvino_kernel(n: int, threads: int, precision: str) -> tuple[Any, str] | str:
    """(run, kernel text) of OpenVINO's int8 (FakeQuantize(u8) x int8 weights) or fp32 matmul at the
    precision's hint, built once; or why it was not (the plugin compiled another precision)."""
    from export.core.telemetry import import_openvino
    ov = import_openvino()
    core = ov.Core()
    hint = "bf16" if precision == "bf16" else "f32"
    compiled = core.compile_model(_openvino_model(n, precision == "int8"), "CPU",
                                  {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
                                   "PERFORMANCE_HINT": "LATENCY"})
    got = str(compiled.get_property("INFERENCE_PRECISION_HINT").to_string())
    if got != hint:
        return f"compiled in {got}, not {hint}"
    request = compiled.create_infer_request()
    a = np.random.default_rng(1).uniform(0, 4, size=(n, n)).astype(np.float32)
    kernel = ("FakeQuantize(u8) × int8 weights matmul" if precision == "int8" else f"matmul at the {hint} hint")
    return (lambda: request.infer({"a": a})), f"{kernel} (OpenVINO {ov.__version__})"


def _openvino(n: int, reps: int, threads: int, precision: str) -> dict[str, Any]:
    built = _openvino_kernel(n, threads, precision)
    if isinstance(built, str):
        return {"precision": precision, "library": "openvino", "skipped": built}
    run, kernel = built
    return {"precision": precision, "library": "openvino", "kernel": kernel, **time_matmul(run, n, reps)}


def measure(n: int, reps: int, threads: int, bf16_unit: str | None) -> list[dict[str, Any]]:
    """The int8 and bf16 measurements (fp32's are export.bench.run's); a failing one is recorded
    with its error, a bf16 one on a CPU without bf16 units as skipped."""
    from export.core.errors import first_line
    out = []
    jobs = [("int8", lambda: _ort_int8(n, reps, threads), "onnxruntime"),
            ("int8", lambda: _openvino(n, reps, threads, "int8"), "openvino")]
    if bf16_unit:
        jobs.append(("bf16", lambda: _openvino(n, reps, threads, "bf16"), "openvino"))
    else:
        out.append({"precision": "bf16", "library": "openvino", "skipped": "skipped: no bf16 hardware"})
    for precision, job, library in jobs:
        try:
            out.append(job())
        except Exception as e:  # noqa: BLE001 -- a runtime that cannot run the kernel is recorded, not fatal
            out.append({"precision": precision, "library": library, "error": first_line(e)})
    return out


def paired_kernels(n: int, threads: int, bf16_unit: str | None) -> dict[str, dict[str, Any]]:
    """The ceiling GEMMs, built once, for the paired rounds (export.bench.paired times them in turn with a
    variant's artifacts, so that a row and its ceiling meet the same machine): label -> {"precision",
    "library", "kernel", "ops" (2 n^3), "run"}. fp32: ONNX Runtime's MatMul; int8: ONNX Runtime (their
    threads sleep after a run) and OpenVINO; bf16 where the CPU has the units. NumPy's matmul, the run's
    best fp32 at its start and end, is not paired: its BLAS threads spin after a matmul, and in the rounds
    they slowed the next run, the int8 GEMMs' included, ~2x (measured). One that cannot be built is left out."""
    builders: dict[str, tuple[str, Any]] = {
        "fp32:onnxruntime": ("fp32", lambda: _ort_fp32_kernel(n, threads, spinning=False)),
        "int8:onnxruntime": ("int8", lambda: _ort_int8_kernel(n, threads, spinning=False)),
        "int8:openvino": ("int8", lambda: _openvino_kernel(n, threads, "int8"))}
    if bf16_unit:
        builders["bf16:openvino"] = ("bf16", lambda: _openvino_kernel(n, threads, "bf16"))
    out: dict[str, dict[str, Any]] = {}
    for label, (precision, build) in builders.items():
        try:
            built = build()
        except Exception:  # noqa: BLE001 -- left out, as in measure(): the unpaired ceilings record why
            continue
        if isinstance(built, tuple):
            out[label] = {"precision": precision, "library": label.split(":")[1], "kernel": built[1],
                          "ops": 2.0 * n ** 3, "run": built[0]}
    return out


def best_by_precision(measurements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per precision, the best measurement (fp32 rows carry no `precision` field: fp32)."""
    best: dict[str, dict[str, Any]] = {}
    for m in measurements:
        if m.get("gflops") is None:
            continue
        p = m.get("precision", "fp32")
        if p not in best or m["gflops"] > best[p]["gflops"]:
            best[p] = {"gflops": m["gflops"], "library": m["library"], "kernel": m.get("kernel", ""),
                       "when": m.get("when")}
    return best


def row_precision(row: dict[str, Any]) -> str:
    """The ceiling a bench row is held to: int8 for int8 artifacts (whatever the hint: their
    quantized layers dominate), bf16 at the bf16 hint, fp32 otherwise (fp16 weights compute in f32)."""
    if row.get("precision") in ("int8", "dynamic"):
        return "int8"
    return "bf16" if row.get("precision_hint") == "bf16" else "fp32"
