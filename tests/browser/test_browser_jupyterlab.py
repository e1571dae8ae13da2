"""In JupyterLab, as a person would: the panel makes an image without blocking the kernel; %%flux shows its card."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

PROMPT = "A lighthouse on a basalt cliff at dawn, volumetric fog"


def _run_new_cell(page: Any, code: str) -> Any:
    """Insert a cell at the end of the notebook, run it, and return its output area."""
    page.locator(".jp-Notebook .jp-Cell").last.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    editor = page.locator(".jp-Notebook .jp-Cell").last.locator(".cm-content")
    editor.click()
    editor.type(code)
    page.keyboard.press("Shift+Enter")
    return page.locator(".jp-Notebook .jp-Cell").filter(has_text=code).last.locator(".jp-OutputArea-output")


def test_the_panel_generates_into_its_gallery_while_the_kernel_stays_free(lab: Any, page: Any, screenshot: Any) -> None:
    from playwright.sync_api import expect

    lab.run_all(page, "panel.ipynb")
    panel = page.locator(".flux-panel")
    prompt = page.locator(".flux-prompt textarea")
    prompt.wait_for(timeout=120_000)  # Run All returns when the first cell starts; a loaded machine imports slowly
    prompt.fill(PROMPT)
    expect_estimate = panel.locator(".flux-estimate")
    assert "20 credits" in expect_estimate.inner_text()

    page.locator("button.flux-generate").click()
    job = panel.locator(".flux-job").first
    job.wait_for()
    assert re.search(r"\d+\.\d s", job.inner_text()), job.inner_text()

    # Another cell runs to completion while the job is still in flight: the panel never blocks the kernel.
    output = _run_new_cell(page, "6 * 7")
    output.filter(has_text="42").wait_for()
    assert panel.locator(".flux-job").count() == 1, "the job finished before the cell ran; slow the sandbox down"
    screenshot(panel, "panel-job-in-flight")

    thumbnail = panel.locator(".flux-gallery img").first
    thumbnail.wait_for(timeout=60_000)
    assert thumbnail.evaluate("img => img.complete && img.naturalWidth > 0")
    expect(panel.locator(".flux-job")).to_have_count(0)  # the row leaves in the update after the picture's
    assert "20 credits" in panel.locator(".flux-account").inner_text()
    caption = Image.open(io.BytesIO(panel.locator(".flux-gallery .flux-caption").first.screenshot())).convert("L")
    dark = sum(caption.histogram()[:80]) / (caption.width * caption.height)
    assert dark < 0.1, f"{dark:.0%} of the thumbnail's caption is dark: the picture is painted over it"

    panel.locator(".flux-gallery .flux-thumb").first.click()  # the thumbnail's open button covers the picture
    detail = panel.locator(".flux-detail")
    detail.locator("img").wait_for()
    text = detail.inner_text()
    job_id = detail.locator("code").inner_text()
    assert re.fullmatch(r"job_\w+", job_id), job_id
    assert PROMPT in text
    assert "20 credits" in text
    assert "1024×1024" in text
    assert detail.locator(f"a[href*='{job_id}']").count() >= 1, "no link to the full-resolution file"
    assert detail.locator("img").evaluate("img => img.naturalWidth > 0")
    assert panel.locator(".flux-banner").is_hidden()
    detail.scroll_into_view_if_needed()
    screenshot(panel, "panel-gallery-detail")


def test_a_flux_cell_renders_its_result_card_with_the_image(lab: Any, page: Any, screenshot: Any) -> None:
    lab.write_notebook(
        "card.ipynb", ["%load_ext doitong_nb", "%%flux --size 512x512 --seed 1\nA red fox asleep in fresh snow"]
    )

    lab.run_all(page, "card.ipynb")
    image = page.locator(".jp-OutputArea-output img").first
    image.wait_for(timeout=60_000)
    assert image.evaluate("img => img.complete && img.naturalWidth > 0")
    card = page.locator(".jp-OutputArea-output").filter(has=page.locator("img")).first
    assert "job_" in card.inner_text()
    assert "credits" in card.inner_text()
    screenshot(card, "flux-cell-card")
