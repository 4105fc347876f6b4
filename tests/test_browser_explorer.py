"""The browser explorer's export and page, without a browser
(tests/browser_check_explorer.py runs the page in Chromium). Tiny untrained models and
synthetic digits, plus one default-size CVAE for the size limits."""

from __future__ import annotations

import base64
import json
import re

import pytest
import torch
from test_explorer import tiny_models

from cvae_helpers.browser_explorer import (
    LAYERS,
    browser_explorer,
    dequantize,
    export_weights,
    exported_cvae,
    javascript_lines,
    pack_layers,
    pixel_error,
    quantize_rows,
    unpack_layers,
)
from cvae_helpers.data import given_quadrants_mask
from cvae_helpers.models import CVAE

DIGITS = [0, 3, 5]


@pytest.fixture(scope="module")
def models_by_q():
    return {q: tiny_models(q) for q in (1, 2, 3)}


@pytest.fixture(scope="module")
def int8(models_by_q):
    return export_weights(models_by_q, DIGITS, fmt="int8")


def test_int8_rows_round_within_half_a_step():
    weight = torch.randn(30, 50) * torch.linspace(0.01, 3, 30)[:, None]
    q, scale = quantize_rows(weight)
    assert q.dtype == torch.int8 and scale.shape == (30,)
    assert torch.equal(q.abs().amax(1), torch.full((30,), 127, dtype=torch.int8))
    assert ((dequantize(q, scale) - weight).abs() <= scale[:, None] / 2 + 1e-7).all()


@pytest.mark.parametrize("fmt", ["int8", "fp16"])
def test_blob_round_trip(models_by_q, fmt):
    cvae = models_by_q[2].cvae
    blob, table = pack_layers(cvae, fmt)
    assert [entry["name"] for entry in table] == list(LAYERS)
    assert all(entry[key] % 4 == 0 for entry in table for key in ("weight", "bias"))
    state = unpack_layers(blob, table, fmt)
    for name in LAYERS:
        weight = cvae.get_submodule(name).weight.detach()
        expected = (
            dequantize(*quantize_rows(weight))
            if fmt == "int8"
            else weight.half().float()
        )
        assert torch.equal(state[f"{name}.weight"], expected)
        assert torch.equal(
            state[f"{name}.bias"], cvae.get_submodule(name).bias.detach()
        )
    with pytest.raises(ValueError, match="Unknown weight format"):
        pack_layers(cvae, "int4")


def test_exported_cvae_changes_only_the_sampling_layers_of_a_copy(models_by_q):
    cvae = models_by_q[1].cvae
    before = {k: v.clone() for k, v in cvae.state_dict().items()}
    copy = exported_cvae(cvae, *pack_layers(cvae, "int8"), "int8")
    assert all(torch.equal(v, cvae.state_dict()[k]) for k, v in before.items())
    assert torch.equal(copy.recognition_net.fc1.weight, cvae.recognition_net.fc1.weight)
    assert not torch.equal(copy.prior_net.fc1.weight, cvae.prior_net.fc1.weight)


def test_manifest_describes_models_blobs_and_digits(models_by_q, int8):
    manifest = int8.manifest
    assert manifest["budget"] == "quick" and manifest["format"] == "int8"
    assert manifest["decoder"].startswith("p(y|z)") and manifest["z_dim"] == 4
    test = models_by_q[1].splits.test
    for entry, index in zip(manifest["digits"], DIGITS, strict=True):
        pixels = torch.frombuffer(
            bytearray(base64.b64decode(entry["pixels"])), dtype=torch.uint8
        )
        assert entry["index"] == index and entry["label"] == int(test.labels[index])
        assert torch.allclose(
            pixels.float() / 255, test.images[index].flatten(), atol=0.5 / 255
        )
    for q, blob in int8.blobs.items():
        setting = manifest["settings"][str(q)]
        assert setting["bytes"] == len(blob) and setting["file"] == f"q{q}.bin"
        exported = exported_cvae(models_by_q[q].cvae, blob, setting["layers"], "int8")
        inputs = torch.where(given_quadrants_mask(q), test.images[DIGITS], -1.0)
        assert (
            setting["max_pixel_error"]
            == pixel_error(models_by_q[q].cvae, exported, inputs)
            > 0
        )


def test_fp16_is_closer_than_int8(models_by_q, int8):
    fp16 = export_weights(models_by_q, DIGITS, fmt="fp16")
    for q in ("1", "2", "3"):
        assert (
            fp16.manifest["settings"][q]["max_pixel_error"]
            < int8.manifest["settings"][q]["max_pixel_error"]
        )


def test_export_refuses_mixed_decoders(models_by_q):
    mixed = dict(models_by_q)
    paper = tiny_models(3)
    paper.spec = paper.spec.with_decoder(True)
    mixed[3] = paper
    with pytest.raises(ValueError, match="one budget, seed, decoder"):
        export_weights(mixed, DIGITS)


def test_write_puts_manifest_and_blobs_in_a_folder(int8, tmp_path):
    folder = int8.write(tmp_path / "explorer")
    assert json.loads((folder / "manifest.json").read_text()) == json.loads(
        json.dumps(int8.manifest)
    )
    for q, blob in int8.blobs.items():
        assert (folder / f"q{q}.bin").read_bytes() == blob


def config_of(page: str, eid: str) -> dict:
    found = re.search(
        rf'<script type="application/json" id="{eid}-config">(.*?)</script>', page
    )
    return json.loads(found.group(1))


def test_notebook_form_carries_the_weights_and_book_form_loads_them(int8):
    explorer = browser_explorer(int8, "../explorer/")
    eid = explorer.element_id
    inline, book = explorer._repr_html_(), explorer._repr_markdown_()
    for page in (inline, book):
        assert (
            "\n\n" not in page
        )  # Markdown would end the raw HTML block at a blank line
        assert "CVAEExplorer.mount(" in page and "function dense(" in page
    assert config_of(inline, eid)["inline"] is True
    assert config_of(book, eid) == {
        "manifest": json.loads(json.dumps(int8.manifest)),
        "inline": False,
        "weightsUrl": "../explorer/",
    }
    for q, blob in int8.blobs.items():
        found = re.search(rf'id="{eid}-q{q}">([A-Za-z0-9+/=]+)</script>', inline)
        assert base64.b64decode(found.group(1)) == blob
        assert f"{eid}-q{q}" not in book
    assert "quick budget" in repr(explorer)
    with pytest.raises(ValueError, match="must end with '/'"):
        browser_explorer(int8, "../explorer")


def test_default_size_fits_the_limits():
    """The default decoder's sampling layers: int8 fits 3 MB per setting, fp16 does not;
    the book's page carries no weights, so it grows by far less than 1 MB."""
    cvae = CVAE()
    int8_blob, _ = pack_layers(cvae, "int8")
    fp16_blob, _ = pack_layers(cvae, "fp16")
    assert len(int8_blob) <= 3_000_000 < len(fp16_blob)


def test_javascript_slices_are_real_lines():
    network = javascript_lines(
        "// --- the network ---", "// --- end of the network ---"
    )
    assert "function dense(" in network and "function generate(" in network
    with pytest.raises(ValueError, match="is not in"):
        javascript_lines("no such marker", "// --- end")
