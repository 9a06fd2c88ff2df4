/* molediff report: a ball-and-stick 3D view of one molecule on a 2D canvas (no WebGL, no library).
   Bonds are drawn with the orders written (double: two sticks, triple: three, aromatic: one solid and one
   dashed); drag rotates, the wheel zooms, a double-click resets. Painter's algorithm: atoms and half
   bonds are drawn far to near. */
"use strict";

/* Jmol's CPK colours of the elements molediff knows. */
const ATOM_COLORS = {
  H: "#ffffff", B: "#ffb5b5", C: "#909090", N: "#3050f8", O: "#ff0d0d", F: "#90e050", Si: "#f0c8a0",
  P: "#ff8000", S: "#ffff30", Cl: "#1ff01f", Br: "#a62929", I: "#940094",
};
/* Ball radii (Å) of the ball-and-stick model. */
const BALL_RADIUS = { H: 0.22, C: 0.34, N: 0.33, O: 0.33, F: 0.31, B: 0.34, Si: 0.4, P: 0.4, S: 0.4, Cl: 0.38, Br: 0.42, I: 0.46 };

function shade(hex, f) {
  /* The colour hex lightened (f > 0, towards white) or darkened (f < 0, towards black). */
  const n = parseInt(hex.slice(1), 16);
  const c = [(n >> 16) & 255, (n >> 8) & 255, n & 255].map(v => Math.round(f >= 0 ? v + (255 - v) * f : v * (1 + f)));
  return "rgb(" + c.join(",") + ")";
}

function principalAxes(points) {
  /* Rows: the eigenvectors of the points' covariance, largest variance first (Jacobi rotations). */
  const a = [[0, 0, 0], [0, 0, 0], [0, 0, 0]];
  for (const p of points) for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) a[i][j] += p[i] * p[j];
  const v = [[1, 0, 0], [0, 1, 0], [0, 0, 1]];
  for (let sweep = 0; sweep < 30; sweep++) {
    let off = 0;
    for (let p = 0; p < 3; p++) for (let q = p + 1; q < 3; q++) off += a[p][q] * a[p][q];
    if (off < 1e-12) break;
    for (let p = 0; p < 3; p++) for (let q = p + 1; q < 3; q++) {
      if (Math.abs(a[p][q]) < 1e-15) continue;
      const theta = (a[q][q] - a[p][p]) / (2 * a[p][q]);
      const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
      const c = 1 / Math.sqrt(t * t + 1), s = t * c;
      for (let k = 0; k < 3; k++) {
        const akp = a[k][p], akq = a[k][q];
        a[k][p] = c * akp - s * akq; a[k][q] = s * akp + c * akq;
      }
      for (let k = 0; k < 3; k++) {
        const apk = a[p][k], aqk = a[q][k];
        a[p][k] = c * apk - s * aqk; a[q][k] = s * apk + c * aqk;
      }
      for (let k = 0; k < 3; k++) {
        const vkp = v[k][p], vkq = v[k][q];
        v[k][p] = c * vkp - s * vkq; v[k][q] = s * vkp + c * vkq;
      }
    }
  }
  const order = [0, 1, 2].sort((i, j) => a[j][j] - a[i][i]);
  const rows = order.map(i => [v[0][i], v[1][i], v[2][i]]);
  const r = rows, det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
    + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
  if (det < 0) rows[2] = rows[2].map(x => -x);  /* a rotation, not a reflection: the molecule keeps its hand */
  return rows;
}

function matMul(a, b) {
  const out = [[0, 0, 0], [0, 0, 0], [0, 0, 0]];
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) out[i][j] = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
  return out;
}

class MolViewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.mol = null;
    this.showH = true;
    this.zoom = 1;
    this.rot = [[1, 0, 0], [0, 1, 0], [0, 0, 1]];
    let drag = null;
    canvas.addEventListener("pointerdown", e => {
      drag = { x: e.clientX, y: e.clientY };
      try { canvas.setPointerCapture(e.pointerId); } catch (err) { /* a synthetic pointer: no capture */ }
    });
    canvas.addEventListener("pointermove", e => {
      if (!drag) return;
      this.rotate(e.clientX - drag.x, e.clientY - drag.y);
      drag = { x: e.clientX, y: e.clientY };
    });
    const stop = () => { drag = null; };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
    canvas.addEventListener("wheel", e => {
      e.preventDefault();
      this.zoom = Math.min(8, Math.max(0.2, this.zoom * Math.exp(-e.deltaY / 500)));
      this.draw();
    }, { passive: false });
    canvas.addEventListener("dblclick", () => this.reset());
    window.addEventListener("resize", () => this.draw());
  }

  load(mol) {
    /* mol: {symbols: [n], pos: [[x, y, z]] Å, bonds: [[i, j, order]], charges: [n]} */
    this.mol = mol;
    this.reset();
  }

  reset() {
    this.zoom = 1;
    this.rot = this.mol && this.mol.pos.length > 2 ? principalAxes(this.mol.pos) : [[1, 0, 0], [0, 1, 0], [0, 0, 1]];
    this.draw();
  }

  rotate(dx, dy) {
    const ay = dx * 0.01, ax = dy * 0.01;
    const ry = [[Math.cos(ay), 0, Math.sin(ay)], [0, 1, 0], [-Math.sin(ay), 0, Math.cos(ay)]];
    const rx = [[1, 0, 0], [0, Math.cos(ax), -Math.sin(ax)], [0, Math.sin(ax), Math.cos(ax)]];
    this.rot = matMul(rx, matMul(ry, this.rot));
    this.draw();
  }

  draw() {
    const canvas = this.canvas, ctx = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, w, h);
    const mol = this.mol;
    if (!mol || !mol.pos.length) return;
    const visible = mol.symbols.map(s => this.showH || s !== "H");
    let radius = 0.5;
    for (const p of mol.pos) radius = Math.max(radius, Math.hypot(p[0], p[1], p[2]));
    const scale = this.zoom * Math.min(w, h) / (2 * (radius + 1.0));
    const depth = 4 * radius + 8;  /* camera distance (Å): a mild perspective */
    const r = this.rot;
    const proj = mol.pos.map(p => {
      const x = r[0][0] * p[0] + r[0][1] * p[1] + r[0][2] * p[2];
      const y = r[1][0] * p[0] + r[1][1] * p[1] + r[1][2] * p[2];
      const z = r[2][0] * p[0] + r[2][1] * p[1] + r[2][2] * p[2];
      const f = depth / (depth - z);
      return { x: w / 2 + scale * f * x, y: h / 2 - scale * f * y, z: z, f: f, x3: x, y3: y };
    });
    const items = [];
    mol.symbols.forEach((s, i) => { if (visible[i]) items.push({ z: proj[i].z, atom: i }); });
    for (const [i, j, order] of mol.bonds) {
      if (!visible[i] || !visible[j]) continue;
      items.push({ z: (3 * proj[i].z + proj[j].z) / 4, from: i, to: j, order: order });
      items.push({ z: (3 * proj[j].z + proj[i].z) / 4, from: j, to: i, order: order });
    }
    items.sort((a, b) => a.z - b.z);
    for (const item of items) {
      if (item.atom !== undefined) this.drawAtom(ctx, proj[item.atom], mol.symbols[item.atom], mol.charges[item.atom], scale);
      else this.drawHalfBond(ctx, proj[item.from], proj[item.to], mol.symbols[item.from], item.order, scale);
    }
  }

  drawAtom(ctx, p, symbol, charge, scale) {
    const rad = (BALL_RADIUS[symbol] || 0.32) * scale * p.f;
    const base = ATOM_COLORS[symbol] || "#ff1493";
    const g = ctx.createRadialGradient(p.x - rad * 0.35, p.y - rad * 0.35, rad * 0.1, p.x, p.y, rad);
    g.addColorStop(0, shade(base, 0.7));
    g.addColorStop(0.6, base);
    g.addColorStop(1, shade(base, -0.35));
    ctx.beginPath();
    ctx.arc(p.x, p.y, rad, 0, 2 * Math.PI);
    ctx.fillStyle = g;
    ctx.fill();
    ctx.lineWidth = 0.8;
    ctx.strokeStyle = "rgba(0,0,0,0.35)";
    ctx.stroke();
    if (charge) {
      const text = (Math.abs(charge) > 1 ? Math.abs(charge) : "") + (charge > 0 ? "+" : "\u2212");
      ctx.font = "bold " + Math.max(10, Math.round(rad * 0.9)) + "px sans-serif";
      ctx.fillStyle = "#111";
      ctx.textAlign = "left";
      ctx.textBaseline = "bottom";
      ctx.fillText(text, p.x + rad * 0.6, p.y - rad * 0.5);
    }
  }

  drawHalfBond(ctx, a, b, symbol, order, scale) {
    /* From atom a to the middle of bond a-b, in a's colour; multiple bonds as parallel sticks. */
    const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
    const dx = mx - a.x, dy = my - a.y, len = Math.hypot(dx, dy);
    const nx = len > 1e-6 ? -dy / len : 0, ny = len > 1e-6 ? dx / len : 0;
    const f = (a.f + b.f) / 2;
    const lines = order === 2 || order === 4 ? [-0.5, 0.5] : order === 3 ? [-1, 0, 1] : [0];
    const gap = 0.15 * scale * f;
    const width = (lines.length === 1 ? 0.18 : 0.1) * scale * f;
    const base = ATOM_COLORS[symbol] || "#ff1493";
    ctx.lineCap = "butt";
    lines.forEach((k, n) => {
      const ox = nx * gap * k, oy = ny * gap * k;
      ctx.setLineDash(order === 4 && n === 1 ? [width * 1.2, width * 1.2] : []);
      ctx.beginPath();
      ctx.moveTo(a.x + ox, a.y + oy);
      ctx.lineTo(mx + ox, my + oy);
      ctx.strokeStyle = "rgba(0,0,0,0.45)";
      ctx.lineWidth = width + 1.2;
      ctx.stroke();
      ctx.strokeStyle = shade(base, symbol === "H" ? -0.08 : 0.1);
      ctx.lineWidth = width;
      ctx.stroke();
    });
    ctx.setLineDash([]);
  }
}
