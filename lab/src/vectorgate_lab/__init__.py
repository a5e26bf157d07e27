"""vectorgate's lab: the research tools that live beside the library, not inside it.

- :mod:`vectorgate_lab.compare`: the comparison harness (tasks x residual variants x seeds),
  its tasks and its report (``vectorgate-lab compare``).
- :mod:`vectorgate_lab.bench`: op-level and model-step benchmarks and the kernel checks
  (``vectorgate-lab bench``).
- :mod:`vectorgate_lab.assets`: the offline pretrained model and data sets the examples,
  benchmarks and tests use.
- :mod:`vectorgate_lab.peers`: residual peers that are not ``(x, f) -> y`` gates and so are
  not library variants (Hyper-Connections, mHC).

The lab imports the library (``vectorgate``); the library never imports the lab. Install
both from the repository: ``pip install -e . -e lab`` (``scripts/bootstrap.sh`` does).
"""
