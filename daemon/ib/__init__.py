"""Interactive Brokers, in one package: everything the daemon knows about IB Gateway lives here.

config     IbConfig: how to reach the gateway, which contracts, bar size, pacing, backoff
session    IbSession: one ib_async connection that reconnects forever, and IB's status codes
contracts  our contract configs as ib_async contracts, and back to our symbols
hours      MarketHours: when a contract trades, from IB's contract details
pacing     RequestPacer, PacedGate: IB's historical-data pacing rules
history    PacedHistory: historical-data requests through the pacer
bars       IB's bars as ours: conversion, 5-second real-time aggregation, batches by close time
feed       IbFeed: the daemon's Feed (qualify, backfill, live subscriptions, stale watchdog)
execution  IbExecution: orders, fills and the broker's view of the account
download   `vlmtrader ib history` as a library: days of bars to Parquet, resumable
"""
