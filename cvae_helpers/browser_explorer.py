"""The CVAE in the reader's browser: weights exported when the book is built, sampled by
JavaScript (``browser_explorer.js`` next to this file).

- :func:`export_weights` packs, per quadrant setting, the layers that sampling needs
  into one blob (int8 weights with a float32 scale per output row, or fp16; float32
  biases), embeds a few test digits and measures the rounding's effect on the pixels.
  :meth:`ExportedWeights.write` puts the blobs and ``manifest.json`` in a folder that
  the HTML book serves; :func:`exported_cvae` rebuilds a PyTorch model from the blobs.
- :class:`BrowserExplorer` is the widget. In a notebook its HTML carries the weights
  inline (base64); in the HTML book its Markdown form, which MyST-NB is told to prefer
  (``nb_mime_priority_overrides`` in ``_config.yml``), loads them from the static files.

Blob layout, per layer in :data:`LAYERS` order: the weight ``(rows, cols)`` row-major
(int8 or fp16), then for int8 the scales ``(rows,)`` float32, then the bias ``(rows,)``
float32, each part starting on a 4-byte boundary; ``manifest.json`` records the offsets.
"""

from __future__ import annotations

import base64
import html
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import DECODERS
from .data import MASK_VALUE, given_quadrants_mask, quadrant_label
from .models import CVAE, BaselineNet, flatten
from .pipeline import TrainedModels

# The layers sampling needs, in the order the JavaScript runs them (the recognition
# network is only for training and is not exported).
LAYERS = (
    "baseline.fc1",
    "baseline.fc2",
    "baseline.fc3",
    "prior_net.fc1",
    "prior_net.fc2",
    "prior_net.head",
    "generation_net.fc1",
    "generation_net.fc2",
    "generation_net.fc3",
)
FORMATS = ("int8", "fp16")
MAX_SAMPLES = 16
# The seed of the epsilon with which the export measures its pixel error.
ERROR_NOISE_SEED = 0
JS_PATH = Path(__file__).with_name("browser_explorer.js")


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row: ``weight`` ``(rows, cols)`` ~
    ``q * scale[:, None]``.

    Returns ``q`` int8 ``(rows, cols)`` in [-127, 127] and ``scale`` float32
    ``(rows,)``; each row's largest magnitude maps to 127, so a weight moves by
    at most ``scale / 2``.
    """
    weight = weight.detach().float().cpu()
    scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127
    q = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``q`` int8 ``(rows, cols)`` and ``scale`` ``(rows,)`` back to float32, as the
    browser does."""
    return q.float() * scale[:, None]


def _align(buffer: bytearray) -> int:
    buffer.extend(b"\0" * (-len(buffer) % 4))
    return len(buffer)


def pack_layers(cvae: CVAE, fmt: str = "int8") -> tuple[bytes, list[dict]]:
    """The blob of one setting and its layer table (name, rows, cols, byte offsets)."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown weight format {fmt!r}; choose one of {FORMATS}.")
    blob, table = bytearray(), []
    for name in LAYERS:
        layer = cvae.get_submodule(name)
        weight = layer.weight.detach().float().cpu()
        entry = {
            "name": name,
            "rows": weight.shape[0],
            "cols": weight.shape[1],
            "weight": _align(blob),
        }
        if fmt == "int8":
            q, scale = quantize_rows(weight)
            blob.extend(q.numpy().tobytes())
            entry["scale"] = _align(blob)
            blob.extend(scale.numpy().astype("<f4").tobytes())
        else:
            blob.extend(weight.numpy().astype("<f2").tobytes())
        entry["bias"] = _align(blob)
        blob.extend(layer.bias.detach().float().cpu().numpy().astype("<f4").tobytes())
        table.append(entry)
    return bytes(blob), table


def unpack_layers(blob: bytes, table: list[dict], fmt: str) -> dict[str, torch.Tensor]:
    """A state dict ``{"baseline.fc1.weight": ..., ...}`` (float32) read back from a
    blob."""

    def read(dtype, count: int, offset: int) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(blob, dtype, count, offset).copy())

    state = {}
    for entry in table:
        rows, cols = entry["rows"], entry["cols"]
        weight = read(np.int8 if fmt == "int8" else "<f2", rows * cols, entry["weight"])
        weight = weight.reshape(rows, cols).float()
        if fmt == "int8":
            weight = dequantize(weight, read("<f4", rows, entry["scale"]))
        state[f"{entry['name']}.weight"] = weight
        state[f"{entry['name']}.bias"] = read("<f4", rows, entry["bias"])
    return state


def exported_cvae(cvae: CVAE, blob: bytes, table: list[dict], fmt: str) -> CVAE:
    """A CPU copy of ``cvae`` whose sampling layers hold the exported (rounded)
    weights."""
    config = cvae.config
    copy = CVAE(
        config.z_dim,
        config.hidden_1,
        config.hidden_2,
        BaselineNet(**cvae.baseline.config),
        config.decoder_sees_input,
    )
    copy.load_state_dict({k: v.detach().cpu() for k, v in cvae.state_dict().items()})
    copy.load_state_dict(unpack_layers(blob, table, fmt), strict=False)
    return copy.eval()


def fixed_noise(
    num_samples: int, z_dim: int, seed: int = ERROR_NOISE_SEED
) -> torch.Tensor:
    """Standard-normal epsilon ``(num_samples, 1, z_dim)`` from a private generator."""
    return torch.randn(
        num_samples, 1, z_dim, generator=torch.Generator().manual_seed(seed)
    )


@torch.no_grad()
def pixel_error(
    original: CVAE, exported: CVAE, inputs: torch.Tensor, num_samples: int = MAX_SAMPLES
) -> float:
    """Largest |pixel| change that rounding the weights causes on ``inputs``
    ``(n, 28, 28)``.

    Over the baseline's guess and ``num_samples`` CVAE samples per input (the same
    epsilon for both networks), hidden pixels only: the given ones are shown as drawn.
    """
    original = original.cpu().eval()
    worst = 0.0
    noise = fixed_noise(num_samples, original.config.z_dim)
    for x in flatten(inputs.cpu()):
        x = x[None]
        hidden = x[0] == MASK_VALUE
        pairs = [
            (original.baseline(x), exported.baseline(x)),
            (original.sample(x, noise=noise), exported.sample(x, noise=noise)),
        ]
        worst = max(
            [worst] + [float((a - b)[..., hidden].abs().max()) for a, b in pairs]
        )
    return worst


@dataclass
class ExportedWeights:
    """What the browser explorer loads: ``manifest`` (JSON-able) and one blob per
    setting."""

    manifest: dict
    blobs: dict[int, bytes]

    def write(self, folder: str | Path) -> Path:
        """Write ``manifest.json`` and ``q{N}.bin`` into ``folder`` (created); returns
        it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for q, blob in self.blobs.items():
            (folder / self.manifest["settings"][str(q)]["file"]).write_bytes(blob)
        (folder / "manifest.json").write_text(json.dumps(self.manifest, indent=1))
        return folder


def export_weights(
    models_by_q: dict[int, TrainedModels], digits: list[int], fmt: str = "int8"
) -> ExportedWeights:
    """Pack each setting's sampling layers and embed the test digits at ``digits``.

    ``models_by_q``: trained models per number of given quadrants, of one budget and
    decoder; ``digits``: positions in the test split that the page offers under "load
    test digit"; ``fmt``: ``"int8"`` (per-row scales, about 2.6 MB per setting of the
    default decoder) or ``"fp16"`` (twice that). The manifest has the models' budget
    and decoder, the layer tables, each blob's size and ``max_pixel_error``.
    """
    first_models = models_by_q[min(models_by_q)]
    first = first_models.spec
    runs = {
        (m.spec.profile.name, m.spec.seed, m.spec.decoder_sees_input, m.spec.precision)
        for m in models_by_q.values()
    }
    if len(runs) > 1:
        raise ValueError(
            "export_weights needs models of one budget, seed, decoder and precision."
        )
    test = first_models.splits.test
    images = test.images[digits].cpu()  # (n, 28, 28); the same digits in every setting
    blobs, settings = {}, {}
    for q, models in sorted(models_by_q.items()):
        blob, table = pack_layers(models.cvae, fmt)
        inputs = torch.where(given_quadrants_mask(q), images, MASK_VALUE)
        error = pixel_error(
            models.cvae, exported_cvae(models.cvae, blob, table, fmt), inputs
        )
        blobs[q] = blob
        settings[str(q)] = {
            "file": f"q{q}.bin",
            "bytes": len(blob),
            "layers": table,
            "max_pixel_error": error,
        }
    profile = first.profile
    return ExportedWeights(
        blobs=blobs,
        manifest={
            "format": fmt,
            "budget": profile.name,
            "training_images": profile.training.train_size or 50_000,
            "max_epochs": profile.training.max_epochs,
            "seed": first.seed,
            "precision": first.precision,
            "decoder": DECODERS[first.decoder_sees_input].long_label,
            "decoder_sees_input": first.decoder_sees_input,
            "z_dim": first_models.cvae.config.z_dim,
            "min_scale": 1e-4,
            "settings": settings,
            "digits": _digit_records(test.labels, digits, images),
        },
    )


def _digit_records(
    labels: torch.Tensor, digits: list[int], images: torch.Tensor
) -> list:
    """The test digits the page offers: index, label and uint8 pixels in base64."""
    return [
        {
            "index": int(i),
            "label": int(labels[i]),
            "pixels": base64.b64encode(
                (image * 255).round().to(torch.uint8).numpy().tobytes()
            ).decode(),
        }
        for i, image in zip(digits, images, strict=True)
    ]


def _script_json(value: object) -> str:
    """JSON that is safe inside a ``<script>`` element."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def javascript_source() -> str:
    """The explorer's JavaScript (``browser_explorer.js``)."""
    return JS_PATH.read_text()


def javascript_lines(start: str, stop: str) -> str:
    """The JavaScript from the line containing ``start`` up to (not including) the next
    one containing ``stop``; a marker that is not found is an error."""
    lines = javascript_source().splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if start in line), None)
    if first is None:
        raise ValueError(f"{start!r} is not in {JS_PATH.name}.")
    last = next((i for i in range(first + 1, len(lines)) if stop in lines[i]), None)
    if last is None:
        raise ValueError(f"{stop!r} does not follow {start!r} in {JS_PATH.name}.")
    return "".join(lines[first:last])


def show_javascript(start: str, stop: str):
    """Part of the explorer's JavaScript as highlighted code (see
    :func:`javascript_lines`)."""
    from IPython.display import Code

    return Code(javascript_lines(start, stop), language="javascript")


class BrowserExplorer:
    """The in-browser explorer of ``weights``, shown by Jupyter, Colab and MyST-NB.

    ``_repr_html_`` (Jupyter, Colab) carries the weights, base64 in one ``<script
    type="application/octet-stream">`` per setting, decoded when first picked;
    ``_repr_markdown_`` (the HTML book) loads ``weights_url + "q{N}.bin"`` instead.
    """

    def __init__(
        self,
        weights: ExportedWeights,
        weights_url: str = "explorer/",
        element_id: str | None = None,
    ) -> None:
        self.weights, self.weights_url = weights, weights_url
        self.element_id = element_id or f"cvae-browser-{uuid.uuid4().hex[:8]}"

    def html(self, inline: bool) -> str:
        """The widget's HTML: a container, the manifest, optionally the weights, the
        script."""
        eid = html.escape(self.element_id)
        config = {
            "manifest": self.weights.manifest,
            "inline": inline,
            "weightsUrl": None if inline else self.weights_url,
        }
        parts = [
            f'<div class="cvae-browser-explorer" id="{eid}">'
            "<noscript>This explorer runs the CVAE in your browser and needs JavaScript."
            "</noscript></div>",
            f'<script type="application/json" id="{eid}-config">{_script_json(config)}</script>',
        ]
        if inline:
            parts += [
                f'<script type="application/octet-stream" id="{eid}-q{q}">'
                f"{base64.b64encode(blob).decode()}</script>"
                for q, blob in sorted(self.weights.blobs.items())
            ]
        parts.append(
            f'<script>{javascript_source()}\nCVAEExplorer.mount(document.getElementById("{eid}"));</script>'
        )
        # No blank line anywhere: Markdown would end the raw HTML block there.
        return "\n".join(line for line in "\n".join(parts).splitlines() if line.strip())

    def _repr_html_(self) -> str:
        return self.html(inline=True)

    def _repr_markdown_(self) -> str:
        return self.html(inline=False)

    def __repr__(self) -> str:
        manifest = self.weights.manifest
        settings = ", ".join(quadrant_label(int(q)) for q in manifest["settings"])
        return (
            f"<in-browser CVAE explorer: {settings}; {manifest['budget']} budget, "
            f"{manifest['decoder']}; {manifest['format']} weights>"
        )


def browser_explorer(
    weights: ExportedWeights, weights_url: str = "explorer/"
) -> BrowserExplorer:
    """The in-browser explorer of ``weights`` (see :class:`BrowserExplorer`).

    ``weights_url``: where the HTML book serves the folder that
    :meth:`ExportedWeights.write` wrote, relative to the page (ends with ``/``).
    """
    if not weights_url.endswith("/"):
        raise ValueError(f"weights_url must end with '/', got {weights_url!r}.")
    return BrowserExplorer(weights, weights_url)
