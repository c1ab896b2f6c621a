"""ISO 4217: the currency codes a price may be given in (the active list of the ISO 4217 maintenance agency, SIX:
https://www.six-group.com/en/products-services/financial-information/data-standards.html), without XTS (reserved for
testing) and XXX (no currency). Which of them can be priced is up to the rate sources and FIXED_RATES (rates/)."""
from __future__ import annotations

import re

_ACTIVE_CODES = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF CHE
CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ
GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD
MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG
QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD
TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU
XUA YER ZAR ZMW ZWG ZWL
"""
ISO_4217 = frozenset(_ACTIVE_CODES.split())
CODE = re.compile(r"^[A-Za-z]{3}$")


def is_iso_4217(code: str) -> bool:
    """Whether `code` (any case) is an active ISO 4217 currency code."""
    return bool(CODE.fullmatch(code)) and code.upper() in ISO_4217
