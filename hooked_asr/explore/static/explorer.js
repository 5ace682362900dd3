// hooked_asr explorer: plain JavaScript, canvas and DOM only; reads the JSON in #ha-data and the
// <audio id="ha-audio"> of the same page. No network, no framework.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("ha-data").textContent);
  const audio = document.getElementById("ha-audio");
  const root = document.getElementById("ha-root");
  const W = 820; // pixels of the shared time axis
  const T = Math.max(D.audio.duration, D.mel.seconds, D.audio_attention.seconds, 1e-3);
  const xOf = (t) => (t / T) * W;
  const A = D.audio_attention, S = D.self_attention, L = D.logit_lens;
  const NL = A.n_layers, NH = A.n_heads, NS = A.n_steps, NC = A.columns;
  const state = { token: 0, head: -1, feature: 0, stopAt: null, cell: null };
  const listeners = []; // called after every render (the live panel follows the selection)

  // ---- helpers ------------------------------------------------------------------------
  function bytes(b64) {
    const bin = atob(b64), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  function canvas(w, h) {
    const c = el("canvas", { width: w, height: h });
    c.style.width = w + "px"; c.style.height = h + "px";
    return c;
  }
  // viridis, five stops, linear between them
  const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const LUT = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * 4, k = Math.min(3, Math.floor(x)), f = x - k;
    for (let c = 0; c < 3; c++) LUT[i * 3 + c] = Math.round(STOPS[k][c] * (1 - f) + STOPS[k + 1][c] * f);
  }
  function heatRow(ctx, values, y, h, x0, width) { // values: Uint8Array slice, drawn across [x0, x0+width)
    const n = values.length, img = ctx.createImageData(Math.max(1, Math.round(width)), h);
    for (let x = 0; x < img.width; x++) {
      const v = values[Math.min(n - 1, Math.floor((x / img.width) * n))];
      for (let yy = 0; yy < h; yy++) {
        const o = (yy * img.width + x) * 4;
        img.data[o] = LUT[v * 3]; img.data[o + 1] = LUT[v * 3 + 1]; img.data[o + 2] = LUT[v * 3 + 2]; img.data[o + 3] = 255;
      }
    }
    ctx.putImageData(img, Math.round(x0), y);
  }
  const fmt = (x, d = 2) => (x == null ? "–" : Number(x).toFixed(d));
  const show = (s) => s.replace(/\n/g, "\\n");
  function play(start, end) {
    audio.currentTime = Math.max(0, start);
    state.stopAt = end == null ? null : end;
    const p = audio.play();
    if (p && p.catch) p.catch(() => {}); // a browser that refuses playback without a gesture: stay silent
  }

  // ---- decoded arrays -----------------------------------------------------------------
  const att = bytes(A.data), attMean = bytes(A.mean_data);
  const selfData = bytes(S.data), [, , SH, SK] = S.shape;
  const mel = bytes(D.mel.data), waveMin = bytes(D.audio.wave_min), waveMax = bytes(D.audio.wave_max);
  const tokens = D.transcript.tokens, words = D.transcript.words;
  function audioRow(s, head) { // Uint8Array of NC values
    if (head < 0) return attMean.subarray(s * NC, (s + 1) * NC);
    const o = (s * NL * NH + head) * NC;
    return att.subarray(o, o + NC);
  }
  const headName = (hd) => (hd < 0 ? (A.kind === "cross" ? "mean of alignment heads" : "mean of upper-half heads")
    : `L${Math.floor(hd / NH)} H${hd % NH}`);

  // ---- layout -------------------------------------------------------------------------
  const t = D.transcript;
  root.append(...[
    el("h1", { text: `hooked_asr explorer · ${D.model.name}` + (D.title ? ` · ${D.title}` : "") }),
    t.reference != null ? el("div", { class: "ha-said" }, "Said: ", el("b", { text: t.reference })) : null,
    el("div", { class: "ha-heard" }, "Heard: ", el("b", { text: t.text || "" }),
      ` (mean log-prob ${fmt(t.avg_logprob)}${t.language ? ", language " + t.language : ""})`),
    el("div", { class: "ha-note", text: D.downsampling + (A.kind === "cross" ? "" :
      " This model has no cross-attention: the 'attention over audio' is the decoder's self-attention to the audio-prefix positions (40 ms each).") })].filter((k) => k != null));
  const playBtn = el("button", { id: "ha-play", text: "▶ play", onclick: () => (audio.paused ? play(audio.currentTime >= D.audio.duration ? 0 : audio.currentTime, null) : audio.pause()) });
  const clock = el("span", { class: "ha-clock", text: "0.00 s" });
  root.append(el("div", { class: "ha-controls" }, playBtn, clock,
    el("span", { class: "ha-note", text: "click a token or word to hear it · ←/→ step through tokens · space plays · click the spectrogram to seek · pick a head" })));

  const tokenRow = el("div", { class: "ha-tokens", id: "ha-tokens" });
  tokens.forEach((tk, i) => {
    const p = tk.logprob == null ? null : Math.exp(tk.logprob);
    const span = el("span", { class: "ha-token" + (tk.special ? " ha-special" : ""), "data-i": i,
      title: `token ${i} id ${tk.id}` + (tk.logprob == null ? "" : `  log p ${fmt(tk.logprob, 3)} (p ${fmt(p, 3)})`),
      text: show(tk.text), onclick: () => selectToken(i, true) });
    if (p != null) span.style.background = `hsl(${Math.round(120 * p)},70%,85%)`;
    tokenRow.append(span);
  });
  root.append(el("div", { class: "ha-label", text: "transcript tokens (colour: p of the token, red 0 to green 1; hover for log p)" }), tokenRow);

  const main = el("div", { class: "ha-main" }), left = el("div", { class: "ha-left" }), right = el("div", { class: "ha-right" });
  main.append(left, right); root.append(main);
  const stack = el("div", { class: "ha-stack" });
  left.append(stack);
  const cursor = el("div", { class: "ha-cursor" });

  // waveform
  const waveC = canvas(W, 56);
  { const c = waveC.getContext("2d"), n = D.audio.wave_columns, w = xOf(D.audio.duration);
    c.fillStyle = "#fff"; c.fillRect(0, 0, W, 56); c.fillStyle = "#4a6fa5";
    for (let x = 0; x < Math.ceil(w); x++) {
      const k = Math.min(n - 1, Math.floor((x / w) * n)), lo = waveMin[k] / 255 * 2 - 1, hi = waveMax[k] / 255 * 2 - 1;
      c.fillRect(x, 28 - hi * 26, 1, Math.max(1, (hi - lo) * 26));
    } }
  // spectrogram
  const melH = Math.max(80, Math.min(160, D.mel.n_mels * 1.25)), melC = canvas(W, melH);
  { const c = melC.getContext("2d"), nm = D.mel.n_mels, nc = D.mel.columns, w = Math.round(xOf(D.mel.seconds));
    const img = c.createImageData(w, melH);
    for (let y = 0; y < melH; y++) {
      const m = nm - 1 - Math.floor((y / melH) * nm);
      for (let x = 0; x < w; x++) {
        const v = mel[m * nc + Math.min(nc - 1, Math.floor((x / w) * nc))], o = (y * w + x) * 4;
        img.data[o] = LUT[v * 3]; img.data[o + 1] = LUT[v * 3 + 1]; img.data[o + 2] = LUT[v * 3 + 2]; img.data[o + 3] = 255;
      }
    }
    c.putImageData(img, 0, 0);
    melC.style.cursor = "crosshair"; melC.id = "ha-mel";
    melC.addEventListener("click", (ev) => { audio.currentTime = (ev.offsetX / W) * T; drawCursor(); }); }
  const wordsDiv = el("div", { class: "ha-words", id: "ha-words" });
  wordsDiv.style.width = W + "px";
  words.forEach((w, i) => {
    const b = el("div", { class: "ha-word", "data-w": i, title: `${w.word}  ${fmt(w.start)}–${fmt(w.end)} s  p ${fmt(w.probability, 3)}`,
      text: w.word, onclick: () => { if (w.tokens.length) selectToken(w.tokens[0], false); play(w.start, w.end); } });
    b.style.left = xOf(w.start) + "px"; b.style.width = Math.max(6, xOf(w.end) - xOf(w.start)) + "px";
    wordsDiv.append(b);
  });
  const stripC = canvas(W, 22), gridRowH = Math.max(3, Math.min(8, Math.floor(220 / (NL * NH + 1))));
  const gridC = canvas(W, gridRowH * (NL * NH + 1)), matRowH = Math.max(3, Math.min(12, Math.floor(260 / NS)));
  const matC = canvas(W, matRowH * NS);
  const stripLabel = el("div", { class: "ha-label", id: "ha-strip-label" });
  gridC.style.cursor = "pointer"; matC.style.cursor = "pointer";
  gridC.addEventListener("click", (ev) => { const r = Math.floor(ev.offsetY / gridRowH); selectHead(r === 0 ? -1 : r - 1); });
  matC.addEventListener("click", (ev) => selectToken(Math.min(NS - 1, Math.floor(ev.offsetY / matRowH)), true));
  stack.append(el("div", { class: "ha-label", text: "waveform" }), waveC,
    el("div", { class: "ha-label", text: `log-mel input (${D.mel.n_mels} bins)` }), melC,
    words.length ? el("div", { class: "ha-label", text: "words (word timestamps; click to play)" }) :
      el("div", { class: "ha-label", text: "no word timestamps for this model" }), wordsDiv,
    stripLabel, stripC,
    el("div", { class: "ha-label", text: `selected token: every decoder layer × head over the audio (top row: ${headName(-1)}; click a row to pick it)` }), gridC,
    el("div", { class: "ha-label", id: "ha-mat-label" }), matC, cursor);
  let saeC = null;
  if (D.sae) { saeC = canvas(W, 26); stack.append(el("div", { class: "ha-label", id: "ha-sae-label" }), saeC); }

  // head picker
  const heads = el("div", { class: "ha-heads", id: "ha-heads" });
  heads.style.gridTemplateColumns = `auto repeat(${NH}, 24px)`;
  const headBtns = [];
  const meanBtn = el("button", { id: "ha-head-mean", text: "mean", title: headName(-1), onclick: () => selectHead(-1) });
  meanBtn.style.width = "auto";
  for (let l = 0; l < NL; l++) {
    heads.append(el("span", { class: "ha-hl", text: `L${l}` }));
    for (let h = 0; h < NH; h++) {
      const b = el("button", { class: "ha-head", "data-layer": l, "data-head": h, title: `decoder layer ${l} head ${h}`, text: `${h}`, onclick: () => selectHead(l * NH + h) });
      headBtns.push(b); heads.append(b);
    }
  }
  right.append(el("h2", { text: "Head" }), el("div", {}, meanBtn, " ", el("span", { class: "ha-note", text: "or one head (colour: its peak attention mass on one bin for this token):" })), heads);
  const selfBox = el("div", { class: "ha-scroll", id: "ha-self" }), lensBox = el("div", { id: "ha-lens" });
  right.append(el("h2", { id: "ha-self-title", text: "Self-attention" }), selfBox, el("h2", { id: "ha-lens-title", text: "Logit lens" }), lensBox);

  // encoder lens
  const encT = el("table", { id: "ha-encoder-lens" }, el("tr", {}, el("th", { text: "encoder layer" }), el("th", { text: "transcript the unchanged decoder reads from it" }), el("th", { text: "flags" }), el("th", { text: "WER vs final" })));
  for (const r of D.encoder_lens) {
    const flags = [["empty", r.empty], ["loop", r.loop], ["prefix", r.prefix]].filter((f) => f[1]).map((f) => f[0]).join(", ");
    encT.append(el("tr", {}, el("td", { text: r.layer }), el("td", { text: r.text }), el("td", { text: flags }), el("td", { text: fmt(r.wer) })));
  }
  root.append(el("h2", { text: "Encoder lens: what the decoder hears from each encoder layer" }), encT);

  // ---- drawing ----------------------------------------------------------------------
  function drawAttention() {
    const s = state.token, hd = state.head, wA = xOf(A.seconds);
    let c = stripC.getContext("2d");
    c.fillStyle = "#fff"; c.fillRect(0, 0, W, 22);
    heatRow(c, audioRow(s, hd), 0, 22, 0, wA);
    const peak = hd < 0 ? A.mean_row_max[s] : A.row_max[s][Math.floor(hd / NH)][hd % NH];
    stripLabel.textContent = `attention of token ${s} ${JSON.stringify(tokens[s].text)} over the audio · ${headName(hd)} · peak bin mass ${fmt(peak, 3)}`;
    c = gridC.getContext("2d");
    c.fillStyle = "#fff"; c.fillRect(0, 0, W, gridC.height);
    heatRow(c, audioRow(s, -1), 0, gridRowH, 0, wA);
    for (let r = 0; r < NL * NH; r++) heatRow(c, audioRow(s, r), (r + 1) * gridRowH, gridRowH, 0, wA);
    c.strokeStyle = "#e33"; c.lineWidth = 1; c.strokeRect(0.5, (hd + 1) * gridRowH + 0.5, W - 1, gridRowH - 1);
    c.fillStyle = "rgba(255,255,255,0.6)";
    for (let l = 1; l < NL; l++) c.fillRect(0, (l * NH + 1) * gridRowH, W, 1);
    c = matC.getContext("2d");
    c.fillStyle = "#fff"; c.fillRect(0, 0, W, matC.height);
    for (let i = 0; i < NS; i++) heatRow(c, audioRow(i, hd), i * matRowH, matRowH, 0, wA);
    c.strokeStyle = "#e33"; c.strokeRect(0.5, s * matRowH + 0.5, W - 1, matRowH - 1);
    document.getElementById("ha-mat-label").textContent = `every token (rows) × audio for ${headName(hd)}: the alignment; click a row to select its token`;
    headBtns.forEach((b, i) => {
      const l = Math.floor(i / NH), h = i % NH, v = A.row_max[s][l][h];
      const k = Math.round(Math.min(1, v) * 255);
      b.style.background = `rgb(${LUT[k * 3]},${LUT[k * 3 + 1]},${LUT[k * 3 + 2]})`;
      b.style.color = k > 150 ? "#000" : "#fff";
      b.classList.toggle("ha-on", i === hd); b.style.outline = i === hd ? "2px solid #e33" : "";
    });
    meanBtn.classList.toggle("ha-on", hd < 0);
  }
  function drawSelf() {
    const s = state.token, hd = state.head;
    selfBox.innerHTML = "";
    const q = S.query_positions[s];
    const vals = new Float32Array(SK);
    const layerHeads = hd < 0 ? A.mean_heads : [[Math.floor(hd / NH), hd % NH]];
    for (const [l, h] of layerHeads) {
      const hh = SH === 1 ? 0 : h, o = ((s * NL + l) * SH + hh) * SK;
      for (let k = 0; k < SK; k++) vals[k] += selfData[o + k] / 255 / layerHeads.length;
    }
    document.getElementById("ha-self-title").textContent = `Self-attention of token ${s} over the tokens before it (${headName(hd)}${SH === 1 ? ", mean over the layer's heads" : ""})`;
    for (let k = 0; k < SK; k++) {
      if (S.key_positions[k] > q) break;
      selfBox.append(el("div", { class: "ha-selfrow" }, el("span", { class: "ha-key", text: show(S.keys[k]) }),
        el("span", { class: "ha-bar", style: `width:${Math.round(vals[k] * 160)}px` }), el("span", { text: fmt(vals[k], 3) })));
    }
  }
  function drawLens() {
    const s = state.token, sat = L.saturation[s];
    lensBox.innerHTML = "";
    document.getElementById("ha-lens-title").textContent = `Logit lens of token ${s} ${JSON.stringify(tokens[s].text)}: saturation layer ${sat}${sat >= L.layers.length ? " (never)" : ""}`;
    const k = L.topk_strs[0][s].length;
    const tbl = el("table", { id: "ha-lens-table" }, el("tr", {}, el("th", { text: "layer" }), el("th", { text: `top-${k} (p)` }), el("th", { text: "p(final)" }), el("th", { text: "rank" })));
    for (const l of L.layers) {
      const cells = el("td", {});
      for (let j = 0; j < k; j++) {
        const str = L.topk_strs[l][s][j];
        cells.append(el("span", { class: L.topk_ids[l][s][j] === tokens[s].id ? "ha-final" : "", text: `${show(str)} ${fmt(L.topk_probs[l][s][j])}` }), j < k - 1 ? " · " : "");
      }
      const row = el("tr", { class: l === sat ? "ha-sat" : "" }, el("td", { text: l }), cells,
        el("td", {}, el("span", { class: "ha-bar", style: `width:${Math.round(L.chosen_prob[l][s] * 60)}px` }), " " + fmt(L.chosen_prob[l][s], 3)),
        el("td", { text: L.chosen_rank[l][s] }));
      tbl.append(row);
    }
    lensBox.append(tbl, el("div", { class: "ha-note", text: "highlighted row: the saturation layer (from there on every layer's top-1 is the final token)" }));
  }
  function drawCursor() {
    cursor.style.left = xOf(audio.currentTime) + "px";
    clock.textContent = `${fmt(audio.currentTime)} / ${fmt(D.audio.duration)} s`;
  }
  function tick() {
    if (state.stopAt != null && audio.currentTime >= state.stopAt) { audio.pause(); state.stopAt = null; }
    drawCursor();
    if (!audio.paused) requestAnimationFrame(tick);
  }
  audio.addEventListener("play", () => { playBtn.textContent = "❚❚ pause"; requestAnimationFrame(tick); });
  audio.addEventListener("pause", () => { playBtn.textContent = "▶ play"; drawCursor(); });

  function render() {
    root.dataset.selectedToken = String(state.token);
    root.dataset.selectedHead = state.head < 0 ? "mean" : `${Math.floor(state.head / NH)}.${state.head % NH}`;
    tokenRow.querySelectorAll(".ha-token").forEach((e) => e.classList.toggle("ha-sel", Number(e.dataset.i) === state.token));
    const w = tokens[state.token].word;
    wordsDiv.querySelectorAll(".ha-word").forEach((e) => e.classList.toggle("ha-sel", w != null && Number(e.dataset.w) === w));
    drawAttention(); drawSelf(); drawLens(); drawSae();
    listeners.forEach((f) => f(state));
  }
  function selectToken(i, withAudio) {
    state.token = i; render();
    const w = tokens[i].word;
    if (withAudio && w != null) play(words[w].start, words[w].end);
  }
  function selectHead(hd) { state.head = hd; render(); }

  // ---- optional panels ----------------------------------------------------------------
  function diverging(v, m) { // blue for +, red for -, white at 0
    const f = m > 0 ? Math.max(-1, Math.min(1, v / m)) : 0, a = Math.round(255 * (1 - Math.abs(f)));
    return f >= 0 ? `rgb(${a},${a},255)` : `rgb(255,${a},${a})`;
  }
  if (D.patching) {
    const P = D.patching, box = el("div", { class: "ha-flex" }), detail = el("div", { class: "ha-box", id: "ha-patch-detail", text: "click a cell to see the patched transcript" });
    let m = 0;
    for (const mp of P.maps) for (const row of mp.values) for (const v of row) if (v != null) m = Math.max(m, Math.abs(v));
    P.maps.forEach((mp, mi) => {
      const tbl = el("table", { class: "ha-heat" }), head = el("tr", {}, el("th", { text: "layer\\head" }));
      mp.values[0].forEach((_, h) => head.append(el("th", { text: h })));
      tbl.append(head);
      mp.values.forEach((row, li) => {
        const tr = el("tr", {}, el("th", { text: mp.layers[li] }));
        row.forEach((v, h) => {
          const comp = mp.components[li][h];
          const td = el("td", { "data-component": comp, title: `${comp}: ${fmt(v, 3)}`, onclick: () => {
            root.querySelectorAll(".ha-heat td.ha-sel").forEach((e) => e.classList.remove("ha-sel"));
            td.classList.add("ha-sel"); state.cell = comp;
            const txt = P.transcripts[comp];
            detail.innerHTML = "";
            detail.append(el("b", { text: comp }), ` · ${P.metric}${P.relative ? " minus clean" : ""} ${fmt(v, 3)} (clean ${fmt(P.clean, 3)})`, el("br"),
              txt == null ? el("span", { class: "ha-note", text: "(no patched transcript kept for this sweep: build it with hooked_asr.explore.patched_transcripts)" })
                : el("span", {}, "patched transcript: ", el("b", { id: "ha-patched-text", text: txt })));
          } });
          if (v != null) td.style.background = diverging(v, m);
          tr.append(td);
        });
        tbl.append(tr);
      });
      box.append(el("div", {}, el("div", { class: "ha-label", text: `${mp.stack} ${mp.kind} heads` }), tbl));
    });
    root.append(el("h2", { text: `Patching sweep: ${P.metric}${P.relative ? " minus clean" : ""} per head (${["intervention", "alpha", "reference", "mode"].filter((k) => P.config[k] && P.config[k] !== "None").map((k) => `${k} ${P.config[k]}`).join(", ")})` }), box, detail);
  }
  let drawSae = () => {};
  if (D.sae) {
    const Z = D.sae, list = el("div", { id: "ha-sae-list" }), info = el("div", { class: "ha-box", id: "ha-sae-info" });
    const traces = Z.features.map((f) => bytes(f.trace));
    const snippets = {};
    Z.features.forEach((f, i) => list.append(el("button", { class: "ha-sae-btn", "data-i": i, text: `#${f.feature}`, title: f.label, onclick: () => { state.feature = i; drawSae(); } }), " "));
    drawSae = () => {
      const f = Z.features[state.feature], tr = traces[state.feature], c = saeC.getContext("2d");
      c.fillStyle = "#fff"; c.fillRect(0, 0, W, 26);
      heatRow(c, tr, 0, 26, 0, xOf(Z.trace_frames * Z.frame_seconds));
      document.getElementById("ha-sae-label").textContent = `SAE feature ${f.feature} on this clip (${Z.hook}; max ${fmt(f.trace_max, 3)})`;
      list.querySelectorAll("button").forEach((b) => b.classList.toggle("ha-on", Number(b.dataset.i) === state.feature));
      info.innerHTML = "";
      const hc = canvas(260, 70), hx = hc.getContext("2d"), mx = Math.max(1, ...f.hist);
      hx.fillStyle = "#4472c4";
      f.hist.forEach((v, i) => hx.fillRect((i / f.hist.length) * 260, 70 - (v / mx) * 66, 260 / f.hist.length - 0.5, (v / mx) * 66));
      const ex = el("table", {}, el("tr", {}, el("th", { text: "act" }), el("th", { text: "clip" }), el("th", { text: "time" }), el("th", { text: "words there" }), el("th", { text: "audio" })));
      f.examples.forEach((e) => {
        const btn = el("button", { text: "▶", onclick: () => {
          if (e.wav_base64 === undefined) play(e.start, e.end);
          else if (e.wav_base64) { (snippets[e.wav_base64] = snippets[e.wav_base64] || new Audio("data:audio/wav;base64," + e.wav_base64)).play().catch(() => {}); }
        } });
        ex.append(el("tr", {}, el("td", { text: fmt(e.value, 3) }), el("td", { text: e.clip }), el("td", { text: fmt(e.time) + " s" }),
          el("td", { text: e.context || (e.in_padding ? "(padding)" : "(silence)") }), el("td", {}, btn)));
      });
      info.append(el("div", {}, el("b", { text: `feature ${f.feature}: ${f.label}` }), ` · fires on ${fmt(100 * f.frequency, 3)}% of frames · max ${fmt(f.max_act, 3)}`),
        el("div", { class: "ha-flex" }, el("div", {}, el("div", { class: "ha-label", text: `log10 activation histogram (${fmt(f.bin_edges[0], 1)} to ${fmt(f.bin_edges[f.bin_edges.length - 1], 1)})` }), hc), ex));
    };
    root.append(el("h2", { text: `SAE features (${Z.hook}, d_sae ${Z.d_sae}, top examples over ${Z.n_clips} clip(s))` }), list, info);
  }
  if (D.probe) {
    const P = D.probe, tbl = el("table", { id: "ha-probe" }), keys = Object.keys(P.metrics);
    tbl.append(el("tr", {}, el("th", { text: "layer" }), ...keys.map((k) => el("th", { text: k }))));
    P.layers.forEach((ly, i) => tbl.append(el("tr", {}, el("td", { text: ly }), ...keys.map((k) => {
      const v = P.metrics[k][i];
      return el("td", {}, el("span", { class: "ha-bar", style: `width:${Math.round((v || 0) * 100)}px;opacity:${k.startsWith("test") ? 1 : 0.45}` }), " " + fmt(v, 3));
    }))));
    root.append(el("h2", { text: `Probe: ${P.title}` }), tbl);
  }

  document.addEventListener("keydown", (ev) => { // arrows step through tokens, space plays
    if (ev.target && /INPUT|TEXTAREA|SELECT/.test(ev.target.tagName)) return;
    if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
      selectToken(Math.max(0, Math.min(NS - 1, state.token + (ev.key === "ArrowRight" ? 1 : -1))), false);
      ev.preventDefault();
    } else if (ev.key === " ") { playBtn.click(); ev.preventDefault(); }
  });
  render(); drawCursor();
  cursor.style.height = "100%";
  window.hookedAsrExplorer = { data: D, state, selectToken, selectHead, render, heatRow, xOf, W, T, el, fmt, show, bytes,
    onRender: (f) => listeners.push(f) };
})();
