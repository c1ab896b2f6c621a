"""Prices in fiat: the rate sources and how each is read (`sources`), their quotes and the currencies asked for in
the database (`store`), the rate rule and a price's USDT amount (`rule`), and the background refresh run by one
process at a time (`refresher`)."""
