"""The `--ray [ADDRESS]` flag of the research commands (model build, evaluate, backtest, dataset build)."""

from __future__ import annotations

import argparse

LOCAL = "local"  # daemon.cluster.config.LOCAL; not imported so that --help loads nothing more


def add_ray_argument(parser: argparse.ArgumentParser) -> None:
    """--ray alone starts a local Ray; --ray auto / HOST:PORT / ray://HOST:10001 joins a cluster."""
    parser.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        default=None,
        metavar="ADDRESS",
        help="run on Ray: alone, a local Ray on this machine; 'auto', HOST:PORT or "
        "ray://HOST:10001 joins a cluster (needs pip install 'vlmtrader[ray]'; "
        "the bars path must be readable by every node)",
    )
