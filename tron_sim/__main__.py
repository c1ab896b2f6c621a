"""``python -m tron_sim --port 9000 [--block-interval 3] [--solidify-depth 19] [--no-v1] ...`` (``--help``)."""
from __future__ import annotations

import argparse
import logging
import signal
import threading

from tron_sim.chain import USDT_MAINNET
from tron_sim.simulator import Simulator

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tron_sim", description="TronGrid-compatible TRON simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--block-interval", type=float, default=3.0,
                        help="seconds between mined blocks; 0 = only on POST /_sim/mine")
    parser.add_argument("--solidify-depth", type=int, default=19)
    parser.add_argument("--usdt-contract", default=USDT_MAINNET)
    parser.add_argument("--start-time-ms", type=int, default=None, help="timestamp of the head block at start")
    parser.add_argument("--no-v1", action="store_true", help="answer 404 on /v1/... like a bare java-tron node")
    parser.add_argument("--follow-clock", action="store_true",
                        help="never mine a block older than the wall clock (chain time keeps up with real time)")
    parser.add_argument("--usdt-noise-per-block", type=int, default=1,
                        help="USDT transfers between random addresses in every mined block; 0 = none")
    parser.add_argument("--seed", type=int, default=None, help="seed of the noise transfers' addresses and amounts")
    parser.add_argument("--node-lag-fraction", type=float, default=0.0,
                        help="share of /wallet and /walletsolidity requests answered by a node that lags behind")
    parser.add_argument("--node-lag-blocks", type=int, default=0, help="how many blocks that node is behind")
    parser.add_argument("--node-lag-seed", type=int, default=None)
    parser.add_argument("--index-lag", type=float, default=0.0, metavar="SECONDS",
                        help="/v1 lists only blocks this much older (chain time) than the solid head")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> Simulator:
    sim = Simulator(block_interval=args.block_interval, solidify_depth=args.solidify_depth,
                    usdt_contract=args.usdt_contract, v1_api=not args.no_v1, start_time_ms=args.start_time_ms,
                    follow_clock=args.follow_clock, usdt_noise_per_block=args.usdt_noise_per_block, seed=args.seed)
    sim.set_node_lag(args.node_lag_fraction, args.node_lag_blocks, args.node_lag_seed)
    sim.set_index_lag(args.index_lag)
    return sim


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sim = build(args)
    except ValueError as exc:
        raise SystemExit(f"python -m tron_sim: {exc}") from None
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    url = sim.start(args.host, args.port)
    print(f"tron_sim listening on {url} (USDT {args.usdt_contract})", flush=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
