"""In Jupyter Notebook 7 (the `notebook` package, served by the same server as the Lab tests) as a person would:
a %%flux cell shows its card with the image, a background cell returns and fills in, and the panel generates."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


def _open_and_run_all(lab: Any, page: Any, notebook: str) -> None:
    pytest.importorskip("notebook", reason="Notebook 7 is the `notebook` package: pip install 'notebook>=7'")
    lab.run_all(page, notebook, app="notebook")


def test_notebook7_shows_a_card_and_a_background_cell_fills_in(lab: Any, page: Any, screenshot: Any) -> None:
    lab.write_notebook(
        "nb7_card.ipynb",
        [
            "%load_ext doitong_nb",
            "%%flux --size 512x512 --seed 1\nA red fox asleep in fresh snow",
            "%%flux --background --size 512x512 --seed 2 -o later\nAn owl on a birch branch at dusk",
            "print('ran while the background job was in flight:', later.done is False)",
        ],
    )
    _open_and_run_all(lab, page, "nb7_card.ipynb")
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    card = cells.nth(1).locator(".jp-OutputArea-output").filter(has=page.locator("img")).first
    card.locator("img").wait_for(timeout=60_000)
    assert card.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
    assert "job_" in card.inner_text() and "credits" in card.inner_text()
    cells.nth(3).locator(
        ".jp-OutputArea-output", has_text="ran while the background job was in flight: True"
    ).wait_for()
    live = cells.nth(2).locator(".jp-OutputArea-output").first
    assert "running in the background" in live.inner_text()
    screenshot(cells.nth(2), "notebook7-background-live")
    cells.nth(2).locator(".jp-OutputArea-output img").first.wait_for(timeout=60_000)  # the card replaces it
    assert "running in the background" not in cells.nth(2).inner_text()
    screenshot(card, "notebook7-flux-cell-card")
    screenshot(page, "notebook7-page")


def test_notebook7_panel_generates_into_its_gallery(lab: Any, page: Any, screenshot: Any) -> None:
    _open_and_run_all(lab, page, "panel.ipynb")
    panel = page.locator(".flux-panel")
    prompt = page.locator(".flux-prompt textarea")
    prompt.wait_for(timeout=120_000)  # Run All returns when the first cell starts; a loaded machine imports slowly
    prompt.fill("A paper lantern floating on a dark lake")
    page.locator("button.flux-generate").click()
    thumbnail = panel.locator(".flux-gallery img").first
    thumbnail.wait_for(timeout=60_000)
    assert thumbnail.evaluate("img => img.complete && img.naturalWidth > 0")
    screenshot(panel, "notebook7-panel")
