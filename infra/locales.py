"""The catalogues of texts in each language (`web/locales/<language>.json`): the checkout page's and the operator
notifications'. One file per language, the same keys in each; English is the default."""
from __future__ import annotations

import json
from pathlib import Path

LOCALES = Path(__file__).resolve().parent.parent / "web" / "locales"
CATALOGUES: dict[str, dict[str, str]] = {
    path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(LOCALES.glob("*.json"))
}
DEFAULT_LANGUAGE = "en"
