// The CVAE explorer in the reader's browser (cvae_helpers/browser_explorer.py builds the page).
// The reader draws the given quadrants of a digit; this script runs the baseline, the prior
// network and the generation network on weights exported when the book was built, and shows
// the baseline's guess and CVAE samples. No server computes anything and no kernel runs.
"use strict";
window.CVAEExplorer = (function () {
  const SIZE = 28, HALF = 14, PIXELS = SIZE * SIZE, MASK = -1;
  const HIDDEN_RGB = [140, 179, 230];   // the -1 sentinel, light blue as in the book's figures
  const QUADRANT_NAMES = {1: "1 quadrant (bottom left)", 2: "2 quadrants (left half)",
                          3: "3 quadrants (all but bottom right)"};

  // --- the network ---
  // One dense layer, y = W x + b (then ReLU): W is rows x cols, row-major, in a Float32Array.
  function dense(layer, x, relu) {
    const {weight, bias, rows, cols} = layer;
    const out = new Float32Array(rows);
    for (let i = 0; i < rows; i++) {
      let sum = 0;
      for (let j = 0, k = i * cols; j < cols; j++, k++) sum += weight[k] * x[j];
      sum += bias[i];
      out[i] = relu && sum < 0 ? 0 : sum;
    }
    return out;
  }
  const sigmoid = (v) => 1 / (1 + Math.exp(-v));
  const softplus = (v) => (v > 20 ? v : Math.log1p(Math.exp(v)));   // torch's softplus

  // Once per input x (784 pixels, -1 where hidden): the baseline's guess y_hat, then the prior
  // network p(z|x) on x with its hidden pixels filled by y_hat: loc and scale of z.
  function prior(net, x) {
    let h = dense(net["baseline.fc1"], x, true);
    h = dense(net["baseline.fc2"], h, true);
    const guess = dense(net["baseline.fc3"], h, false).map(sigmoid);
    const filled = x.map((v, i) => (v === MASK ? guess[i] : v));
    h = dense(net["prior_net.fc1"], filled, true);
    h = dense(net["prior_net.fc2"], h, true);
    const head = dense(net["prior_net.head"], h, false);
    const zDim = head.length / 2;
    const loc = head.slice(0, zDim);
    const scale = head.slice(zDim).map((v) => softplus(v) + net.minScale);
    return {guess, loc, scale};
  }

  // Once per sample: z = loc + scale * eps, then the generation network p(y|z) (or p(y|x,z))
  // and the sigmoid: the Bernoulli means of all 784 pixels.
  function generate(net, x, loc, scale, eps) {
    let z = loc.map((m, k) => m + scale[k] * eps[k]);
    if (net.seesInput) {
      const zx = new Float32Array(z.length + PIXELS);
      zx.set(z);
      zx.set(x, z.length);
      z = zx;
    }
    let h = dense(net["generation_net.fc1"], z, true);
    h = dense(net["generation_net.fc2"], h, true);
    return dense(net["generation_net.fc3"], h, false).map(sigmoid);
  }
  // --- end of the network ---

  // --- loading the weights ---
  function halfToFloat(h) {
    const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
    if (exponent === 0) return sign * fraction * 2 ** -24;
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }

  // The blob of one setting to {layer name: {rows, cols, weight, bias}}; int8 weights are
  // multiplied by their row's scale here, once (a Float32Array rounds the product as torch does).
  function parseWeights(buffer, setting, manifest) {
    if (buffer.byteLength !== setting.bytes) {
      throw new Error(`expected ${setting.bytes} bytes, got ${buffer.byteLength}`);
    }
    const net = {seesInput: manifest.decoder_sees_input, minScale: manifest.min_scale};
    for (const layer of setting.layers) {
      const {rows, cols} = layer, weight = new Float32Array(rows * cols);
      if (manifest.format === "int8") {
        const q = new Int8Array(buffer, layer.weight, rows * cols);
        const scale = new Float32Array(buffer, layer.scale, rows);
        for (let i = 0; i < rows * cols; i++) weight[i] = q[i] * scale[Math.floor(i / cols)];
      } else {
        const half = new Uint16Array(buffer, layer.weight, rows * cols);
        for (let i = 0; i < rows * cols; i++) weight[i] = halfToFloat(half[i]);
      }
      net[layer.name] = {rows, cols, weight, bias: new Float32Array(buffer, layer.bias, rows)};
    }
    return net;
  }

  function base64Bytes(text) {
    const raw = atob(text.trim()), bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  async function loadBlob(root, config, q) {
    const setting = config.manifest.settings[q];
    if (config.inline) {   // a notebook output: the weights are inside it, one element per setting
      const element = document.getElementById(`${root.id}-q${q}`);
      if (!element) throw new Error("they are not in this output");
      return base64Bytes(element.textContent).buffer;
    }
    const url = new URL(config.weightsUrl + setting.file, document.baseURI);
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url.pathname} answered HTTP ${response.status}`);
    return response.arrayBuffer();
  }
  // --- end of loading the weights ---

  // Seeded standard-normal draws (mulberry32 and Box-Muller), so "Resample" is reproducible.
  function normals(seed, count) {
    let state = seed >>> 0;
    const uniform = () => {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
    };
    const out = new Float32Array(count);
    for (let i = 0; i < count; i += 2) {
      const r = Math.sqrt(-2 * Math.log(uniform())), angle = 2 * Math.PI * uniform();
      out[i] = r * Math.cos(angle);
      if (i + 1 < count) out[i + 1] = r * Math.sin(angle);
    }
    return out;
  }

  function isGiven(q, i) {
    const row = Math.floor(i / SIZE), col = i % SIZE;
    if (row >= HALF && col < HALF) return true;   // bottom left: given in every setting
    if (q >= 2 && row < HALF && col < HALF) return true;   // top left
    return q === 3 && row < HALF && col >= HALF;   // top right
  }

  // Pixels in [0, 1] (black ink on white), -1 drawn light blue, and the quadrant borders.
  function paintPixels(canvas, pixels) {
    const context = canvas.getContext("2d"), cell = canvas.width / SIZE;
    for (let i = 0; i < PIXELS; i++) {
      const v = pixels[i];
      const grey = Math.round(255 * (1 - Math.min(1, Math.max(0, v))));
      const [r, g, b] = v === MASK ? HIDDEN_RGB : [grey, grey, grey];
      context.fillStyle = `rgb(${r},${g},${b})`;
      context.fillRect((i % SIZE) * cell, Math.floor(i / SIZE) * cell, cell, cell);
    }
    context.fillStyle = "rgb(191,191,191)";
    context.fillRect(HALF * cell - 0.5, 0, 1, canvas.height);
    context.fillRect(0, HALF * cell - 0.5, canvas.width, 1);
  }

  function element(tag, attributes = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  const STYLE = `
.cvae-bx { font-family: sans-serif; font-size: 14px; max-width: 760px; }
.cvae-bx-controls { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; margin: 6px 0; }
.cvae-bx-row { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
.cvae-bx figure { margin: 0; }
.cvae-bx figcaption { font-size: 12px; color: #444; max-width: 240px; }
.cvae-bx canvas { image-rendering: pixelated; border: 1px solid #bbb; }
.cvae-bx canvas.cvae-bx-draw { touch-action: none; cursor: crosshair; }
.cvae-bx canvas:focus-visible, .cvae-bx button:focus-visible, .cvae-bx select:focus-visible,
.cvae-bx input:focus-visible { outline: 3px solid #1f6feb; outline-offset: 1px; }
.cvae-bx-samples { display: grid; grid-template-columns: repeat(4, 72px); gap: 4px; }
.cvae-bx-error { color: #a40000; font-weight: bold; }
.cvae-bx-busy canvas.cvae-bx-out { opacity: 0.35; }`;

  function mount(root) {
    const config = JSON.parse(document.getElementById(`${root.id}-config`).textContent);
    const manifest = config.manifest;
    const settings = Object.keys(manifest.settings).map(Number).sort();
    const state = {q: settings[0], ink: new Float32Array(PIXELS), seed: 1, noise: null,
                   numSamples: 8, pen: {row: 20, col: 6, down: false}};
    const nets = {};   // quadrant setting -> promise of its parsed weights, loaded once
    const api = {result: null, timing: null};

    if (!document.getElementById("cvae-bx-style")) {
      document.head.append(element("style", {id: "cvae-bx-style", text: STYLE}));
    }
    root.classList.add("cvae-bx");
    const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;
    const sizes = settings.map((q) => mb(manifest.settings[q].bytes)).join(" / ");
    const quick = manifest.budget === "quick"
      ? " This is the smoke-test budget: expect blurry samples that differ little." : "";
    const models = element("p", {class: "cvae-bx-models", text:
      `Models: trained with the ${manifest.budget} budget (${manifest.training_images} ` +
      `training images, at most ${manifest.max_epochs} epochs, seed ${manifest.seed}, ` +
      `${manifest.precision}); decoder ${manifest.decoder}. Weights: ` +
      `${manifest.format === "int8" ? "int8 with a scale per row" : "fp16"}, ${sizes} ` +
      `per setting, loaded when you pick the setting.${quick}`});

    const quadrants = element("select", {"aria-label": "quadrants given"},
      settings.map((q) => element("option", {value: q, text: QUADRANT_NAMES[q]})));
    const digits = element("select", {"aria-label": "test digit"}, manifest.digits.map(
      (d, k) => element("option", {value: k, text: `#${d.index} (a ${d.label})`})));
    const load = element("button", {type: "button", text: "Load test digit"});
    const clear = element("button", {type: "button", text: "Clear"});
    const count = element("input", {type: "range", min: 1, max: 16, value: state.numSamples,
                                    "aria-label": "number of CVAE samples"});
    const countText = element("output", {text: String(state.numSamples)});
    const resample = element("button", {type: "button", text: "Resample"});
    const controls = element("div", {class: "cvae-bx-controls"}, [
      element("label", {}, ["Quadrants given ", quadrants]),
      element("label", {}, ["Test digit ", digits]), load, clear,
      element("label", {}, ["Samples ", count, " ", countText]), resample]);

    const draw = element("canvas", {width: 224, height: 224, tabindex: 0, class: "cvae-bx-draw",
      role: "img", "aria-label": "drawing area: draw with the mouse or a finger in the white " +
      "quadrants; with the keyboard, arrow keys move the pen and Space lifts or lowers it"});
    const guess = element("canvas", {width: 112, height: 112, class: "cvae-bx-out",
                                     role: "img", "aria-label": "the baseline's guess"});
    const grid = element("div", {class: "cvae-bx-samples"});
    const samplesCaption = element("figcaption");
    const status = element("p", {role: "status", class: "cvae-bx-status"});
    const error = element("p", {role: "alert", class: "cvae-bx-error"});
    root.replaceChildren(models, controls, element("div", {class: "cvae-bx-row"}, [
      element("figure", {}, [draw, element("figcaption", {text:
        "Your input: draw in the white quadrants; the blue ones are hidden from the networks."})]),
      element("figure", {}, [guess, element("figcaption", {text:
        "Baseline (NN): its single guess, pasted into your input."})]),
      element("figure", {}, [grid, samplesCaption])]), status, error);

    function input() {   // what the networks see: the ink on given pixels, -1 elsewhere
      return state.ink.map((v, i) => (isGiven(state.q, i) ? v : MASK));
    }

    function showInput() {
      const x = input();
      paintPixels(draw, x);
      if (document.activeElement === draw) {   // the keyboard pen
        const cell = draw.width / SIZE, context = draw.getContext("2d");
        context.strokeStyle = state.pen.down ? "#d00" : "#1f6feb";
        context.lineWidth = 2;
        context.strokeRect(state.pen.col * cell, state.pen.row * cell, cell, cell);
      }
    }

    function noiseFor(s, zDim) {
      if (state.noise) return state.noise[s];
      return normals(state.seed * 1000 + s, zDim);
    }

    let pending = false;
    function schedule() {   // recompute at most once per frame while the reader draws
      showInput();
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; compute(); });
    }

    function compute() {
      const q = state.q;
      if (!nets[q]) return;   // its weights failed to load
      nets[q].then((net) => {
        if (q !== state.q) return;
        const x = input(), started = performance.now();
        const {guess: yHat, loc, scale} = prior(net, x);
        const afterPrior = performance.now();
        const samples = [];
        for (let s = 0; s < state.numSamples; s++) {
          samples.push(generate(net, x, loc, scale, noiseFor(s, loc.length)));
        }
        const finished = performance.now();
        api.result = {quadrants: q, input: x, baseline: yHat, loc, scale, samples};
        api.timing = {priorMs: afterPrior - started,
                      msPerSample: (finished - afterPrior) / state.numSamples};
        const compose = (p) => x.map((v, i) => (v === MASK ? p[i] : v));
        paintPixels(guess, compose(yHat));
        const canvases = samples.map((p, s) => {
          const canvas = element("canvas", {width: 72, height: 72, class: "cvae-bx-out",
                                            role: "img", "aria-label": `CVAE sample ${s + 1}`});
          paintPixels(canvas, compose(p));
          return canvas;
        });
        grid.replaceChildren(...canvases);
        samplesCaption.textContent = `CVAE: ${samples.length} samples, one z each, pasted ` +
          `into your input (${(finished - started).toFixed(0)} ms in this browser).`;
        root.classList.remove("cvae-bx-busy");
        root.dispatchEvent(new CustomEvent("cvae-update"));
      }, () => {});   // a failed load is reported by select()
    }

    function select(q) {
      state.q = q;
      quadrants.value = String(q);
      if (!nets[q]) {
        root.classList.add("cvae-bx-busy");
        status.textContent = `Loading the weights for ${QUADRANT_NAMES[q]} ` +
          `(${mb(manifest.settings[q].bytes)})...`;
        nets[q] = loadBlob(root, config, q).then(
          (buffer) => parseWeights(buffer, manifest.settings[q], manifest));
      }
      error.textContent = "";
      const loaded = nets[q].then(() => {
        if (state.q === q) status.textContent = `Weights for ${QUADRANT_NAMES[q]} loaded.`;
      }, (reason) => {
        delete nets[q];   // picking the setting again retries
        if (state.q !== q) return;
        let help = "";
        if (location.protocol === "file:") {
          help = " Browsers do not let a page opened from disk (file://) load other files: " +
            "serve the book's folder, e.g. python -m http.server --directory _build/html, " +
            "and open this page under http://localhost:8000/.";
        }
        status.textContent = "";
        error.textContent = `Could not load the weights for ${QUADRANT_NAMES[q]}: ` +
          `${reason.message}.${help}`;
        throw reason;
      });
      schedule();
      return loaded;
    }

    function loadDigit(k) {
      state.ink = base64Bytes(manifest.digits[k].pixels).reduce(
        (ink, byte, i) => { ink[i] = byte / 255; return ink; }, new Float32Array(PIXELS));
      schedule();
    }

    // Drawing: a soft round brush about two pixels wide, on given pixels only.
    function stamp(row, col) {
      for (let i = Math.floor(row - 2); i <= row + 2; i++) {
        for (let j = Math.floor(col - 2); j <= col + 2; j++) {
          if (i < 0 || j < 0 || i >= SIZE || j >= SIZE || !isGiven(state.q, i * SIZE + j)) continue;
          const distance = Math.hypot(i + 0.5 - row, j + 0.5 - col);
          const ink = Math.min(1, Math.max(0, 1.6 - distance));
          state.ink[i * SIZE + j] = Math.max(state.ink[i * SIZE + j], ink);
        }
      }
    }
    function stroke(from, to) {
      const steps = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1]) / 0.25));
      for (let s = 0; s <= steps; s++) {
        stamp(from[0] + (to[0] - from[0]) * s / steps, from[1] + (to[1] - from[1]) * s / steps);
      }
      schedule();
    }
    let last = null;
    const position = (event) => {
      const box = draw.getBoundingClientRect();
      return [(event.clientY - box.top) / box.height * SIZE,
              (event.clientX - box.left) / box.width * SIZE];
    };
    draw.addEventListener("pointerdown", (event) => {
      draw.setPointerCapture(event.pointerId);
      last = position(event);
      stroke(last, last);
      event.preventDefault();
    });
    draw.addEventListener("pointermove", (event) => {
      if (last === null) return;
      const next = position(event);
      stroke(last, next);
      last = next;
    });
    for (const type of ["pointerup", "pointercancel"]) {
      draw.addEventListener(type, () => { last = null; });
    }
    const moves = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]};
    draw.addEventListener("keydown", (event) => {
      const pen = state.pen;
      if (event.key === " ") {
        pen.down = !pen.down;
      } else if (moves[event.key]) {
        pen.row = Math.min(SIZE - 1, Math.max(0, pen.row + moves[event.key][0]));
        pen.col = Math.min(SIZE - 1, Math.max(0, pen.col + moves[event.key][1]));
      } else {
        return;
      }
      event.preventDefault();
      if (pen.down) stroke([pen.row + 0.5, pen.col + 0.5], [pen.row + 0.5, pen.col + 0.5]);
      else showInput();
    });
    draw.addEventListener("focus", showInput);
    draw.addEventListener("blur", showInput);

    quadrants.addEventListener("change", () => select(Number(quadrants.value)).catch(() => {}));
    load.addEventListener("click", () => loadDigit(Number(digits.value)));
    clear.addEventListener("click", () => { state.ink = new Float32Array(PIXELS); schedule(); });
    count.addEventListener("input", () => {
      state.numSamples = Number(count.value);
      countText.textContent = count.value;
      schedule();
    });
    resample.addEventListener("click", () => { state.seed += 1; state.noise = null; schedule(); });

    // For tests and the curious: set the quadrants, the ink or a fixed epsilon from a script.
    Object.assign(api, {
      select,
      setInk(pixels) { state.ink = Float32Array.from(pixels); schedule(); },
      setNoise(rows) {
        state.noise = rows.map((row) => Float32Array.from(row));
        state.numSamples = rows.length;
        count.value = rows.length;
        countText.textContent = String(rows.length);
        schedule();
      },
      update() {   // a promise of the next computed result
        return new Promise((resolve) => root.addEventListener(
          "cvae-update", () => resolve(api.result), {once: true}));
      },
    });
    root.cvaeExplorer = api;
    loadDigit(0);
    select(state.q).catch(() => {});
    return api;
  }

  return {mount, prior, generate, dense};
})();
