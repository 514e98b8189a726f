package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
)

// chartMetrics are the panels of the chart, in reading order.
var chartMetrics = []string{MetricTCP1, MetricTCP4, MetricUDPLoss, MetricLatP50, MetricLatP99, MetricCPU}

// pathColors tell the paths apart in every panel; unknown paths get grey.
var pathColors = map[string]string{
	PathRaw:     "#6b7280",
	PathLinuxBr: "#7c3aed",
	PathBridged: "#059669",
	PathRouted:  "#2563eb",
	PathNAT:     "#d97706",
	PathForward: "#dc2626",
}

// Chart geometry, in SVG user units (pixels at 100%).
const (
	chartCols   = 3
	panelW      = 340
	panelH      = 250
	chartTop    = 64 // room for the title
	chartBottom = 48 // room for the footer
	plotLeft    = 52 // inside a panel: room for the y labels
	plotRight   = 14
	plotTop     = 40 // room for the panel title
	plotBottom  = 34 // room for the path names
)

// WriteSVG draws the report as a bar chart: one panel per metric, one bar
// per path at its median, with an error bar from min to max over the
// rounds and the median written above it.
func (r *NetReport) WriteSVG(w io.Writer) error {
	rows := (len(chartMetrics) + chartCols - 1) / chartCols
	width := chartCols * panelW
	height := chartTop + rows*panelH + chartBottom
	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, "<title>%s</title>\n", esc("kvmnet bench: "+strings.Join(pathNames(r), ", ")))
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	s := r.Settings
	text(&b, 16, 28, 18, "start", "bold", "#111827", "kvmnet bench: the cost of each path, on this machine")
	text(&b, 16, 48, 12, "start", "normal", "#4b5563", fmt.Sprintf("%s, %d CPU(s); %d round(s) of %s; UDP offered at %s; %d extra port(s)",
		r.Env.Kernel, r.Env.CPUs, s.Rounds, s.Duration, FormatRate(s.UDPRate), s.Ports))
	for i, key := range chartMetrics {
		x := (i % chartCols) * panelW
		y := chartTop + (i/chartCols)*panelH
		r.panel(&b, key, x, y)
	}
	text(&b, 16, float64(height-18), 11, "start", "normal", "#4b5563",
		"bars: median over the rounds; whiskers: min to max. CPU: sys+softirq share of the whole machine (/proc/stat) during the UDP run.")
	b.WriteString("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// panel draws one metric's bars with its axis in the panel at (x0, y0).
func (r *NetReport) panel(b *bytes.Buffer, key string, x0, y0 int) {
	m, _ := Metric(key)
	fmt.Fprintf(b, `<g class="panel" data-metric="%s">`+"\n", esc(key))
	text(b, float64(x0+plotLeft), float64(y0+22), 13, "start", "bold", "#111827", fmt.Sprintf("%s (%s)", m.Title, m.Unit))
	dir := "lower is better"
	if m.Higher {
		dir = "higher is better"
	}
	text(b, float64(x0+panelW-plotRight), float64(y0+22), 10, "end", "normal", "#6b7280", dir)

	left, right := float64(x0+plotLeft), float64(x0+panelW-plotRight)
	top, bottom := float64(y0+plotTop), float64(y0+panelH-plotBottom)
	top += 8 // room for the value over the tallest bar

	// The axis runs from 0 to a round number above the largest whisker.
	hi := 0.0
	for _, p := range r.Paths {
		if s := p.Get(key); s.Valid() {
			hi = math.Max(hi, s.Max/m.Scale)
		}
	}
	step, axisMax := niceAxis(hi)
	yOf := func(v float64) float64 { return bottom - (v/axisMax)*(bottom-top) }
	for v := 0.0; v <= axisMax*1.0001; v += step {
		y := yOf(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e7eb" stroke-width="1"/>`+"\n", left, y, right, y)
		text(b, left-6, y+4, 10, "end", "normal", "#6b7280", formatTick(v, step))
	}
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#9ca3af" stroke-width="1"/>`+"\n", left, bottom, right, bottom)

	n := len(r.Paths)
	if n == 0 {
		b.WriteString("</g>\n")
		return
	}
	slot := (right - left) / float64(n)
	barW := math.Min(slot*0.6, 56)
	for i, p := range r.Paths {
		cx := left + slot*(float64(i)+0.5)
		text(b, cx, bottom+16, 11, "middle", "normal", "#111827", p.Name)
		s := p.Get(key)
		if !s.Valid() {
			text(b, cx, bottom-6, 10, "middle", "normal", "#6b7280", "n/a")
			continue
		}
		color := pathColors[p.Name]
		if color == "" {
			color = "#9ca3af"
		}
		med, lo, hiV := s.Median/m.Scale, s.Min/m.Scale, s.Max/m.Scale
		fmt.Fprintf(b, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`+"\n",
			cx-barW/2, yOf(med), barW, bottom-yOf(med), color,
			esc(fmt.Sprintf("%s %s: %s %s", p.Name, m.Title, m.FormatSummary(s), m.Unit)))
		if s.N > 1 && hiV > lo {
			capW := barW / 4
			fmt.Fprintf(b, `<path class="whisker" d="M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fH%.1f" stroke="#111827" stroke-width="1.5" fill="none"/>`+"\n",
				cx, yOf(lo), yOf(hiV), cx-capW, yOf(lo), cx+capW, cx-capW, yOf(hiV), cx+capW)
		}
		text(b, cx, math.Min(yOf(med), yOf(hiV))-5, 10, "middle", "normal", "#111827", m.Format(s.Median))
	}
	b.WriteString("</g>\n")
}

// niceAxis returns a tick step of 1, 2 or 5 times a power of ten and the
// axis top, a multiple of the step: the smallest step that covers hi (with
// 5% room for the labels) in at most 6 ticks.
func niceAxis(hi float64) (step, top float64) {
	if hi <= 0 || math.IsNaN(hi) || math.IsInf(hi, 0) {
		return 1, 1
	}
	want := hi * 1.05
	pow := math.Pow(10, math.Floor(math.Log10(want/6)))
	for _, f := range []float64{1, 2, 5, 10, 20, 50} {
		step = f * pow
		if n := math.Ceil(want / step); n <= 6 {
			return step, n * step
		}
	}
	return step, math.Ceil(want/step) * step
}

// formatTick prints a tick value with the decimals its step needs.
func formatTick(v, step float64) string {
	d := 0
	if step < 1 {
		d = int(math.Ceil(-math.Log10(step)))
	}
	return fmt.Sprintf("%.*f", d, v)
}

// text writes one <text> element with s escaped.
func text(b *bytes.Buffer, x, y float64, size int, anchor, weight, color, s string) {
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="%d" text-anchor="%s" font-weight="%s" fill="%s">%s</text>`+"\n",
		x, y, size, anchor, weight, color, esc(s))
}

// esc escapes s for XML text and attribute values.
func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
