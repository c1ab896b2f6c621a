"""Deposit addresses: a fresh address per payment, derived from the merchant's account xpub (infra.xpub): the
index each create takes, and the addresses taken with what reached them."""
