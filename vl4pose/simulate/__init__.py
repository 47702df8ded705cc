"""The active-learning simulation with ground truth as the annotator (docs/SIMULATION.md).

- :mod:`vl4pose.simulate.config`: the protocol's settings and bookkeeping helpers;
- :mod:`vl4pose.simulate.protocol`: :class:`~vl4pose.simulate.protocol.Simulation`, which runs or resumes it;
- :mod:`vl4pose.simulate.analysis`: failure detection and refinement of one model on a test split;
- :mod:`vl4pose.simulate.report`: ``table.md``, ``curve.png``, ``failure.md``;
- :mod:`vl4pose.simulate.cli`: the ``vl4pose simulate`` and ``vl4pose analyse-scores`` commands.
"""
