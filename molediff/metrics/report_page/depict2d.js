/* molediff report: 2D depictions as SVG, drawn from RDKit's 2D layout (computed when the report was
   written) with the bonds as written: carbon skeleton as lines, other atoms (and charged or lone carbons)
   as element labels with their hydrogen count and charge; a double bond's second line goes to the side of
   its neighbours (inside a ring), or both lines sit either side of the axis. */
"use strict";

const LABEL_COLORS = {
  H: "#555555", B: "#c05050", C: "#222222", N: "#2040d0", O: "#e01010", F: "#2a9d2a", Si: "#8a6a4a",
  P: "#d06a00", S: "#a08000", Cl: "#1f9a1f", Br: "#992222", I: "#7a007a",
};

function svgEscape(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function depictSVG(mol, width, height) {
  /* mol: {symbols, charges, bonds: [[i, j, order]], kept: [atom], xy: [[x, y]] (kept order), hcount: [atom]} */
  const open = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ' + width + " " + height + '" width="' + width +
    '" height="' + height + '">';
  const kept = mol.kept, n = kept.length;
  if (!n) return open + "</svg>";
  const local = new Map(kept.map((a, k) => [a, k]));
  const bonds = [];
  for (const [i, j, o] of mol.bonds) if (local.has(i) && local.has(j)) bonds.push([local.get(i), local.get(j), o]);
  const lengths = bonds.map(([i, j]) => Math.hypot(mol.xy[i][0] - mol.xy[j][0], mol.xy[i][1] - mol.xy[j][1])).sort((a, b) => a - b);
  const unit = lengths.length ? Math.max(lengths[lengths.length >> 1], 1e-3) : 1.5;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const [x, y] of mol.xy) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  const pad = 0.8 * unit;
  const scale = Math.min(width / (x1 - x0 + 2 * pad), height / (y1 - y0 + 2 * pad), 28 / unit);
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const pts = mol.xy.map(([x, y]) => [width / 2 + (x - cx) * scale, height / 2 - (y - cy) * scale]);
  const bondPx = unit * scale;
  const font = Math.max(7, Math.min(14, 0.55 * bondPx));
  const neighbours = kept.map(() => []);
  for (const [i, j] of bonds) { neighbours[i].push(j); neighbours[j].push(i); }
  const labelled = kept.map((a, k) => mol.symbols[a] !== "C" || mol.charges[a] !== 0 || neighbours[k].length === 0);
  const parts = [open];
  const line = (ax, ay, bx, by, dash) => parts.push('<line x1="' + ax.toFixed(1) + '" y1="' + ay.toFixed(1) + '" x2="' +
    bx.toFixed(1) + '" y2="' + by.toFixed(1) + '"' + (dash ? ' stroke-dasharray="3 2"' : "") + "/>");
  parts.push('<g stroke="#222" stroke-width="' + Math.max(0.8, Math.min(1.6, bondPx / 20)).toFixed(2) + '" stroke-linecap="round">');
  for (const [i, j, order] of bonds) {
    let [ax, ay] = pts[i], [bx, by] = pts[j];
    const len = Math.hypot(bx - ax, by - ay);
    if (len < 1e-6) continue;
    const ux = (bx - ax) / len, uy = (by - ay) / len, nx = -uy, ny = ux;
    const trim = 0.62 * font;
    if (labelled[i]) { ax += ux * trim; ay += uy * trim; }
    if (labelled[j]) { bx -= ux * trim; by -= uy * trim; }
    const gap = Math.max(2.2, 0.17 * bondPx);
    if (order === 1) { line(ax, ay, bx, by); continue; }
    if (order === 3) {
      line(ax, ay, bx, by);
      line(ax + nx * gap, ay + ny * gap, bx + nx * gap, by + ny * gap);
      line(ax - nx * gap, ay - ny * gap, bx - nx * gap, by - ny * gap);
      continue;
    }
    /* double (2) or aromatic (4): which side do the neighbours lie on? */
    let side = 0;
    for (const [c, other] of [[i, j], [j, i]]) for (const k of neighbours[c]) {
      if (k === other) continue;
      const cross = (pts[j][0] - pts[i][0]) * (pts[k][1] - pts[i][1]) - (pts[j][1] - pts[i][1]) * (pts[k][0] - pts[i][0]);
      side += Math.sign(cross);
    }
    if (side === 0 && order === 2) {
      line(ax + nx * gap / 2, ay + ny * gap / 2, bx + nx * gap / 2, by + ny * gap / 2);
      line(ax - nx * gap / 2, ay - ny * gap / 2, bx - nx * gap / 2, by - ny * gap / 2);
      continue;
    }
    const s = side >= 0 ? 1 : -1, inset = 0.14 * len;
    line(ax, ay, bx, by);
    line(ax + nx * gap * s + (labelled[i] ? 0 : ux * inset), ay + ny * gap * s + (labelled[i] ? 0 : uy * inset),
      bx + nx * gap * s - (labelled[j] ? 0 : ux * inset), by + ny * gap * s - (labelled[j] ? 0 : uy * inset), order === 4);
  }
  parts.push("</g>");
  parts.push('<g font-family="Helvetica, Arial, DejaVu Sans, sans-serif" font-size="' + font.toFixed(1) + '" dominant-baseline="central">');
  kept.forEach((a, k) => {
    if (!labelled[k]) return;
    const sym = mol.symbols[a], [x, y] = pts[k], color = LABEL_COLORS[sym] || "#d0209a";
    const half = 0.31 * font * sym.length;
    parts.push('<text x="' + x.toFixed(1) + '" y="' + y.toFixed(1) + '" text-anchor="middle" fill="' + color + '">' + svgEscape(sym) + "</text>");
    const h = mol.hcount[a] || 0;
    let dx = 0;
    for (const m of neighbours[k]) dx += pts[m][0] - x;
    const left = dx > 0.1;  /* the hydrogens go on the side away from the bonds */
    const hWidth = h ? 0.7 * font + (h > 1 ? 0.45 * font : 0) : 0;
    if (h) {
      const text = "H" + (h > 1 ? '<tspan font-size="' + (0.7 * font).toFixed(1) + '" dy="' + (0.3 * font).toFixed(1) + '">' + h + "</tspan>" : "");
      const hx = left ? x - half : x + half;
      parts.push('<text x="' + hx.toFixed(1) + '" y="' + y.toFixed(1) + '" text-anchor="' + (left ? "end" : "start") + '" fill="' + color + '">' + text + "</text>");
    }
    const q = mol.charges[a];
    if (q) {
      const text = (Math.abs(q) > 1 ? Math.abs(q) : "") + (q > 0 ? "+" : "\u2212");
      const qx = x + half + (left ? 0 : hWidth);
      parts.push('<text x="' + qx.toFixed(1) + '" y="' + (y - 0.5 * font).toFixed(1) + '" font-size="' + (0.7 * font).toFixed(1) +
        '" fill="' + color + '">' + text + "</text>");
    }
  });
  parts.push("</g></svg>");
  return parts.join("");
}
