// hooked_asr live panel: runs after explorer.js on a page backed by a running model (hooked-asr explore --serve,
// or the Jupyter widget). Every action goes through call(action, body): HTTP to the local server with the
// page's token, or postMessage to the widget that hosts this page. The interventions are data (see live.py).
(function () {
  "use strict";
  const X = window.hookedAsrExplorer, CFG = window.HA_LIVE || {};
  if (!X) return;
  const { el, fmt, show, heatRow, data: D } = X;
  const A = D.audio_attention, NH = A.n_heads, NL = A.n_layers, W = X.W;
  const token = new URLSearchParams(location.search).get("token") || "";
  const root = document.getElementById("ha-root");
  const live = { interventions: [], tf: null, transcript: null, busy: false };

  // ---- transport ------------------------------------------------------------------------
  let nextId = 0;
  const pending = {};
  window.addEventListener("message", (ev) => { // replies from the widget host
    const m = ev.data;
    if (!m || m.ha_live_reply === undefined || !pending[m.ha_live_reply]) return;
    const { ok, bad } = pending[m.ha_live_reply];
    delete pending[m.ha_live_reply];
    m.error ? bad(new Error(m.error)) : ok(m.result);
  });
  async function call(action, body) {
    if (CFG.transport === "widget") {
      const id = ++nextId;
      return new Promise((ok, bad) => { pending[id] = { ok, bad }; window.parent.postMessage({ ha_live: id, action, body: body || {} }, "*"); });
    }
    const r = await fetch(`/api/${action}`, { method: "POST", headers: { "Content-Type": "application/json", "X-HA-Token": token },
      body: JSON.stringify(body || {}) });
    const j = await r.json();
    if (!r.ok) throw new Error(j.error || r.statusText);
    return j;
  }
  async function wait(jobId, label, onPartial) { // poll a job, showing its progress (and a transcript as it streams in)
    for (;;) {
      const j = await call("job", { id: jobId });
      setStatus(`${label}: ${j.message}`, j.state === "running");
      if (j.limit) { bar.max = j.limit; bar.value = Math.min(j.step || 0, j.limit); }
      if (onPartial && j.partial !== undefined && j.state === "running") onPartial(j.partial, j.partial_tokens);
      if (j.state === "done") return j.result;
      if (j.state === "error") throw new Error(j.error);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  // ---- layout ---------------------------------------------------------------------------
  const crossKind = A.kind === "cross" ? "cross_attn" : "attn";
  const comp = el("input", { id: "ha-live-comp", size: 36, value: `decoder.blocks.0.${crossKind}.head.0`,
    title: "<stack>.blocks.<l>.<attn|cross_attn|mlp>[.head.<h>] or any hook name; follows the head you pick" });
  const methods = (CFG.state && CFG.state.methods) || ["zero", "mean", "noise", "mask"], SAE = CFG.state && CFG.state.sae;
  const PROBE = CFG.state && CFG.state.probe;
  const probeValue = el("input", { id: "ha-live-probe-value", size: 5, value: "4", title: "probe: coefficient c of x + c · direction" });
  const method = el("select", { id: "ha-live-method" }, ...methods.map((m) => el("option", { value: m, text: m })));
  const feature = el("input", { id: "ha-live-feature", size: 5, placeholder: "feature", title: SAE ? `SAE feature 0..${SAE.d_sae - 1} (click one in the SAE panel)` : "" });
  const mode = el("select", { id: "ha-live-mode" }, ...["add", "scale", "clamp"].map((m) => el("option", { value: m, text: m })));
  const value = el("input", { id: "ha-live-value", size: 4, value: "0", title: "steer: add / scale by / clamp to this value" });
  const from = el("input", { id: "ha-live-from", size: 5, placeholder: "from s", title: "seconds (audio sites; shift-drag on the spectrogram)" });
  const to = el("input", { id: "ha-live-to", size: 5, placeholder: "to s" });
  const tokA = el("input", { id: "ha-live-tok-a", size: 3, placeholder: "tok a", title: "transcript tokens [a, b) (decoder sites)" });
  const tokB = el("input", { id: "ha-live-tok-b", size: 3, placeholder: "tok b" });
  const alpha = el("input", { id: "ha-live-alpha", size: 3, value: "1", title: "alpha: a~ = (1 - alpha) a + alpha target" });
  const list = el("ol", { id: "ha-live-list", class: "ha-live-list" });
  const status = el("span", { id: "ha-live-status", class: "ha-note", text: "ready" });
  const bar = el("progress", { id: "ha-live-progress" });
  bar.style.visibility = "hidden";
  const textBox = el("div", { id: "ha-live-result", class: "ha-box" }, el("span", { class: "ha-note", text: "no intervention run yet" }));
  const lpBox = el("div", { id: "ha-live-logprobs", class: "ha-scroll" });
  const stripLabel = el("div", { class: "ha-label", id: "ha-live-strip-label" });
  const strips = X.el("canvas", { width: W, height: 44, id: "ha-live-strip" });
  strips.style.width = W + "px"; strips.style.height = "44px";
  const lensBox = el("div", { id: "ha-live-lens" });
  const code = el("pre", { id: "ha-live-code", class: "ha-live-code" });

  function button(id, text, onclick, title) { return el("button", { id, text, onclick, title: title || "" }); }
  const addBtn = button("ha-live-add", "add", () => addFromForm());
  const ablateHead = button("ha-live-ablate-head", "ablate the selected head", () => {
    if (X.state.head < 0) { setStatus("pick one head first (the grid on the right)"); return; }
    live.interventions.push({ component: headComponent(X.state.head), method: "zero" });
    drawList(); runAll();
  }, "zero-ablate the head picked on the right, then recompute and re-transcribe");
  const tfBtn = button("ha-live-tf", "recompute (teacher-forced)", () => runTf());
  const trBtn = button("ha-live-transcribe", "re-transcribe", () => runTranscribe());
  const exportBtn = button("ha-live-export", "export Python", async () => {
    try { code.textContent = (await call("export", { interventions: live.interventions })).code; setStatus("exported: run this code to get the same numbers"); }
    catch (e) { setStatus("error: " + e.message); }
  });
  const clearBtn = button("ha-live-clear", "clear", () => { live.interventions = []; drawList(); });

  // audio: upload, window, microphone
  const file = el("input", { id: "ha-live-file", type: "file", accept: "audio/*" });
  const wStart = el("input", { id: "ha-live-start", size: 5, value: String(CFG.state ? CFG.state.start : 0), title: "start of the window (s)" });
  const wLen = el("input", { id: "ha-live-window", size: 5, placeholder: "≤ 30", title: "window length (s), at most the model's 30 s" });
  const uploadBtn = button("ha-live-upload", "upload", () => upload());
  const otherBtn = button("ha-live-upload-other", "upload as the other clip", () => upload("other"),
    "the second clip method 'other' patches from (cut or padded to this clip's length)");
  const otherNote = el("span", { class: "ha-note", id: "ha-live-other-note",
    text: CFG.state && CFG.state.other ? `other clip: ${CFG.state.other.name} (${fmt(CFG.state.other.duration)} s)` : "no other clip yet" });
  const windowBtn = button("ha-live-rewindow", "show this window", () => rewindow());
  const recBtn = button("ha-live-record", "● record", () => record());
  const total = CFG.state ? CFG.state.total : D.audio.duration;

  // Element.append writes null as the text "null": the optional rows are dropped instead.
  root.append(...[el("h2", { text: "Live: intervene and recompute (backed by the running model)" }),
    el("div", { class: "ha-controls" }, "component ", comp, " ", method, " ", from, to, " ", tokA, tokB, " α ", alpha, " ", addBtn, " ", ablateHead),
    SAE ? el("div", { class: "ha-controls" }, `SAE on ${SAE.hook} (method steer): `, feature, " ", mode, " ", value,
      el("span", { class: "ha-note", text: "edits one feature with the SAE's error kept; from/to limit it to a time range" })) : null,
    PROBE ? el("div", { class: "ha-controls" }, `probe on ${PROBE.hook} (method probe): coefficient `, probeValue,
      el("span", { class: "ha-note", text: "adds c times the probe's unit direction; from/to limit it to a time range" })) : null,
    el("div", { class: "ha-note", text: "zero: a~ = 0 · mean: the clip's mean activation · noise: the activation on white noise · other: the activation on the other clip (upload it below) · mask: the head cannot attend to the range. Range: seconds for encoder frames / cross-attention keys, tokens [a, b) for decoder positions; empty: everywhere. Shift-drag on the spectrogram fills from/to." }),
    list,
    el("div", { class: "ha-controls" }, tfBtn, trBtn, exportBtn, clearBtn, bar, status),
    textBox,
    el("div", { class: "ha-flex" },
      el("div", {}, el("div", { class: "ha-label", text: "log p of each clean token: before → after" }), lpBox),
      el("div", {}, stripLabel, strips, el("div", { class: "ha-label", id: "ha-live-lens-label" }), lensBox)),
    code,
    el("h2", { text: "Your own audio" }),
    el("div", { class: "ha-controls" }, file, " start ", wStart, " window ", wLen, " ", uploadBtn, " ", otherBtn, " ", windowBtn, " ", recBtn, " ", otherNote,
      el("span", { class: "ha-note", id: "ha-live-audio-note",
        text: `now: ${CFG.state ? CFG.state.name : "clip"}, ${fmt(total)} s in all, window from ${fmt(CFG.state ? CFG.state.start : 0)} s` +
          (CFG.max_upload_bytes ? ` · uploads up to ${Math.round(CFG.max_upload_bytes / 1048576)} MB` : "") }))].filter((x) => x != null));

  // ---- the list ---------------------------------------------------------------------------
  function headComponent(hd) { return `decoder.blocks.${Math.floor(hd / NH)}.${crossKind}.head.${hd % NH}`; }
  function describe(iv) {
    let where = "";
    if (iv.method === "probe") return `steer along the probe: + ${iv.value} · direction` + (iv.from !== undefined ? ` ${fmt(iv.from)}–${fmt(iv.to)} s` : "");
    if (iv.method === "steer") return `steer SAE feature ${iv.feature}: ${iv.mode} ${iv.value}` + (iv.from !== undefined ? ` ${fmt(iv.from)}–${fmt(iv.to)} s` : "");
    if (iv.from !== undefined) where = ` ${fmt(iv.from)}–${fmt(iv.to)} s`;
    if (iv.tokens) where = ` tokens ${iv.tokens[0]}–${iv.tokens[1] - 1}`;
    return `${iv.method} ${iv.component}${where}${iv.alpha !== undefined && iv.alpha !== 1 ? " α " + iv.alpha : ""}`;
  }
  function drawList() {
    list.innerHTML = "";
    live.interventions.forEach((iv, i) => list.append(el("li", { "data-i": i }, describe(iv), " ",
      el("button", { class: "ha-live-del", text: "✕", title: "remove", onclick: () => { live.interventions.splice(i, 1); drawList(); } }))));
    if (!live.interventions.length) list.append(el("li", { class: "ha-note", text: "no interventions: add one, or pick a head and 'ablate the selected head'" }));
  }
  function addFromForm() {
    const num = (x) => (x.value.trim() === "" ? null : Number(x.value));
    if (method.value === "steer") {
      const iv = { method: "steer", feature: Math.trunc(num(feature) ?? 0), mode: mode.value, value: num(value) ?? 0 };
      if (num(from) != null || num(to) != null) { iv.from = num(from) ?? 0; iv.to = num(to) ?? D.audio.duration; }
      live.interventions.push(iv); drawList(); return;
    }
    if (method.value === "probe") {
      const iv = { method: "probe", value: num(probeValue) ?? 0 };
      if (num(from) != null || num(to) != null) { iv.from = num(from) ?? 0; iv.to = num(to) ?? D.audio.duration; }
      live.interventions.push(iv); drawList(); return;
    }
    const iv = { component: comp.value.trim(), method: method.value };
    if (num(from) != null || num(to) != null) { iv.from = num(from) ?? 0; iv.to = num(to) ?? D.audio.duration; }
    if (num(tokA) != null || num(tokB) != null) iv.tokens = [Math.trunc(num(tokA) ?? 0), Math.trunc(num(tokB) ?? (num(tokA) ?? 0) + 1)];
    if (num(alpha) != null && num(alpha) !== 1 && iv.method !== "mask") iv.alpha = num(alpha);
    live.interventions.push(iv); drawList();
  }
  function setStatus(msg, running) {
    status.textContent = msg;
    bar.style.visibility = running ? "visible" : "hidden";
  }

  // ---- actions ------------------------------------------------------------------------------
  async function runTf() {
    setStatus("recomputing (teacher-forced)…", true);
    const t0 = performance.now();
    try {
      live.tf = await call("teacher_forced", { interventions: live.interventions });
      live.tfBytes = X.bytes(live.tf.audio_attention.data);
      setStatus(`teacher-forced: sum log p ${fmt(live.tf.sum_before, 3)} → ${fmt(live.tf.sum_after, 3)} (${Math.round(performance.now() - t0)} ms)`);
      root.dataset.liveTf = String(live.tf.sum_after);
      drawTf();
    } catch (e) { setStatus("error: " + e.message); }
  }
  async function runTranscribe() {
    setStatus("re-transcribing…", true);
    try {
      const { job } = await call("transcribe", { interventions: live.interventions });
      live.transcript = await wait(job, "re-transcribing", drawPartial);
      setStatus(`re-transcribed with ${live.interventions.length} intervention(s)`);
      drawTranscript();
    } catch (e) { setStatus("error: " + e.message); }
  }
  async function runAll() { await runTf(); await runTranscribe(); }

  // ---- drawing ------------------------------------------------------------------------------
  function drawPartial(text, n) { // the re-transcription so far, while it decodes
    let p = document.getElementById("ha-live-partial");
    if (!p) { textBox.innerHTML = ""; p = el("div", { id: "ha-live-partial", class: "ha-note" }); textBox.append(p); }
    p.textContent = `decoding (${n} tokens so far): ${text}`;
    root.dataset.livePartial = text;
  }
  function drawTranscript() {
    const r = live.transcript;
    textBox.innerHTML = "";
    const diff = el("div", { id: "ha-live-diff", class: "ha-live-diff" });
    for (const [op, words] of r.diff) diff.append(el("span", { class: op === "=" ? "" : op === "-" ? "ha-del" : "ha-ins", text: words }), " ");
    textBox.append(el("div", {}, "clean: ", el("b", { text: r.clean_text })),
      el("div", {}, "with the interventions: ", el("b", { id: "ha-live-text", text: r.text })),
      el("div", {}, "word diff: ", diff));
    root.dataset.liveText = r.text;
  }
  function drawTf() {
    const r = live.tf;
    if (!r) return;
    const s = X.state.token, tokens = D.transcript.tokens;
    lpBox.innerHTML = "";
    const tbl = el("table", { id: "ha-live-lp-table" }, el("tr", {}, el("th", { text: "token" }), el("th", { text: "before" }), el("th", { text: "after" }), el("th", { text: "Δ" })));
    r.logprobs_before.forEach((b, i) => {
      const a = r.logprobs_after[i], d = a - b;
      const tr = el("tr", { class: i === s ? "ha-sat" : "" }, el("td", { text: show(tokens[i].text) }), el("td", { text: fmt(b, 3) }),
        el("td", { text: fmt(a, 3) }), el("td", { text: fmt(d, 3) }));
      tr.style.cursor = "pointer"; tr.addEventListener("click", () => X.selectToken(i, false));
      if (Math.abs(d) > 1e-3) tr.children[3].style.background = d < 0 ? `rgba(220,50,50,${Math.min(1, -d / 3)})` : `rgba(50,120,220,${Math.min(1, d / 3)})`;
      tbl.append(tr);
    });
    lpBox.append(tbl);
    // the selected token's attention over the audio: clean (top) and intervened (bottom), same head
    const hd = X.state.head, B = r.audio_attention, NC = B.columns, c = strips.getContext("2d"), wA = X.xOf(B.seconds);
    const row = (bytes, att) => {
      if (hd < 0) return (att === A ? X.bytes(A.mean_data) : X.bytes(B.mean_data)).subarray(s * NC, (s + 1) * NC);
      const o = (s * NL * NH + hd) * NC; return bytes.subarray(o, o + NC);
    };
    live.cleanBytes = live.cleanBytes || X.bytes(A.data);
    c.fillStyle = "#fff"; c.fillRect(0, 0, W, 44);
    heatRow(c, row(live.cleanBytes, A), 0, 21, 0, wA); heatRow(c, row(live.tfBytes, B), 23, 21, 0, wA);
    stripLabel.textContent = `token ${s} ${JSON.stringify(tokens[s].text)}, ${hd < 0 ? "mean of alignment heads" : `L${Math.floor(hd / NH)} H${hd % NH}`}: attention over the audio, clean (top) and intervened (bottom)`;
    // logit lens of the selected token: clean top-1 vs intervened top-1 per layer
    const L0 = D.logit_lens, L1 = r.logit_lens;
    document.getElementById("ha-live-lens-label").textContent = `logit lens of token ${s}: top-1 per layer, clean → intervened (p of the clean token)`;
    lensBox.innerHTML = "";
    const lt = el("table", { id: "ha-live-lens-table" }, el("tr", {}, el("th", { text: "layer" }), el("th", { text: "clean top-1" }), el("th", { text: "intervened top-1" }), el("th", { text: "p(token) clean → after" })));
    L1.layers.forEach((l) => lt.append(el("tr", {}, el("td", { text: l }),
      el("td", { text: `${show(L0.topk_strs[l][s][0])} ${fmt(L0.topk_probs[l][s][0])}` }),
      el("td", { class: L1.topk_ids[l][s][0] !== L0.topk_ids[l][s][0] ? "ha-changed" : "", text: `${show(L1.topk_strs[l][s][0])} ${fmt(L1.topk_probs[l][s][0])}` }),
      el("td", { text: `${fmt(L0.chosen_prob[l][s], 3)} → ${fmt(L1.chosen_prob[l][s], 3)}` }))));
    lensBox.append(lt);
  }

  // ---- audio ------------------------------------------------------------------------------
  async function sendAudio(blob, name, role) {
    const start = Number(wStart.value || 0), win = wLen.value.trim();
    if (CFG.max_upload_bytes && blob.size > CFG.max_upload_bytes) { setStatus(`the file has ${blob.size} bytes; the limit is ${CFG.max_upload_bytes}`); return; }
    setStatus("uploading…", true);
    try {
      let job;
      if (CFG.transport === "widget") {
        const b64 = await new Promise((ok) => { const fr = new FileReader(); fr.onload = () => ok(String(fr.result).split(",")[1]); fr.readAsDataURL(blob); });
        ({ job } = await call("upload_base64", { data: b64, start, window: win === "" ? null : Number(win), name, as: role || "clip" }));
      } else {
        const q = new URLSearchParams({ start: String(start), name, as: role || "clip" });
        if (win !== "") q.set("window", win);
        const r = await fetch(`/upload?${q}`, { method: "POST", headers: { "X-HA-Token": token, "Content-Type": "application/octet-stream" }, body: blob });
        const j = await r.json();
        if (!r.ok) throw new Error(j.error || r.statusText);
        job = j.job;
      }
      const st = await wait(job, role === "other" ? "other clip" : "new audio");
      if (role === "other") {
        otherNote.textContent = `other clip: ${st.other.name} (${fmt(st.other.duration)} s)`;
        root.dataset.liveOther = st.other.name;
        setStatus("the other clip is ready: method 'other' patches from it");
      } else reloadPage();
    } catch (e) { setStatus("error: " + e.message); }
  }
  function reloadPage() {
    if (CFG.transport === "widget") window.parent.postMessage({ ha_live_reload: true }, "*");
    else location.reload();
  }
  function upload(role) {
    const f = file.files && file.files[0];
    if (!f) { setStatus("choose a file first"); return; }
    sendAudio(f, f.name.replace(/\.[^.]*$/, ""), role);
  }
  async function rewindow() {
    const win = wLen.value.trim();
    try {
      const { job } = await call("window", { start: Number(wStart.value || 0), window: win === "" ? null : Number(win) });
      await wait(job, "new window"); reloadPage();
    } catch (e) { setStatus("error: " + e.message); }
  }
  // Microphone: MediaRecorder gives compressed audio; decode it and write 16-bit PCM WAV here.
  function wavBytes(samples, rate) {
    const buf = new ArrayBuffer(44 + samples.length * 2), v = new DataView(buf);
    const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
    str(0, "RIFF"); v.setUint32(4, 36 + samples.length * 2, true); str(8, "WAVE"); str(12, "fmt ");
    v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, rate, true);
    v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true); str(36, "data"); v.setUint32(40, samples.length * 2, true);
    for (let i = 0; i < samples.length; i++) v.setInt16(44 + i * 2, Math.max(-1, Math.min(1, samples[i])) * 32767, true);
    return new Blob([buf], { type: "audio/wav" });
  }
  let recorder = null;
  async function record() {
    if (recorder) { recorder.stop(); return; }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const chunks = [];
      recorder = new MediaRecorder(stream);
      recorder.ondataavailable = (e) => chunks.push(e.data);
      recorder.onstop = async () => {
        stream.getTracks().forEach((t) => t.stop());
        recorder = null; recBtn.textContent = "● record";
        const ctx = new AudioContext(), pcm = await ctx.decodeAudioData(await new Blob(chunks).arrayBuffer());
        sendAudio(wavBytes(pcm.getChannelData(0), pcm.sampleRate), "recording");
      };
      recorder.start(); recBtn.textContent = "■ stop"; setStatus("recording… press stop to send", true);
    } catch (e) { setStatus("no microphone: " + e.message); }
  }

  // ---- the explorer's selection drives the form -------------------------------------------
  X.onRender((st) => { if (st.head >= 0) comp.value = headComponent(st.head); drawTf(); });
  const mel = document.getElementById("ha-mel");
  if (mel) { // shift-drag: a time range for from/to
    let down = null;
    mel.addEventListener("mousedown", (e) => { if (e.shiftKey) down = (e.offsetX / W) * X.T; });
    mel.addEventListener("mouseup", (e) => {
      if (down == null) return;
      const t = (e.offsetX / W) * X.T, a = Math.min(down, t), b = Math.max(down, t);
      down = null;
      if (b - a > 0.01) { from.value = a.toFixed(2); to.value = b.toFixed(2); }
    });
  }
  const saeList = document.getElementById("ha-sae-list");
  if (saeList && D.sae) saeList.addEventListener("click", () => { feature.value = String(D.sae.features[X.state.feature].feature); method.value = "steer"; });
  drawList();
  window.hookedAsrLive = { call, live, wavBytes, runTf, runTranscribe, drawList };
})();
