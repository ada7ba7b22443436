"""Real-browser tests: Debian's headless Chromium, driven by Playwright, against ``ctxsim dashboard``."""

import pytest

from dashboards.browser import CHROMIUM, chromium, free_port, serve, wait_for_page

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def browser_page():
    """A page of a fresh Chromium profile and the base URL of a served dashboard."""
    with serve(free_port()) as base, playwright_api.sync_playwright() as playwright, chromium(playwright) as context:
        yield context.new_page(), base


def _metric(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]').filter(has_text=label)
    return metric.locator('[data-testid="stMetricValue"]').inner_text()


def _number(page, label: str) -> str:
    return page.get_by_role("spinbutton", name=label).input_value()


def test_browser_context_change_updates_view(browser_page):
    page, base = browser_page
    page.goto(f"{base}/?model=llama-3.1-8b")
    wait_for_page(page)

    # Llama-3.1-8B at the default 128K: 32 x 2 x 8 x 128 x 2 B x 131,072 tokens = 16 GiB.
    assert _metric(page, "KV cache per sequence") == "16 GiB"
    breakdown = page.locator('[data-testid="stVegaLiteChart"]').last
    breakdown.scroll_into_view_if_needed()
    chart_before = breakdown.screenshot()

    # One step right on the context slider: 128K -> 256K tokens.
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Context length N")
    slider.get_by_role("slider").focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
        ".some(m => m.innerText.includes('KV cache per sequence') && m.innerText.includes('32 GiB'))",
        timeout=60_000,
    )
    wait_for_page(page)

    assert _metric(page, "KV cache per sequence") == "32 GiB"
    assert "context=256K" in page.url
    breakdown.scroll_into_view_if_needed()
    assert breakdown.screenshot() != chart_before


def test_browser_model_switch_keeps_link_true(browser_page):
    page, base = browser_page
    page.goto(f"{base}/?model=glm-5&design=DSA")
    wait_for_page(page)
    # GLM-5's indexer has 32 heads.
    assert _number(page, "index_n_heads") == "32"

    page.locator('[data-testid="stSelectbox"]').filter(has_text="Model").first.click()
    page.keyboard.type("deepseek-v3.2")
    page.keyboard.press("Enter")
    page.wait_for_function("() => location.search.includes('model=deepseek-v3.2')", timeout=60_000)
    wait_for_page(page)
    # DeepSeek-V3.2's indexer has 64 heads; the page and a reload of its link must agree.
    assert _number(page, "index_n_heads") == "64"
    decode_flops = _metric(page, "Decode FLOPs per token")

    page.goto(page.url)
    wait_for_page(page)
    assert _number(page, "index_n_heads") == "64"
    assert _metric(page, "Decode FLOPs per token") == decode_flops
