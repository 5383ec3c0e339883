"""`--ray`: the research commands (model build, evaluate, backtest, dataset build) on a Ray cluster.

Ray is an optional extra (`pip install 'vlmtrader[ray]'`) and is imported only inside
`ray_session` (session.py) and the worker-side modules it loads, never by the daemon. What runs
where:
- config.py       RayConfig (the `ray:` YAML section and the `--ray [ADDRESS]` flag)
- session.py      connect to (or start) Ray, with a one-line ClusterError when that fails
- tasks.py        RayTaskMap: the core's TaskMap (vlm_engine.shards) as Ray tasks, retried, in order
- clip_scores.py  chart rendering + CLIP scoring as Ray Data batch inference (one warm engine per
                  actor), sharded by symbol and bar range; workers read bars from a shared path
- bars_input.py   the workers' side of "read inputs from a path every node sees" (stream batches
                  for evaluate/backtest, chart windows for dataset build's rendering shards)
"""
