"""The widget panel against a real sandbox, without a browser: clicks return at once, jobs finish in the background."""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pytest
from IPython.testing.globalipapp import get_ipython

from doitong_nb._notebook.panel import FluxPanel, _Job, flux_cell
from doitong_nb._runtime.client import Flux
from doitong_sandbox import Sandbox

PROMPT = "A lighthouse on a basalt cliff at dawn"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """Slower than conftest's (whose `flux` fixture uses this one): a panel's job is still in flight
    when its click returns."""
    with Sandbox(speed=200) as sb:
        yield sb


def _settle(panel: FluxPanel, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while panel.running:
        assert time.monotonic() < deadline, "the panel's jobs did not finish"
        time.sleep(0.02)


def _generate(panel: FluxPanel, prompt: str = PROMPT) -> None:
    panel.prompt.value = prompt
    panel.generate.click()
    _settle(panel)


def test_the_estimate_follows_the_size(flux: Flux) -> None:
    panel = FluxPanel(flux)
    assert "20 credits" in panel.estimate.value
    panel.size.value = "2048x2048"
    assert "30 credits" in panel.estimate.value
    panel.count.value = 3
    assert "90 credits" in panel.estimate.value


def test_a_custom_size_is_validated_live(flux: Flux) -> None:
    panel = FluxPanel(flux)
    panel.size.value = ""
    assert panel.custom_size.layout.display == ""
    panel.custom_size.value = "1000x1000"
    assert "multiple of 16" in panel.estimate.value
    panel.custom_size.value = "1536x1024"
    assert "1536x1024" in panel.estimate.value


def test_generate_returns_at_once_and_the_job_lands_in_the_gallery(sandbox: Sandbox, flux: Flux) -> None:
    panel = FluxPanel(flux)
    panel.prompt.value = PROMPT
    with sandbox.jobs_held():  # the click returns while its job cannot have ended
        panel.generate.click()
        assert panel.running == 1 and len(panel.jobs.children) == 1
    _settle(panel)
    assert len(panel.gallery.children) == 1 and not panel.jobs.children
    (result,) = panel.results
    assert result.path.is_file() and not result.replayed
    assert "20 credits" in panel.account.value
    panel.gallery.children[0].children[-1].click()  # the thumbnail's open button
    assert panel.detail.layout.display == ""
    assert result.job_id in panel.detail_view.value and "20 credits" in panel.detail_view.value
    assert panel.errors == []


def test_each_job_reports_its_status_while_it_runs(sandbox: Sandbox, flux: Flux) -> None:
    panel = FluxPanel(flux)
    panel.prompt.value = PROMPT
    panel.count.value = 2
    with sandbox.jobs_held():  # both rows stay until the test has read them
        panel.generate.click()
        deadline = time.monotonic() + 30
        while "processing" not in panel.jobs.children[0].value and time.monotonic() < deadline:
            time.sleep(0.02)
        rows = [row.value for row in panel.jobs.children]
        assert len(rows) == 2 and all(" s" in row for row in rows) and "processing" in rows[0]
    _settle(panel)
    assert len(panel.gallery.children) == 2


def test_a_click_for_several_images_on_the_free_plan_is_paced_and_never_refused(tmp_path: Path) -> None:
    """The free plan runs one job at a time: the panel's images go through the batch scheduler, which waits for
    the slot instead of sending a job the service would refuse (CONCURRENCY_LIMITED) or a request over the rate."""
    with Sandbox(plan="free", credits=1000, speed=200) as box:
        with Flux(api_key=box.api_key, base_url=box.base_url, output_dir=tmp_path) as flux:
            panel = FluxPanel(flux)
            panel.count.value = 4
            _generate(panel)
        total = box.stats()["total"]
    assert len(panel.gallery.children) == 4 and panel.banner.value == ""  # no error shown
    assert (total["submissions"], total["rate_limited"]) == (4, 0)


def test_the_same_request_again_is_replayed_and_marked(flux: Flux) -> None:
    panel = FluxPanel(flux)
    panel.seed.value = "7"
    _generate(panel)
    spent = flux.session_credits
    _generate(panel)
    newest = panel.results[0]
    assert newest.replayed and flux.session_credits == spent
    assert "replayed" in panel.gallery.children[0].children[1].value
    assert "flux-replayed" in panel.gallery.children[0]._dom_classes


def test_a_thumbnail_caption_shows_the_seed_on_its_own_line(flux: Flux) -> None:
    """After the badge and the cost, a 10-digit seed was cut off by the caption's ellipsis (issue 15)."""
    panel = FluxPanel(flux)
    panel.seed.value = "2147483000"
    _generate(panel)
    _generate(panel)  # replayed: the badge too
    captions = [thumb.children[1].value for thumb in panel.gallery.children]
    assert captions[0] == '<div>seed 2147483000</div><div><span class="flux-badge">replayed</span> 0 credits</div>'
    assert captions[1] == "<div>seed 2147483000</div><div>20 credits</div>"


def test_the_budget_refuses_a_click_with_advice_that_fits(sandbox: Sandbox, flux: Flux) -> None:
    panel = FluxPanel(flux)
    panel.budget.value = "50"
    panel.count.value = 4  # 4 x 20 credits
    panel.prompt.value = PROMPT
    panel.generate.click()
    assert panel.errors == [
        "Flux error: these 4 images cost 80 credits and the session has spent 0 of its 50-credit budget, 50 left: "
        "2 of them fit: ask for fewer or raise the budget"
    ]
    assert panel.running == 0


def test_the_budget_refuses_before_sending(sandbox: Sandbox, flux: Flux) -> None:
    panel = FluxPanel(flux)
    _settle(panel)
    submissions = sandbox.stats()["total"]["submissions"]
    panel.budget.value = "25"
    panel.size.value = "2048x2048"  # 30 credits
    panel.prompt.value = PROMPT
    panel.generate.click()
    assert panel.running == 0
    assert "budget" in panel.banner.value and panel.banner.layout.display == ""
    assert sandbox.stats()["total"]["submissions"] == submissions


def test_generate_is_disabled_while_its_images_run(sandbox: Sandbox, flux: Flux) -> None:
    """Issue 24: a double click made two rows and a duplicate thumbnail."""
    panel = FluxPanel(flux)
    panel.seed.value = "7"
    panel.prompt.value = PROMPT
    with sandbox.jobs_held():  # the first job is still running at the second click, however fast the sandbox
        panel.generate.click()
        assert panel.generate.disabled and panel.running == 1
        panel.generate.click()  # the second click of a double click: on its way when the button was disabled
        assert panel.running == 1 and len(panel.jobs.children) == 1
    _settle(panel)
    assert not panel.generate.disabled and panel.generate.description == "Generate"
    assert len(panel.results) == 1 and len(panel.gallery.children) == 1
    panel.generate.click()  # free again: the same request, replayed
    _settle(panel)
    assert len(panel.results) == 2 and panel.results[0].replayed


def test_the_panel_speaks_plainly(flux: Flux) -> None:
    """Issue 24: "0 status reads", "Transport graphql" and "Budget 0" meant nothing to a user."""
    panel = FluxPanel(flux)
    labels = [getattr(w, "description", "") for w in _walk(panel.widget)]
    assert "Transport" not in labels and "Budget" not in labels and "Spend at most" in labels
    assert panel.budget.value == "" and panel.budget.placeholder == "no limit" and "limit" not in panel.account.value
    panel.budget.value = "40"
    assert "limit 40 credits" in panel.account.value
    panel.budget.value = "forty"
    panel.prompt.value = PROMPT
    panel.generate.click()
    assert panel.errors == ["Flux error: spend limit 'forty' must be a whole number of credits"] and not panel.running
    job = _Job(1, panel.requests("x")[0][0], widgets.HTML())
    panel._progress(job)("processing", 2.0, "3 status reads")  # as the engine reports a running job
    assert "processing" in job.row.value and "status read" not in job.row.value


def _walk(widget: Any) -> Iterator[Any]:
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def test_quality_and_format_reach_the_request_and_the_estimate(flux: Flux) -> None:
    panel = FluxPanel(flux)
    assert [v for _, v in panel.quality.options] == ["", "standard", "high"]
    assert panel.requests("x")[0][0].quality is None
    panel.quality.value, panel.output_format.value = "high", "png"
    ((request, _),) = panel.requests("x")
    assert (request.quality, request.output_format) == ("high", "png")
    assert f"{request.estimated_credits} credits" in panel.estimate.value
    _generate(panel)
    (result,) = panel.results
    assert result.request.quality == "high" and result.path.suffix == ".png"


def test_insufficient_credits_show_in_the_banner(tmp_path: Path) -> None:
    with (
        Sandbox(speed=200, credits=10) as poor,
        Flux(api_key=poor.api_key, base_url=poor.base_url, output_dir=tmp_path) as flux,
    ):
        panel = FluxPanel(flux)
        panel.size.value = "2048x2048"
        _generate(panel)
    (error,) = panel.errors
    assert "needs 30 credits, 10 left" in error
    assert "Traceback" not in panel.banner.value
    assert not panel.gallery.children
    panel.dismiss.click()
    assert panel.banner.layout.display == "none" and panel.errors == []


def test_bad_input_shows_in_the_banner_and_sends_nothing(sandbox: Sandbox, flux: Flux) -> None:
    panel = FluxPanel(flux)
    _settle(panel)
    submissions = sandbox.stats()["total"]["submissions"]
    panel.seed.value = "seven"
    panel.generate.click()
    panel.seed.value = ""
    panel.generate.click()  # the prompt is empty
    assert panel.errors == ["Flux error: prompt is empty; describe the image you want"]
    assert sandbox.stats()["total"]["submissions"] == submissions


def test_two_panels_keep_their_own_jobs(flux: Flux) -> None:
    first, second = FluxPanel(flux), FluxPanel(flux)
    _generate(first, "a red fox in snow")
    assert len(first.results) == 1 and second.results == [] and not second.gallery.children
    _generate(second, "a blue heron at dusk")
    assert [r.request.prompt for r in first.results] == ["a red fox in snow"]
    assert [r.request.prompt for r in second.results] == ["a blue heron at dusk"]


def test_the_dice_rolls_a_seed(flux: Flux) -> None:
    panel = FluxPanel(flux)
    panel.dice.click()
    assert panel.seed.value.isdigit()


def test_without_a_client_the_panel_uses_the_loaded_extension(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DOITONG_API_KEY", raising=False)
    shell = get_ipython()
    shell.run_line_magic("load_ext", "doitong_nb")
    shell.run_line_magic("config", f"Flux.output_dir = {str(tmp_path)!r}")
    magics = next(m for m in shell.magics_manager.registry.values() if type(m).__name__ == "Flux")
    panel = FluxPanel()
    assert panel._client() is magics.client  # one store, replay, journal and rate budget with %%flux
    panel._executor.shutdown(wait=True)  # its account query ends under this test's environment, not the next's


def _outputs(shell: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Any], Any, bool]]:
    """What is sent to the notebook: (data, display id, whether an update) for each display, in order."""
    sent: list[tuple[dict[str, Any], Any, bool]] = []

    def publish(data: dict[str, Any], metadata: Any = None, *, transient: Any = None, update: bool = False, **_: Any):
        sent.append((data, (transient or {}).get("display_id"), update))

    monkeypatch.setattr(shell.display_pub, "publish", publish)
    return sent


def test_a_panel_result_is_written_into_the_notebook_as_a_card(flux: Flux, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24: saved and reopened, the panel's cell showed `VBox(children=(HTML(value="<style>...` and nothing
    of its images. Shown, the panel is followed by an ordinary output, updated by display id with the cards."""
    from IPython.display import display
    from IPython.terminal.interactiveshell import TerminalInteractiveShell

    sent = _outputs(TerminalInteractiveShell.instance(), monkeypatch)
    panel = FluxPanel(flux)
    display(panel.widget)
    widget_view, record = sent[0][0], sent[1]
    assert widget_view["text/plain"].startswith("Flux panel (interactive") and "VBox" not in widget_view["text/plain"]
    assert "application/vnd.jupyter.widget-view+json" in widget_view
    assert record[1] is not None and not record[2] and "No images yet" in record[0]["text/plain"]
    panel.seed.value = "11"
    _generate(panel)
    data, display_id, update = sent[-1]
    (result,) = panel.results
    assert update and display_id == record[1]
    assert data["text/html"].count("<figure") == 1 and data["text/html"].count("base64,") == 1
    assert result.job_id in data["text/html"] and result.job_id in data["text/plain"]
    assert html.escape(flux_cell(result)) in data["text/html"]


def test_copy_as_flux_cell_offers_the_code_that_replays_the_result(
    sandbox: Sandbox, tmp_path: Path, shell_for: Any
) -> None:
    """The offered code, run as a %%flux cell, makes the same image again: replayed, at 0 credits."""
    shell = shell_for(sandbox, tmp_path / "out")
    magics = next(m for m in shell.magics_manager.registry.values() if type(m).__name__ == "Flux")
    panel = FluxPanel(lambda: magics.client)
    panel.aspect.value, panel.seed.value, panel.raw.value, panel.quality.value = "16:9", "5", True, "high"
    _generate(panel, "50% off {brackets} and $dollars")  # what the cell's expansion would eat unescaped
    (made,) = panel.results
    panel.gallery.children[0].children[-1].click()  # the thumbnail's open button
    assert panel.cell_code.layout.display == "none"
    panel.copy_cell.click()
    code = panel.cell_code.value
    assert panel.cell_code.layout.display == "" and code == flux_cell(made)
    line, cell = code.split("\n", 1)
    spent = magics.client.session_credits
    shell.run_cell_magic("flux", line.removeprefix("%%flux ") + " -o again", cell)
    again = shell.user_ns["again"]
    assert again.replayed and again.job_id == made.job_id and magics.client.session_credits == spent


def test_an_unseeded_result_is_redone_with_the_seed_the_service_chose(flux: Flux) -> None:
    panel = FluxPanel(flux)
    _generate(panel)
    (made,) = panel.results
    assert made.request.seed is None and made.seed is not None
    assert flux_cell(made) == f"%%flux --size 1024x1024 --seed {made.seed}\n{PROMPT}"
