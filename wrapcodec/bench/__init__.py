"""The benches: ``wrapcodec bench`` (RD points of every option × QP × sequence, BD-rate
tables) and ``wrapcodec bench-effort`` (what each effort level of the encoder costs and loses).

- :mod:`~wrapcodec.bench.points`: one RD point, what determines it and how it is measured;
- :mod:`~wrapcodec.bench.plan`: the run as asked for (:class:`~wrapcodec.bench.plan.BenchConfig`)
  and its points;
- :mod:`~wrapcodec.bench.cache`: the one cache of finished results both benches use;
- :mod:`~wrapcodec.bench.run`: measuring on local processes or a Dask cluster, and
  :func:`~wrapcodec.bench.run.run_bench`, the whole of ``bench``;
- :mod:`~wrapcodec.bench.analysis`: frontiers and BD-rates as typed results;
- :mod:`~wrapcodec.bench.report`: results.json, points.csv, report.md, RD plots, versions;
- :mod:`~wrapcodec.bench.effort`: the effort bench, through the same cache, runner and files.
"""
