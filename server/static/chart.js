// A per-step line chart of each objective's reward on a <canvas>: no chart library, so nothing to
// download. Each run keeps its own RewardSeries; the chart draws whichever series it is shown.
// Steps run along x (0..steps), the rewards' own range along y.

const COLORS = ["#e4572e", "#17bebb", "#ffc914", "#76b041", "#8e6dd8", "#2e86de"];

// The per-step rewards of one run.
export class RewardSeries {
  constructor() {
    this.steps = 1;
    this.byObjective = new Map(); // objective -> [[step, reward], ...]
  }

  add(step, steps, rewards) {
    this.steps = steps;
    for (const [name, value] of Object.entries(rewards || {})) {
      if (!this.byObjective.has(name)) this.byObjective.set(name, []);
      this.byObjective.get(name).push([step, value]);
    }
  }

  get points() {
    let n = 0;
    for (const values of this.byObjective.values()) n += values.length;
    return n;
  }
}

export class RewardChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.show(new RewardSeries());
  }

  show(series) {
    this.series = series;
    this.draw();
  }

  // Points drawn, over all objectives (the browser test reads it).
  get points() {
    return this.series.points;
  }

  draw() {
    const { canvas } = this;
    const { steps, byObjective } = this.series;
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, pad = 32;
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = "#888";
    ctx.fillStyle = "#888";
    ctx.font = "11px sans-serif";
    ctx.strokeRect(pad, 8, w - pad - 8, h - pad - 8);
    const all = [...byObjective.values()].flat().map(([, v]) => v);
    if (!all.length) {
      ctx.fillText("per-step rewards appear here while guidance evaluates them", pad + 8, h / 2);
      return;
    }
    let lo = Math.min(...all), hi = Math.max(...all);
    if (hi - lo < 1e-6) { lo -= 0.5; hi += 0.5; }
    const x = (step) => pad + (w - pad - 8) * (step / Math.max(steps, 1));
    const y = (v) => 8 + (h - pad - 8) * (1 - (v - lo) / (hi - lo));
    ctx.fillText(hi.toFixed(2), 2, 16);
    ctx.fillText(lo.toFixed(2), 2, h - pad);
    ctx.fillText(`step (of ${steps})`, w / 2 - 30, h - 8);
    let i = 0, labelX = pad + 8;
    for (const [name, values] of byObjective) {
      const color = COLORS[i % COLORS.length];
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.beginPath();
      values.forEach(([step, v], j) => (j ? ctx.lineTo(x(step), y(v)) : ctx.moveTo(x(step), y(v))));
      ctx.stroke();
      for (const [step, v] of values) ctx.fillRect(x(step) - 1.5, y(v) - 1.5, 3, 3);
      ctx.fillText(name, labelX, 22);
      labelX += ctx.measureText(name).width + 12;
      i += 1;
    }
  }
}
