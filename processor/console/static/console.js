// TTS console: vanilla JS over the console's JSON API (see processor/console/app.py). No build step.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { config: null, voiceUpload: null, emotionUpload: null, jobId: null, jobTimer: null, lastJob: null,
  stream: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

async function api(path, options = {}) {
  const res = await fetch(path, options);
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const err = (body && body.error) || { code: `http_${res.status}`, message: res.statusText };
    throw Object.assign(new Error(err.message), { code: err.code, status: res.status });
  }
  return body;
}

const fmtS = (s) => (s === null || s === undefined ? "–" : `${Number(s).toFixed(2)} s`);
const fmtX = (x) => (x === null || x === undefined ? "–" : `${Number(x).toFixed(3)}×`);

// ------------------------------------------------------------------ form

function buildEmotionSliders(names, max) {
  const box = $("#emo-vector");
  names.forEach((name, i) => {
    const out = el("output", { id: `emo-v-${i}-out` }, "0.00");
    const input = el("input", { id: `emo-v-${i}`, type: "range", min: "0", max: String(max), step: "0.05",
      value: i === names.length - 1 ? "0.5" : "0", "data-name": name });
    input.addEventListener("input", () => { out.textContent = Number(input.value).toFixed(2); });
    out.textContent = Number(input.value).toFixed(2);
    box.append(el("label", { for: `emo-v-${i}` }, name, input, out));
  });
}

function setAdvancedDefaults() {
  for (const [name, value] of Object.entries(state.config.defaults)) {
    const input = document.getElementById(name);
    if (input) input.value = value;
  }
  $("#use_random").checked = false;
}

// Output options: formats this console's build encodes, rates each format allows.
function setupOutput() {
  const out = state.config.output;
  const fmt = $("#output_format");
  const labels = { wav: "WAV (16-bit PCM)", flac: "FLAC", opus: "Ogg Opus", mp3: "MP3" };
  fmt.replaceChildren(...out.formats.map((f) => el("option", { value: f }, labels[f] || f)));
  const loud = $("#loudness");
  for (const v of out.loudness_presets) loud.append(el("option", { value: String(v) }, `${v} LUFS`));
  $("#true_peak_dbtp").value = out.true_peak_dbtp;
  fmt.addEventListener("change", updateRates);
  updateRates();
}

function updateRates() {
  const f = $("#output_format").value;
  const select = $("#sample_rate");
  const previous = select.value;
  const def = f === "opus" ? "engine rate (48000 if Opus cannot code it)" : "engine rate";
  select.replaceChildren(el("option", { value: "" }, def),
    ...state.config.output.rates[f].map((r) => el("option", { value: String(r) }, `${r} Hz`)));
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
  $("#bitrate_kbps").disabled = !(f === "opus" || f === "mp3");
}

function emotionMode() { return document.querySelector("input[name=emotion_mode]:checked").value; }

function showModePanels() {
  const mode = emotionMode();
  document.querySelectorAll(".mode-panel").forEach((p) => { p.hidden = !p.dataset.mode.split(" ").includes(mode); });
}

async function loadVoices() {
  const select = $("#voice");
  const previous = select.value;
  try {
    const { voices } = await api("api/voices");
    select.replaceChildren();
    for (const v of voices) {
      const label = [v.name, v.language, v.gender].filter(Boolean).join(" · ");
      select.append(el("option", { value: v.name, title: v.description || "" }, label));
    }
    if (!voices.length) select.append(el("option", { value: "" }, "no presets: upload a clip"));
  } catch (e) {
    select.replaceChildren(el("option", { value: "" }, `presets unavailable (${e.code})`));
  }
  if (state.voiceUpload) addUploadedVoiceOption(state.voiceUpload);
  if (previous && [...select.options].some((o) => o.value === previous)) select.value = previous;
}

function addUploadedVoiceOption(up) {
  const select = $("#voice");
  let opt = select.querySelector("option[data-upload]");
  if (!opt) { opt = el("option", { "data-upload": "1" }); select.prepend(opt); }
  opt.value = up.uri;
  opt.textContent = `uploaded clip (${up.seconds.toFixed(1)} s)`;
  select.value = up.uri;
}

async function uploadClip(input, kind, statusEl) {
  const file = input.files[0];
  if (!file) return null;
  if (file.size > state.config.max_upload_bytes) {
    statusEl.textContent = `too large: ${file.size} bytes (limit ${state.config.max_upload_bytes})`;
    statusEl.className = "error small";
    return null;
  }
  statusEl.textContent = "uploading…";
  statusEl.className = "muted small";
  const fd = new FormData();
  fd.append("kind", kind);
  fd.append("file", file);
  try {
    const up = await api("api/uploads", { method: "POST", body: fd });
    statusEl.textContent = `stored ${up.uri} (${up.format}, ${up.seconds.toFixed(2)} s)`;
    statusEl.dataset.uri = up.uri;
    return up;
  } catch (e) {
    statusEl.textContent = `${e.code}: ${e.message}`;
    statusEl.className = "error small";
    return null;
  }
}

let segTimer = null;
function scheduleSegments() {
  const text = $("#text").value;
  $("#text-count").textContent = `${text.trim().length} / ${state.config.max_text_chars}`;
  clearTimeout(segTimer);
  segTimer = setTimeout(updateSegments, 250);
}

async function updateSegments() {
  const body = { text: $("#text").value, max_text_tokens_per_segment: Number($("#max_text_tokens_per_segment").value) };
  try {
    const r = await api("api/segments", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body) });
    const list = $("#segments");
    list.replaceChildren(...r.segments.map((s) => el("li", {}, s.text, el("span", { class: "tok" }, `≈${s.tokens} tokens`))));
    $("#seg-summary").textContent = `≈ ${r.segments.length} segment${r.segments.length === 1 ? "" : "s"}, ≈ ${r.total_tokens} tokens (budget ${r.max_text_tokens_per_segment} per segment)`;
    $("#seg-note").textContent = r.note;
  } catch (e) {
    $("#seg-summary").textContent = `preview unavailable (${e.code})`;
  }
}

function collectForm() {
  const mode = emotionMode();
  const form = { text: $("#text").value, voice: $("#voice").value, emotion_mode: mode,
    use_random: $("#use_random").checked };
  if (mode !== "same_as_voice") form.emotion_alpha = Number($("#emo-alpha").value);
  if (mode === "reference") form.emotion_reference = state.emotionUpload ? state.emotionUpload.uri : null;
  if (mode === "vector") form.emotion_vector = state.config.emotion_names.map((_, i) => Number($(`#emo-v-${i}`).value));
  if (mode === "text") form.emotion_text = $("#emo-text").value;
  for (const name of Object.keys(state.config.defaults)) {
    const v = document.getElementById(name).value;
    if (v !== "") form[name] = Number(v);
  }
  form.output_format = $("#output_format").value;
  for (const name of ["sample_rate", "channels", "loudness", "true_peak_dbtp"]) {
    const v = document.getElementById(name).value;
    if (v !== "") form[name] = Number(v);
  }
  const kbps = $("#bitrate_kbps");
  if (!kbps.disabled && kbps.value !== "") form.bitrate_kbps = Number(kbps.value);
  form.subtitles = $("#subtitles").value;
  form.stream_segments = $("#stream_segments").checked;
  return form;
}

async function submit(ev) {
  ev.preventDefault();
  const btn = $("#submit");
  $("#form-error").textContent = "";
  btn.disabled = true;
  try {
    const r = await api("api/requests", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(collectForm()) });
    followJob(r.request_id, r.job);
  } catch (e) {
    $("#form-error").textContent = `${e.code}: ${e.message}`;
  } finally {
    btn.disabled = false;
  }
}

// ------------------------------------------------------------------ the request being followed

function followJob(id, initial) {
  state.jobId = id;
  state.lastJob = null;
  $("#job").hidden = false;
  $("#job-placeholder").hidden = true;
  $("#job-id").textContent = id;
  $("#job-trace").textContent = "–";
  $("#job-error").hidden = true;
  $("#job-result").hidden = true;
  $("#player").removeAttribute("src");
  resetStream();
  if (initial) renderJob(initial);
  clearTimeout(state.jobTimer);
  pollJob();
}

async function pollJob() {
  const id = state.jobId;
  let job = null;
  try { job = await api(`api/requests/${encodeURIComponent(id)}`); } catch (_) { /* retry */ }
  if (id !== state.jobId) return;
  if (job) renderJob(job);
  if (!job || (job.state !== "done" && job.state !== "error")) state.jobTimer = setTimeout(pollJob, 500);
  else refreshHistory();
}

function renderJob(job) {
  $("#job-trace").textContent = job.trace_id || "–";
  const pill = $("#job-state");
  pill.textContent = job.state;
  pill.className = `pill ${job.state}`;
  const p = job.progress;
  const est = job.segments_estimate;
  if (job.state === "queued") {
    $("#job-progress").removeAttribute("value");
    $("#job-progress-text").textContent = `waiting for a worker… (≈${est ?? "?"} segments estimated)`;
  } else if (p) {
    $("#job-progress").max = p.segments;
    $("#job-progress").value = p.segment;
    $("#job-progress-text").textContent = `segment ${p.segment} / ${p.segments} · ${fmtS(p.elapsed_seconds)} · ${p.worker_id}`;
    state.lastSegments = p.segments;
  }
  renderTimeline(job.timeline || [], job.result);
  const r = job.result;
  if (!r) return;
  if (r.status === "success") {
    $("#job-progress").max = 1; $("#job-progress").value = 1;
    $("#job-progress-text").textContent = `done: ${r.segments} segment${r.segments === 1 ? "" : "s"} (estimated ${est ?? "?"})`;
    showResult(r);
  } else {
    $("#job-progress").max = 1; $("#job-progress").value = 0;
    $("#job-progress-text").textContent = "failed";
    const box = $("#job-error");
    box.hidden = false;
    box.replaceChildren(el("code", { id: "job-error-code" }, r.error_code || "error"), " ",
      el("span", { id: "job-error-message" }, r.error_message || ""));
  }
}

function showResult(r) {
  const same = state.lastJob === r.request_id;
  state.lastJob = r.request_id;
  $("#job-result").hidden = false;
  const player = $("#player");
  if (!same || !player.getAttribute("src")) player.src = r.audio_url;
  $("#result-duration").textContent = fmtS(r.duration_seconds);
  $("#result-processing").textContent = `${fmtS(r.processing_seconds)} (synthesis ${fmtS(r.synthesis_seconds)})`;
  $("#result-rtf").textContent = `${fmtX(r.rtf)} (synthesis ${fmtX(r.synthesis_rtf)})`;
  $("#result-segments").textContent = r.segments ?? "–";
  $("#result-worker").textContent = r.worker_id || "–";
  const m = r.model;
  $("#result-model").textContent = m ? `${m.model_type} ${m.model_version} · ${m.device} · ${m.precision}` : "–";
  $("#result-uri").textContent = r.output_uri || "–";
  const facts = [r.output_format, r.sample_rate ? `${r.sample_rate} Hz` : null,
    r.channels === 2 ? "stereo" : "mono", r.bitrate_kbps ? `${r.bitrate_kbps} kbit/s` : null,
    r.size_bytes ? `${(r.size_bytes / 1024).toFixed(1)} KiB` : null,
    r.loudness_lufs !== null && r.loudness_lufs !== undefined ? `${r.loudness_lufs.toFixed(1)} LUFS, ${r.true_peak_dbtp.toFixed(1)} dBTP` : null];
  $("#result-format").textContent = facts.filter(Boolean).join(" · ");
  const subs = r.subtitles || [];
  $("#result-subtitles").replaceChildren(...(subs.length ? subs.map((f) => el("a", { href: f.url, class: "sub-link",
    "data-format": f.format, target: "_blank" }, f.format.toUpperCase(), " ")) : ["–"]));
}

// ------------------------------------------------------------------ segment timeline and live playback

function resetStream() {
  const player = $("#stream-player");
  player.pause();
  player.removeAttribute("src");
  state.stream = { queued: [], seen: new Set(), playing: null, played: new Set() };
  $("#timeline").replaceChildren();
  $("#timeline-bar").replaceChildren();
  $("#timeline-box").hidden = true;
  $("#stream-box").hidden = true;
  $("#stream-status").textContent = "";
}

function renderTimeline(rows, result) {
  // The result's timing is final; until then each progress event brings its segment's row.
  const final = result && result.status === "success" && result.segment_timing && result.segment_timing.length;
  const timing = final ? result.segment_timing.map((t) => ({ ...t, ...(rows.find((r) => r.index === t.index) || {}),
    start_seconds: t.start_seconds, end_seconds: t.end_seconds, text: t.text })) : rows;
  if (!timing.length) return;
  $("#timeline-box").hidden = false;
  const total = final ? result.duration_seconds : Math.max(...timing.map((t) => t.end_seconds || 0), 0.001);
  $("#timeline-note").textContent = final ? `${timing.length} segments, times in the stored audio`
    : `${timing.length} of ${state.lastSegments || "?"} so far`;
  const list = $("#timeline");
  const bar = $("#timeline-bar");
  for (const t of timing) {
    let li = list.querySelector(`li[data-index="${t.index}"]`);
    if (!li) {
      li = el("li", { "data-index": String(t.index) }, el("span", { class: "t" }), el("span", { class: "txt" }));
      const after = [...list.children].find((c) => Number(c.dataset.index) > t.index);
      list.insertBefore(li, after || null);
    }
    li.querySelector(".t").textContent = `${fmtT(t.start_seconds)}–${fmtT(t.end_seconds)}`;
    li.querySelector(".txt").textContent = t.text || "";
    if (t.audio_url) li.classList.add("stored");
    li.classList.toggle("playing", state.stream.playing === t.index);
    li.classList.toggle("played", state.stream.played.has(t.index));
    if (t.audio_url && !state.stream.seen.has(t.index)) {
      state.stream.seen.add(t.index);
      state.stream.queued.push({ index: t.index, url: t.audio_url });
      state.stream.queued.sort((a, b) => a.index - b.index);
    }
  }
  bar.replaceChildren(...timing.map((t) => el("span", { "data-index": String(t.index),
    class: state.stream.playing === t.index ? "playing" : "",
    style: `left:${(100 * (t.start_seconds || 0) / total).toFixed(2)}%;width:${Math.max(0.5, 100 * ((t.end_seconds || 0) - (t.start_seconds || 0)) / total).toFixed(2)}%`,
    title: t.text || "" })));
  if (state.stream.queued.length || state.stream.playing !== null) $("#stream-box").hidden = false;
  playNextPiece();
}

function playNextPiece() {
  const s = state.stream;
  const player = $("#stream-player");
  if (s.playing !== null || !s.queued.length) return;
  const next = s.queued.shift();
  s.playing = next.index;
  player.src = next.url;
  player.dataset.index = String(next.index);
  $("#stream-status").textContent = `segment ${next.index}`;
  player.play().catch(() => {
    // Autoplay refused (no gesture yet): leave the piece loaded; the controls start it.
    $("#stream-status").textContent = `segment ${next.index} ready: press play`;
  });
  highlightPlaying();
}

function pieceEnded() {
  const s = state.stream;
  if (s.playing !== null) s.played.add(s.playing);
  const player = $("#stream-player");
  player.dataset.played = String(s.played.size);
  player.dataset.order = [...s.played].join(",");
  s.playing = null;
  highlightPlaying();
  if (!s.queued.length) $("#stream-status").textContent = `${s.played.size} segment(s) played`;
  playNextPiece();
}

function highlightPlaying() {
  const s = state.stream;
  document.querySelectorAll("#timeline li").forEach((li) => {
    const i = Number(li.dataset.index);
    li.classList.toggle("playing", s.playing === i);
    li.classList.toggle("played", s.played.has(i));
  });
  document.querySelectorAll("#timeline-bar span").forEach((b) => b.classList.toggle("playing", Number(b.dataset.index) === s.playing));
}

const fmtT = (s) => (s === null || s === undefined ? "?" : Number(s).toFixed(2));

// ------------------------------------------------------------------ workers, history, status

async function refreshWorkers() {
  try {
    const { workers } = await api("api/workers");
    // last_seen ticks every refresh; re-render only when something else changed or every 10 s.
    const key = JSON.stringify(workers.map((w) => ({ ...w, last_seen_seconds: Math.floor(w.last_seen_seconds / 10) })));
    if (key === state.workersKey) return;
    state.workersKey = key;
    const body = $("#workers tbody");
    if (!workers.length) {
      body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "9" }, "no health events yet")));
      return;
    }
    body.replaceChildren(...workers.map((w) => {
      const status = w.stale ? "stale" : w.status;
      const gpu = w.gpu && w.gpu.available ? `${w.gpu.name || "GPU"} ×${w.gpu.count}` : "no GPU (CPU)";
      const m = w.model || {};
      const model = m.loaded ? `${m.model_type} ${m.model_version} · ${m.device} · ${m.precision}` : "not loaded";
      const parts = (w.assignments || []).map((a) => `${a.partition}${a.lag !== null && a.lag !== undefined ? ` (${a.lag})` : ""}`).join(", ") || "none";
      const job = w.current_job ? `${w.current_job.request_id} · ${w.current_job.running_seconds.toFixed(1)} s` : "idle";
      const c = w.counters || {};
      const t = w.throughput || {};
      const tp = `${t.jobs_per_minute ?? "–"} jobs/min · ${t.audio_seconds ?? 0} s audio`;
      const reasons = (w.reasons || []).join("; ");
      return el("tr", { "data-worker-id": w.worker_id },
        el("td", { class: "mono" }, w.worker_id),
        el("td", {}, el("span", { class: `pill ${status}`, title: reasons }, status), reasons ? el("div", { class: "small error" }, reasons) : ""),
        el("td", {}, gpu), el("td", {}, model),
        el("td", { class: "num" }, parts, w.total_lag !== null && w.total_lag !== undefined ? el("div", { class: "muted small" }, `lag ${w.total_lag}`) : ""),
        el("td", { class: "mono" }, job),
        el("td", { class: "num" }, `${c.done ?? 0} / ${c.failed ?? 0}`),
        el("td", { class: "num" }, tp),
        el("td", { class: "num" }, `${w.last_seen_seconds.toFixed(0)} s ago`));
    }));
  } catch (_) { /* keep the last view */ }
}

async function refreshHistory() {
  try {
    const { results } = await api("api/history?limit=25");
    const key = JSON.stringify(results);
    if (key === state.historyKey) return;
    state.historyKey = key;
    const body = $("#history tbody");
    if (!results.length) {
      body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "8" }, "no results yet")));
      return;
    }
    body.replaceChildren(...results.map((r) => {
      const ok = r.status === "success";
      const play = ok ? el("button", { type: "button", class: "replay", "data-request-id": r.request_id,
        onclick: () => replay(r) }, "▶ play") : el("span", { class: "error small" }, r.error_code || "error");
      return el("tr", { "data-request-id": r.request_id },
        el("td", { class: "mono" }, r.request_id),
        el("td", {}, el("span", { class: `pill ${ok ? "done" : "error"}` }, r.status)),
        el("td", { class: "num" }, fmtS(r.duration_seconds)),
        el("td", { class: "num" }, fmtS(r.processing_seconds)),
        el("td", { class: "num" }, fmtX(r.rtf)),
        el("td", { class: "mono" }, r.worker_id || "–"),
        el("td", { class: "text", title: r.text || r.error_message || "" }, r.text || (ok ? "" : r.error_message || "")),
        el("td", {}, play));
    }));
    markPlaying();
  } catch (_) { /* keep */ }
}

function replay(r) {
  state.jobId = r.request_id;
  clearTimeout(state.jobTimer);
  $("#job").hidden = false;
  $("#job-placeholder").hidden = true;
  $("#job-id").textContent = r.request_id;
  $("#job-trace").textContent = r.trace_id || "–";
  $("#job-state").textContent = "done";
  $("#job-state").className = "pill done";
  $("#job-error").hidden = true;
  $("#job-progress").max = 1; $("#job-progress").value = 1;
  $("#job-progress-text").textContent = `replay: ${r.segments ?? "?"} segment(s)`;
  state.lastJob = null;
  resetStream();
  if (r.segment_timing && r.segment_timing.length) renderTimeline([], r);
  showResult(r);
  const player = $("#player");
  player.currentTime = 0;
  player.play().catch(() => { /* autoplay may be blocked; controls remain */ });
  state.playing = r.request_id;
  markPlaying();
}

function markPlaying() {
  document.querySelectorAll("#history tbody tr").forEach((tr) => tr.classList.toggle("playing", tr.dataset.requestId === state.playing));
}

async function refreshStatus() {
  const pill = $("#conn");
  try {
    const s = await api("api/status");
    const topics = Object.values(s.topics);
    const bad = topics.filter((t) => !t.ready);
    if (bad.length) {
      pill.textContent = `Kafka: ${bad.map((t) => t.topic).join(", ")} ${bad[0].error ? `(${bad[0].error})` : "connecting…"}`;
      pill.className = "pill warn";
    } else {
      pill.textContent = `Kafka ${s.kafka} · bucket ${s.bucket} · requests → ${s.request_topic}`;
      pill.className = "pill ok";
    }
    pill.dataset.ready = bad.length ? "0" : "1";
  } catch (_) {
    pill.textContent = "console unreachable";
    pill.className = "pill bad";
    pill.dataset.ready = "0";
  }
}

// ------------------------------------------------------------------ start

async function main() {
  state.config = await api("api/config");
  buildEmotionSliders(state.config.emotion_names, state.config.emotion_vector_max);
  setAdvancedDefaults();
  setupOutput();
  resetStream();
  $("#stream-player").addEventListener("ended", pieceEnded);
  $("#stream-player").addEventListener("error", pieceEnded);
  $("#emo-alpha").value = state.config.emotion_alpha;
  const alphaOut = $("#emo-alpha-out");
  const syncAlpha = () => { alphaOut.textContent = Number($("#emo-alpha").value).toFixed(2); };
  $("#emo-alpha").addEventListener("input", syncAlpha);
  syncAlpha();
  document.querySelectorAll("input[name=emotion_mode]").forEach((r) => r.addEventListener("change", showModePanels));
  showModePanels();
  $("#reset-advanced").addEventListener("click", () => { setAdvancedDefaults(); scheduleSegments(); });
  $("#text").addEventListener("input", scheduleSegments);
  $("#max_text_tokens_per_segment").addEventListener("input", scheduleSegments);
  $("#voice-file").addEventListener("change", async () => {
    const up = await uploadClip($("#voice-file"), "voice", $("#voice-upload-status"));
    if (up) { state.voiceUpload = up; addUploadedVoiceOption(up); }
  });
  $("#emo-file").addEventListener("change", async () => {
    state.emotionUpload = await uploadClip($("#emo-file"), "emotion", $("#emo-upload-status"));
  });
  $("#form").addEventListener("submit", submit);
  scheduleSegments();
  await loadVoices();
  refreshStatus(); refreshWorkers(); refreshHistory();
  setInterval(refreshStatus, 3000);
  setInterval(refreshWorkers, 2000);
  setInterval(refreshHistory, 4000);
  setInterval(loadVoices, 60000);
  document.body.dataset.ready = "1";
}

main().catch((e) => { $("#conn").textContent = `console failed to start: ${e.message}`; $("#conn").className = "pill bad"; });
