"""profile_step's choice of kernel events in a profiler trace (synthetic event lists)."""

from benchmarks import profile_step


def _meta(pid, name, tid=None):
  e = {"ph": "M", "pid": pid, "name": "process_name" if tid is None else "thread_name",
       "args": {"name": name}}
  if tid is not None:
    e["tid"] = tid
  return e


def _x(pid, tid, name, dur):
  return {"ph": "X", "pid": pid, "tid": tid, "ts": 0.0, "dur": dur, "name": name}


# As jax 0.10's XLA:CPU trace (profile_step --top 3): one process, /host:CPU, whose
# python thread holds the host's spans and whose client thread runs the kernels,
# each followed by a nested "end: <kernel>" event.
CPU_TRACE = [
    _meta(701, "/host:CPU"),
    {"ph": "M", "pid": 701, "name": "process_sort_index", "args": {"sort_index": 701}},
    _meta(701, "python", tid=1), _meta(701, "tf_XLAPjRtCpuClient/0", tid=2),
    _x(701, 1, "$profiler.py:307 trace", 36.0),
    _x(701, 1, "PjitFunction(run)", 107.0),
    _x(701, 1, "CommonPjRtLoadedExecutable::ExecuteHelperOnSingleDevice", 33.0),
    _x(701, 2, "ThreadpoolListener::StartRegion", 0.0),
    _x(701, 2, "dot.6", 30.0),
    _x(701, 2, "end: dot.6", 0.3),
    _x(701, 2, "ynn_fusion.3", 20.0),
    _x(701, 2, "end: ynn_fusion.3", 0.4),
    _x(701, 2, "ThunkExecutor::Execute (wait for completion)", 0.02),
    {"ph": "i", "pid": 701, "tid": 2, "name": "instant"},
]

# A GPU trace: the host process holds the launches, the stream syncs and the
# executable's Execute spans; the device process holds the kernels on its stream.
GPU_TRACE = [
    _meta(1, "/host:CPU"), _meta(1, "python", tid=10),
    _meta(2, "/device:GPU:0"), _meta(2, "Stream #13(Compute)", tid=13),
    _meta(2, "XLA Ops", tid=100),  # derived from the kernels, if present: not counted again
    _x(1, 10, "PjitFunction(run)", 500.0),
    _x(1, 10, "CommonPjRtLoadedExecutable::Execute", 400.0),
    _x(1, 10, "cuLaunchKernel", 5.0),
    _x(1, 10, "cuLaunchKernel", 5.0),
    _x(1, 10, "cuStreamSynchronize", 300.0),
    _x(1, 10, "loop_add_fusion", 7.0),  # a host event named like a kernel: still host
    _x(2, 13, "loop_add_fusion", 12.0),
    _x(2, 13, "gemm_fusion_dot", 40.0),
    _x(2, 13, "loop_add_fusion", 11.0),
    _x(2, 100, "loop_add_fusion", 23.0),
]


def _names(events):
  return [(e["name"], e["dur"]) for e in events]


def test_cpu_trace_keeps_the_kernels_and_drops_the_host_spans():
  assert _names(profile_step.kernel_events(CPU_TRACE)) == [("dot.6", 30.0), ("ynn_fusion.3", 20.0)]


def test_gpu_trace_counts_the_device_processes_events_only():
  assert _names(profile_step.kernel_events(GPU_TRACE)) == [
      ("loop_add_fusion", 12.0), ("gemm_fusion_dot", 40.0), ("loop_add_fusion", 11.0)]


def test_every_device_counts():
  two = GPU_TRACE + [_meta(3, "/device:GPU:1"), _meta(3, "Stream #7", tid=7),
                     _x(3, 7, "gemm_fusion_dot", 41.0)]
  assert sum(e["dur"] for e in profile_step.kernel_events(two)) == 12 + 40 + 11 + 41
