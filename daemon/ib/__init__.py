"""Interactive Brokers, in one package: everything the daemon knows about IB Gateway lives here.

config     IbConfig: how to reach the gateway, which contracts, bar size, pacing, backoff
hours      MarketHours: when a contract trades, from IB's contract details
pacing     RequestPacer, PacedGate: IB's historical-data pacing rules
feed       IbFeed: closed bars (qualify, backfill, live subscriptions, stale watchdog)
execution  IbExecution: orders, fills and the broker's view of the account
"""
