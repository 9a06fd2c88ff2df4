/* molediff report: the gallery (filter, sort, pages), the selected molecule's 3D view and details, the
   text sections and plots. Reads the JSON blob #report-data written by molediff.metrics.html_report. */
"use strict";

(function () {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const N = data.n, V = data.values, columns = data.columns;
  const column = {};
  for (const c of columns) column[c.key] = c;
  const $ = id => document.getElementById(id);
  const esc = svgEscape;

  /* ------------------------------------------------------------ molecules */
  const decoded = new Map();
  function molecule(i) {
    /* data.mols[i] unpacked: symbols, pos (Å), bonds, charges, 2D atoms and layout, hydrogen counts */
    if (decoded.has(i)) return decoded.get(i);
    const m = data.mols[i];
    const symbols = m.e.map(e => data.elements[e]);
    const n = symbols.length;
    const pos = [];
    for (let a = 0; a < n; a++) pos.push([m.x[3 * a] / 100, m.x[3 * a + 1] / 100, m.x[3 * a + 2] / 100]);
    const bonds = [];
    for (let b = 0; b + 2 < m.b.length; b += 3) bonds.push([m.b[b], m.b[b + 1], m.b[b + 2]]);
    const charges = new Array(n).fill(0);
    if (m.q) for (let k = 0; k + 1 < m.q.length; k += 2) charges[m.q[k]] = m.q[k + 1];
    const kept = m.k || symbols.map((_, a) => a);
    const shown = new Set(kept);
    const hcount = new Array(n).fill(0);
    for (const [i, j] of bonds) {
      if (shown.has(i) && !shown.has(j)) hcount[i]++;
      if (shown.has(j) && !shown.has(i)) hcount[j]++;
    }
    const xy = kept.map((_, k) => [m.d[2 * k] / 100, m.d[2 * k + 1] / 100]);
    const mol = { symbols, pos, bonds, charges, kept, xy, hcount };
    decoded.set(i, mol);
    return mol;
  }

  /* ------------------------------------------------------------ formatting */
  function formatValue(key, v) {
    if (v === null || v === undefined) return "\u2013";
    const c = column[key];
    if (c.kind === "bool") return v ? "yes" : "no";
    if (key === "qed") return v.toFixed(2);
    if (key === "sa" || key === "logp") return v.toFixed(1);
    if (key === "mol_wt" || key === "relaxation_drop") return v.toFixed(0);
    return String(v);
  }
  const BOOL_KEYS = columns.filter(c => c.kind === "bool").map(c => c.key);
  const CARD_FLAGS = BOOL_KEYS.filter(k => !k.startsWith("lookup_"));  /* the geometry's lookup view: filters and details only */
  const NUMBER_KEYS = ["qed", "sa", "logp", "mol_wt", "relaxation_drop"].filter(k => column[k]);

  /* ------------------------------------------------------------ the filter language */
  const ALIASES = { mw: "mol_wt", weight: "mol_wt", molwt: "mol_wt", pb: "posebusters", drop: "relaxation_drop",
    relax: "relaxation_drop", strain: "relaxation_drop", strict: "strict_valid", n: "atoms", size: "atoms" };
  function resolveColumn(word) {
    const w = word.toLowerCase();
    for (const c of columns) if (c.key === w || c.label.toLowerCase() === w) return c.key;
    if (ALIASES[w] && column[ALIASES[w]]) return ALIASES[w];
    throw new Error("unknown column '" + word + "' (columns: " + columns.map(c => c.key).join(", ") + ")");
  }
  function tokenize(text) {
    const re = /\s*(?:(<=|>=|!=|==|=|<|>|~|\(|\)|!|&&|\|\||,)|"([^"]*)"|'([^']*)'|(-?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)(?![\w.])|([^\s<>=!~(),&|"']+))/giy;
    const tokens = [];
    let m;
    while (re.lastIndex < text.length) {
      const start = re.lastIndex;
      m = re.exec(text);
      if (!m || re.lastIndex === start) {
        if (/^\s*$/.test(text.slice(start))) break;
        throw new Error("cannot read '" + text.slice(start).trim() + "'");
      }
      if (m[1] !== undefined) tokens.push({ t: "op", v: m[1] });
      else if (m[2] !== undefined || m[3] !== undefined) tokens.push({ t: "str", v: m[2] !== undefined ? m[2] : m[3] });
      else if (m[4] !== undefined) tokens.push({ t: "num", v: parseFloat(m[4]) });
      else if (m[5] !== undefined) tokens.push({ t: "word", v: m[5] });
    }
    return tokens;
  }
  function compileQuery(text) {
    /* "qed > 0.7 and not valid", "smiles ~ Cl or mw < 250": a predicate of the molecule index */
    const tokens = tokenize(text);
    let p = 0;
    const peek = () => tokens[p];
    const isWord = (tok, ...words) => tok && tok.t === "word" && words.includes(tok.v.toLowerCase());
    const isOp = (tok, ...ops) => tok && tok.t === "op" && ops.includes(tok.v);
    function expr() {
      let left = term();
      while (isWord(peek(), "or") || isOp(peek(), "||")) { p++; const a = left, b = term(); left = i => a(i) || b(i); }
      return left;
    }
    function term() {
      let left = factor();
      while (isWord(peek(), "and") || isOp(peek(), "&&", ",")) { p++; const a = left, b = factor(); left = i => a(i) && b(i); }
      return left;
    }
    function factor() {
      const tok = peek();
      if (!tok) throw new Error("incomplete filter");
      if (isWord(tok, "not") || isOp(tok, "!")) { p++; const f = factor(); return i => !f(i); }
      if (isOp(tok, "(")) {
        p++;
        const e = expr();
        if (!isOp(peek(), ")")) throw new Error("missing ')'");
        p++;
        return e;
      }
      return comparison();
    }
    function comparison() {
      const tok = tokens[p++];
      if (tok.t !== "word") throw new Error("expected a column name, got '" + tok.v + "'");
      const key = resolveColumn(tok.v), c = column[key], values = V[key];
      let op = peek();
      if (isWord(op, "contains")) op = { t: "op", v: "~" };
      if (!op || op.t !== "op" || !["<", "<=", ">", ">=", "=", "==", "!=", "~"].includes(op.v)) {
        if (c.kind === "bool") return i => values[i] === 1;
        if (c.kind === "text") return i => !!values[i];
        throw new Error("compare " + key + " with a number, e.g. " + key + " > 0.5");
      }
      p++;
      const valTok = tokens[p++];
      if (!valTok || valTok.t === "op") throw new Error("expected a value after '" + op.v + "'");
      if (c.kind === "bool") {
        const word = String(valTok.v).toLowerCase();
        const truth = ["yes", "true", "1"].includes(word) ? 1 : ["no", "false", "0"].includes(word) ? 0 : null;
        if (truth === null || !["=", "==", "!="].includes(op.v)) throw new Error(key + " is yes or no, e.g. " + key + " = no");
        return op.v === "!=" ? i => values[i] !== truth : i => values[i] === truth;
      }
      if (c.kind === "text") {
        const s = String(valTok.v);
        if (op.v === "~") return i => values[i] !== null && values[i].includes(s);  /* case matters: c is aromatic */
        if (op.v === "=" || op.v === "==") return i => values[i] === s;
        if (op.v === "!=") return i => values[i] !== s;
        throw new Error(key + " is text: use =, != or ~ (contains)");
      }
      if (valTok.t !== "num") throw new Error(key + " is a number: compare it with a number");
      const x = valTok.v;
      const test = { "<": v => v < x, "<=": v => v <= x, ">": v => v > x, ">=": v => v >= x, "=": v => v === x, "==": v => v === x,
        "!=": v => v !== x, "~": v => v === x }[op.v];
      return i => values[i] !== null && test(values[i]);
    }
    const f = expr();
    if (p < tokens.length) throw new Error("unexpected '" + tokens[p].v + "'");
    return f;
  }

  /* ------------------------------------------------------------ state */
  const state = { flags: {}, query: null, sortKey: "index", sortDir: 1, page: 0, pageSize: 50, selected: null, shown: [] };

  function applyFilters() {
    const flags = Object.entries(state.flags).filter(([, v]) => v !== "any");
    const q = state.query;
    const out = [];
    for (let i = 0; i < N; i++) {
      let ok = true;
      for (const [key, want] of flags) {
        const v = V[key][i];
        if ((want === "yes" && v !== 1) || (want === "no" && v !== 0) || (want === "unknown" && v !== null)) { ok = false; break; }
      }
      if (ok && q && !q(i)) ok = false;
      if (ok) out.push(i);
    }
    const key = state.sortKey, dir = state.sortDir, values = V[key], text = column[key].kind === "text";
    out.sort((a, b) => {
      const x = values[a], y = values[b];
      if (x === null || y === null) return x === y ? a - b : x === null ? 1 : -1;  /* missing values last */
      const c = text ? String(x).localeCompare(String(y)) : x - y;
      return c !== 0 ? dir * c : a - b;
    });
    state.shown = out;
  }

  function pages() { return Math.max(1, Math.ceil(state.shown.length / state.pageSize)); }

  /* ------------------------------------------------------------ gallery */
  function card(i) {
    const mol = molecule(i);
    const badges = CARD_FLAGS.map(k => {
      const v = V[k][i], cls = v === 1 ? "yes" : v === 0 ? "no" : "na";
      return '<span class="badge ' + cls + '" title="' + esc(column[k].label + ": " + formatValue(k, v) + " \u2014 " + column[k].help) + '">' +
        esc(column[k].label) + "</span>";
    }).join("");
    const nums = NUMBER_KEYS.map(k => '<span title="' + esc(column[k].help) + '">' + esc(column[k].label) + " " +
      formatValue(k, V[k][i]) + "</span>").join("");
    const smiles = V.smiles ? V.smiles[i] : null;
    const name = V.name ? V.name[i] : "";
    return '<div class="card' + (i === state.selected ? " selected" : "") + '" data-i="' + i + '">' +
      depictSVG(mol, 180, 135) +
      '<div class="cap"><b>#' + i + '</b><span class="name" title="' + esc(name) + '">' + esc(name) + "</span></div>" +
      '<div class="smi" title="' + esc(smiles || "not valid") + '">' + esc(smiles || "\u2013") + "</div>" +
      '<div class="badges">' + badges + '</div><div class="nums">' + nums + "</div></div>";
  }

  function render() {
    const total = state.shown.length;
    state.page = Math.min(state.page, pages() - 1);
    const start = state.page * state.pageSize, end = Math.min(total, start + state.pageSize);
    const gallery = $("gallery");
    gallery.innerHTML = total ? state.shown.slice(start, end).map(card).join("") :
      '<div class="empty">No molecule matches the filter.</div>';
    const count = $("count");
    count.dataset.shown = String(total);
    count.textContent = (total ? "molecules " + (start + 1) + "\u2013" + end + " of " + total : "0 molecules") +
      (total < N ? " (filtered from " + N + ")" : "");
    $("page").textContent = "page " + (state.page + 1) + " / " + pages();
    $("first").disabled = $("prev").disabled = state.page === 0;
    $("last").disabled = $("next").disabled = state.page >= pages() - 1;
  }

  function update() {
    applyFilters();
    render();
  }

  /* ------------------------------------------------------------ the selected molecule */
  const viewer = new MolViewer($("viewer"));
  function select(i) {
    if (i === null || i < 0 || i >= N) return;
    state.selected = i;
    for (const el of document.querySelectorAll(".card.selected")) el.classList.remove("selected");
    const el = document.querySelector('.card[data-i="' + i + '"]');
    if (el) el.classList.add("selected");
    const mol = molecule(i);
    viewer.load({ symbols: mol.symbols, pos: mol.pos, bonds: mol.bonds, charges: mol.charges });
    const rows = columns.filter(c => !["index", "name", "smiles"].includes(c.key)).map(c =>
      '<tr title="' + esc(c.help) + '"><td>' + esc(c.label) + "</td><td>" + esc(formatValue(c.key, V[c.key][i])) + "</td></tr>").join("");
    const counts = {};
    for (const s of mol.symbols) counts[s] = (counts[s] || 0) + 1;
    const formula = Object.keys(counts).sort((a, b) => (a === "C" ? -1 : b === "C" ? 1 : a === "H" ? -1 : b === "H" ? 1 : a.localeCompare(b)))
      .map(s => s + (counts[s] > 1 ? counts[s] : "")).join("");
    $("detail-info").innerHTML = "<h2>#" + i + " " + esc(V.name ? V.name[i] : "") + "</h2>" +
      '<div class="smiles">' + esc((V.smiles && V.smiles[i]) || "not valid: no SMILES") + "</div>" +
      '<div class="hint">' + esc(formula) + ", " + mol.bonds.length + " bonds (" + esc(data.bonds_label) + ")</div>" +
      "<table>" + rows + "</table>";
    setAddress();
  }

  function setAddress() {
    const params = new URLSearchParams();
    if (state.selected !== null) params.set("mol", state.selected);
    if (state.query && $("query").value.trim()) params.set("filter", $("query").value.trim());
    if (history.replaceState) history.replaceState(null, "", "#" + params.toString().replace(/\+/g, "%20"));
  }

  /* ------------------------------------------------------------ controls */
  function buildControls() {
    const flags = $("flags");
    for (const key of BOOL_KEYS) {
      const c = column[key];
      const hasMissing = V[key].some(v => v === null);
      const wrap = document.createElement("div");
      wrap.className = "flag";
      wrap.title = c.help;
      wrap.innerHTML = '<label for="flag-' + key + '">' + esc(c.label) + '</label><select id="flag-' + key + '" data-key="' + key + '">' +
        '<option value="any">any</option><option value="yes">yes</option><option value="no">no</option>' +
        (hasMissing ? '<option value="unknown">\u2013</option>' : "") + "</select>";
      flags.appendChild(wrap);
      state.flags[key] = "any";
      wrap.querySelector("select").addEventListener("change", e => { state.flags[key] = e.target.value; state.page = 0; update(); });
    }
    const sort = $("sort");
    sort.innerHTML = columns.filter(c => c.key !== "name").map(c => '<option value="' + c.key + '">' + esc(c.label) + "</option>").join("");
    sort.value = "index";
    sort.addEventListener("change", () => {
      state.sortKey = sort.value;
      state.sortDir = column[sort.value].kind === "bool" || ["qed", "posebusters"].includes(sort.value) ? -1 : 1;
      $("sort-dir").innerHTML = state.sortDir > 0 ? "&#8593;" : "&#8595;";
      update();
    });
    $("sort-dir").addEventListener("click", () => {
      state.sortDir = -state.sortDir;
      $("sort-dir").innerHTML = state.sortDir > 0 ? "&#8593;" : "&#8595;";
      update();
    });
    $("page-size").addEventListener("change", e => { state.pageSize = parseInt(e.target.value, 10); state.page = 0; render(); });
    const query = $("query");
    query.title = "Filter: comparisons joined by and / or / not, e.g. qed > 0.7 and not valid; smiles ~ Cl; mw < 300.\n" +
      "Columns: " + columns.map(c => c.key + (c.label.toLowerCase() !== c.key ? " (" + c.label + ")" : "")).join(", ");
    let timer = null;
    query.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        const text = query.value.trim();
        try {
          state.query = text ? compileQuery(text) : null;
          query.classList.remove("bad");
          $("query-error").textContent = "";
        } catch (err) {
          query.classList.add("bad");
          $("query-error").textContent = err.message;
          return;
        }
        state.page = 0;
        update();
        setAddress();
      }, 150);
    });
    const go = page => { state.page = Math.max(0, Math.min(pages() - 1, page)); render(); };
    $("first").addEventListener("click", () => go(0));
    $("prev").addEventListener("click", () => go(state.page - 1));
    $("next").addEventListener("click", () => go(state.page + 1));
    $("last").addEventListener("click", () => go(pages() - 1));
    $("gallery").addEventListener("click", e => {
      const el = e.target.closest(".card");
      if (el) select(parseInt(el.dataset.i, 10));
    });
    $("show-h").addEventListener("change", e => { viewer.showH = e.target.checked; viewer.draw(); });
    $("reset-view").addEventListener("click", () => viewer.reset());
    for (const button of document.querySelectorAll("#tabs button")) {
      button.addEventListener("click", () => {
        for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b === button);
        for (const s of document.querySelectorAll(".tab")) s.classList.toggle("active", s.id === "tab-" + button.dataset.tab);
        if (button.dataset.tab === "molecules") viewer.draw();
      });
    }
  }

  /* ------------------------------------------------------------ text sections, plots, header */
  function buildSections() {
    $("tab-scores").innerHTML = data.sections.length ? data.sections.map(s => "<h2>" + esc(s.title) + "</h2><pre>" + esc(s.text) + "</pre>").join("") :
      "<p>No scores.</p>";
    $("tab-plots").innerHTML = data.images.length ? data.images.map(im => '<figure><img alt="' + esc(im.title) + '" src="' + im.src +
      '"><figcaption>' + esc(im.title) + "</figcaption></figure>").join("") : "<p>No plots.</p>";
    $("subtitle").innerHTML = esc(N + " molecules \u00b7 bonds: " + data.bonds_label) +
      ' \u00b7 every score per molecule: <a href="molecules.csv">molecules.csv</a> (beside this page)';
    $("footer").innerHTML = data.notes.map(n => "<p>" + esc(n) + "</p>").join("") + "<p>" + esc("written by " + data.generated) + "</p>";
  }

  /* the address keeps the selected molecule and the filter: index.html#mol=12&filter=qed%20%3E%200.7 */
  const hash = new URLSearchParams(location.hash.slice(1));
  buildControls();
  buildSections();
  if (hash.get("filter")) {
    $("query").value = hash.get("filter");
    try { state.query = compileQuery(hash.get("filter")); } catch (err) { $("query").classList.add("bad"); $("query-error").textContent = err.message; }
  }
  update();
  const wanted = parseInt(hash.get("mol"), 10);
  select(wanted >= 0 ? Math.min(N - 1, wanted) : (state.shown.length ? state.shown[0] : null));
})();
