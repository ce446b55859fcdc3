"""Debian's Chromium driven by Selenium through Debian's chromedriver (both installed by `make
install`): no browser or driver is downloaded. Selenium is synchronous; the async tests call it
through ``asyncio.to_thread``."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "web/node_modules/axe-core/axe.min.js"
SERIOUS = ("serious", "critical")
T = TypeVar("T")


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


class Browser:
    """One headless Chromium; ``quit`` ends it (and its driver process)."""

    def __init__(self, browser: str, driver: str) -> None:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1500,950",
        ):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(executable_path=driver), options=options)

    def quit(self) -> None:
        self.driver.quit()

    def fresh(self) -> None:
        """Forget the log-in (cookies) between tests."""
        self.driver.delete_all_cookies()

    def open(self, url: str) -> None:
        self.driver.get(url)

    def log_in(self, base: str, key: str) -> None:
        self.driver.get(f"{base}/board/login")
        field = self.driver.find_element(By.ID, "key")
        field.send_keys(key)
        field.submit()
        self.wait_css("h1", timeout=20)

    def wait_css(self, selector: str, timeout: float) -> WebElement:
        element: WebElement = WebDriverWait(self.driver, timeout).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, selector)),
            f"nothing matched {selector} in {timeout}s",
        )
        return element

    def on(self, selector: str, action: Callable[[WebElement], T], timeout: float = 20) -> T:
        """``action`` on the element ``selector`` finds, done again on the new element when a live
        refresh replaced it meanwhile (the board swaps its columns whenever anything changes)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return action(self.wait_css(selector, max(0.5, deadline - time.monotonic())))
            except StaleElementReferenceException:
                if time.monotonic() > deadline:
                    raise

    def css(self, selector: str) -> list[WebElement]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def script(self, source: str, *args: Any) -> Any:
        return self.driver.execute_script(source, *args)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))

    def axe_violations(self) -> list[dict[str, Any]]:
        """axe-core (npm, from the committed lock) run on the page as it is: violations of impact
        serious or critical."""
        self.driver.execute_script(AXE.read_text())
        result: dict[str, Any] = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']}).then(r => done(r), e => done({error: String(e)}));"
        )
        assert "error" not in result, result
        return [
            {"id": v["id"], "impact": v["impact"], "nodes": [n["html"] for n in v["nodes"]][:3]}
            for v in result["violations"]
            if v["impact"] in SERIOUS
        ]
