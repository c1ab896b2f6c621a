"""What the browser tests share: headless Chromium from the system's packages (/usr/bin/chromium through
/usr/bin/chromedriver; Selenium never downloads one), the app on a real server on 127.0.0.1 with a watcher reading the
TronGrid simulator, and screenshots. A test module calls `skip_without_browser()` first: without the browser its
tests skip, saying why. The fixtures are tests/web/conftest.py's."""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def skip_without_browser() -> None:
    """Skip the calling test module when Selenium or the system's browser is missing."""
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"no system browser: {CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium "
                    "chromium-driver; `python dev.py test` installs them)", allow_module_level=True)


def chrome(width: int = 1100, height: int = 1000, javascript: bool = True, phone: bool = False) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-extensions", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(15)
    if phone:  # a headless window is at least 500 px wide: a phone's viewport is emulated
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
    return driver


def serve(config, db, sim, new_watcher, **overrides: Any) -> Iterator[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    """(base URL, app): the app on a real server, its watcher running every 0.2 s against the simulator."""
    from werkzeug.serving import make_server

    from app import create_app
    from web.services import services_of

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    settings = {"trongrid_api_url": sim.url, "trongrid_max_rps": 2000.0, "watcher_strategy": "account",
                "merchant_name": "Lotus Tea House", **overrides}
    app = create_app(config.with_overrides(**settings), database=db)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    app.extensions["tron"].config = services_of(app).config.with_overrides(public_base_url=base)
    services_of(app).links.base_url = base
    watcher = new_watcher(services_of(app).config)
    watcher.start()
    services_of(app).background.append(watcher)
    services_of(app).wake_watcher = watcher.wake  # as app.start_background plugs it in
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield base, app
    server.shutdown()
    services_of(app).background.remove(watcher)


def console_errors(browser) -> list[dict]:  # type: ignore[no-untyped-def]
    return [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


def requested_urls(browser) -> list[str]:  # type: ignore[no-untyped-def]
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def screenshot(browser, tmp_path: Path, name: str, variable: str = "CHECKOUT_SCREENSHOTS") -> Path:  # type: ignore[no-untyped-def]
    """A PNG of the window in tmp_path; with `variable`=docs in the environment, also into docs/ (the README's)."""
    path = tmp_path / name
    browser.save_screenshot(str(path))
    if os.environ.get(variable) == "docs":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(path, ROOT / "docs" / name)
    return path
