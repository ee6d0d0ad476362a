"""The artifact link check behind docs/screenshots.py, and the data card's plot in the Prefect UI."""

import base64
import io
import sys

from PIL import Image

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "docs"))
from screenshots import check_markdown

from tasks.manifest.datacard import inline_images


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def test_a_relative_plot_is_broken_in_the_prefect_ui_and_inlined_it_shows(tmp_path):
    (tmp_path / "balance").mkdir()
    (tmp_path / "balance" / "balance.png").write_bytes(_png())
    card = "## Balancing\n\n![cumulative match count](balance/balance.png)\n"
    assert check_markdown(card)  # what the Prefect UI got before: a 404
    assert check_markdown(card, tmp_path) == []  # beside its files (MLflow's artifacts) it resolves
    inlined = inline_images(card, tmp_path)
    assert "data:image/png;base64," in inlined and check_markdown(inlined) == []


def test_links_are_fetched_and_bad_images_reported():
    statuses = {"http://127.0.0.1:5000/#/experiments/1/runs/abc": 200, "http://127.0.0.1:4200/runs/flow-run/x": 404}
    md = ("[MLflow](http://127.0.0.1:5000/#/experiments/1/runs/abc) [build](http://127.0.0.1:4200/runs/flow-run/x) "
          f"![ok](data:image/png;base64,{base64.b64encode(_png()).decode()}) ![bad](data:image/png;base64,AAAA)")
    broken = check_markdown(md, fetch=statuses.get)
    assert len(broken) == 2 and "HTTP 404" in broken[0] and "not a decodable image" in broken[1]
