"""Issue 21 in a real browser: a Korean user's panel in JupyterLab, made Korean as a user makes it (a
`%config Flux.language = "ko"` cell: per notebook, where DOITONG_LANG would have to be set before Jupyter starts),
shows its labels, buttons and tooltips in Korean and makes an image with no English sentence of ours."""

from __future__ import annotations

import gettext
from typing import Any

import pytest

from doitong_nb._core import i18n
from tests.test_i18n import english_words

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

KOREAN = gettext.translation(i18n.DOMAIN, i18n.LOCALE_DIR, languages=["ko"])
PROMPT = "새벽녘 현무암 절벽 위의 등대, 볼류메트릭 안개"
LABELS = ("Size", "Aspect", "Seed", "Quality", "Spend at most", "Generate")  # shown as the catalog's Korean
TOOLTIPS = ("roll a random seed", "the natural, less processed look")  # a button's tooltip is its title
# What a person reads in an element: its rendered text (not display:none), every tooltip, placeholder and alt text
# (hidden ones too: they show once their widget does, but for the empty description label ipywidgets hides for
# good on a widget that has no description), and each dropdown's option labels.
_SHOWN = """element => [
  element.innerText,
  ...[...element.querySelectorAll('[title], [placeholder], [alt]')]
    .filter(e => !(e.matches('label.widget-label') && e.style.display === 'none' && !e.textContent))
    .flatMap(e => ['title', 'placeholder', 'alt'].map(name => e.getAttribute(name) || '')),
  ...[...element.querySelectorAll('option')].map(option => option.textContent),
].join('\\n')"""


def korean(message: str) -> str:
    """The catalog's Korean for one of our messages; one left in English would make the check below vacuous."""
    translated = KOREAN.gettext(message)
    assert translated != message, f"{message!r} has no Korean in the catalog"
    return translated


def test_a_korean_user_s_panel_shows_korean_labels_and_card(lab: Any, page: Any, screenshot: Any) -> None:
    from playwright.sync_api import expect

    lab.write_notebook("panel_ko.ipynb", ["%load_ext doitong_nb", '%config Flux.language = "ko"', "%flux_panel"])
    lab.run_all(page, "panel_ko.ipynb")
    panel = page.locator(".flux-panel")
    prompt = panel.locator(".flux-prompt textarea")
    prompt.wait_for(timeout=120_000)  # Run All returns when the first cell starts; a loaded machine imports slowly
    expect(prompt).to_have_attribute(
        "placeholder", korean("Describe the image: a lighthouse on a basalt cliff at dawn, volumetric fog…")
    )
    for label in LABELS:
        expect(panel.get_by_text(korean(label), exact=True).first).to_be_visible()
    for tooltip in TOOLTIPS:
        expect(panel.locator(f'[title="{korean(tooltip)}"]').first).to_be_attached()
    expect(panel.locator(".flux-account")).to_contain_text(korean("sandbox"))

    prompt.press_sequentially(PROMPT)
    twenty = KOREAN.ngettext("{n} credit", "{n} credits", 20).format(n=20)
    expect(panel.locator(".flux-estimate")).to_contain_text(twenty)
    panel.locator("button.flux-generate").click()
    job = panel.locator(".flux-job").first
    job.wait_for()
    assert english_words(job.inner_text()) == [], job.inner_text()

    thumbnail = panel.locator(".flux-gallery .flux-thumb").first
    thumbnail.locator("img").wait_for(timeout=60_000)
    expect(panel.locator(".flux-job")).to_have_count(0)  # the job row leaves once its image is in the gallery
    expect(panel.locator("button.flux-generate")).to_have_text(korean("Generate"))
    expect(thumbnail.locator(".flux-caption")).to_contain_text(twenty)
    assert english_words(thumbnail.evaluate(_SHOWN)) == [], thumbnail.evaluate(_SHOWN)

    thumbnail.click()  # the large view: the card as %%flux shows it, with Close and Copy as %%flux cell
    panel.locator(".flux-detail img").wait_for()
    expect(panel.get_by_text(korean("Copy as %%flux cell"), exact=True)).to_be_visible()
    cell = page.locator(".jp-Notebook .jp-CodeCell").filter(has=panel)
    record = cell.locator(".jp-OutputArea-output").filter(has_not=panel).last  # the saved cards below the panel
    record.locator("img").first.wait_for()
    shown = "\n".join(cell.locator(".jp-OutputArea-output").evaluate_all(f"elements => elements.map({_SHOWN})"))
    assert PROMPT in shown
    assert english_words(shown) == [], shown
    expect(cell.locator('[title="null"]:visible')).to_have_count(0)  # nothing a user can hover says "null"
    screenshot(cell.locator(".jp-OutputArea"), "panel-korean")
