package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// pullLine is a line of POST /v1/images' progress stream (api.pullJSON).
type pullLine struct {
	Status  string `json:"status"`
	Layer   string `json:"layer"`
	Index   int    `json:"index"`
	Layers  int    `json:"layers"`
	Fetched int64  `json:"fetched"`
	Size    int64  `json:"size"`
	Done    bool   `json:"done"`
	Image   string `json:"image"`
	Digest  string `json:"digest"`
	Error   *struct {
		Type    string `json:"type"`
		Message string `json:"message"`
		Code    int    `json:"code"`
	} `json:"error"`
}

// maxPullLine bounds one line of the stream: a line is a few hundred bytes.
const maxPullLine = 1 << 20

func (c *cli) pull(ctx context.Context, inv *invocation) int {
	a, err := c.client(inv)
	if err != nil {
		return c.fail(ctx, err)
	}
	ref := inv.args[0]
	resp, err := a.do(ctx, http.MethodPost, "/v1/images", nil, map[string]string{"image": ref}, "application/x-ndjson")
	if err != nil {
		return c.fail(ctx, err)
	}
	defer resp.Body.Close()
	view := newPullView(c.stdout, c.terminalWidth)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), maxPullLine)
	for sc.Scan() {
		var l pullLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			view.finish()
			return c.fail(ctx, fmt.Errorf("the daemon's progress could not be read: %w", err))
		}
		switch l.Status {
		case "pulling":
			view.update(l)
		case "pulled":
			view.finish()
			fmt.Fprintf(c.stdout, "pulled %s (%s, %d layers)\n", oneLine(ref), oneLine(l.Digest), l.Layers)
			return exitOK
		case "error":
			view.finish()
			if l.Error == nil {
				return c.fail(ctx, &daemonError{status: http.StatusInternalServerError})
			}
			return c.fail(ctx, &daemonError{status: l.Error.Code, typ: l.Error.Type, message: l.Error.Message})
		}
	}
	view.finish()
	if code, ok := interrupted(ctx); ok {
		return code
	}
	err = sc.Err()
	if err == nil {
		err = io.ErrUnexpectedEOF // the stream ended without its result
	}
	return c.fail(ctx, a.lost(err))
}

// pullView shows a pull's progress: a bar per layer, redrawn in place, on a terminal; elsewhere (a log, a
// pipe) plain lines: each layer when it is announced, its bytes at most every plainInterval, and its end.
type pullView struct {
	w      io.Writer
	width  int // of the terminal; 0 when w is not one
	layers []*layerState
	drawn  int // lines of the last drawing
	last   time.Time
}

type layerState struct {
	pullLine
	printed time.Time // plain: when its bytes were last written
}

const (
	redrawInterval = 100 * time.Millisecond
	plainInterval  = time.Second
)

func newPullView(w io.Writer, width int) *pullView { return &pullView{w: w, width: width} }

func (v *pullView) update(l pullLine) {
	var s *layerState
	for _, x := range v.layers {
		if x.Index == l.Index {
			s = x
		}
	}
	fresh := s == nil
	if fresh {
		s = &layerState{}
		v.layers = append(v.layers, s)
		// By position in the image, as the bars are drawn.
		for i := len(v.layers) - 1; i > 0 && v.layers[i-1].Index > l.Index; i-- {
			v.layers[i-1], v.layers[i] = v.layers[i], v.layers[i-1]
		}
	}
	wasDone := s.Done
	s.pullLine = l
	if v.width > 0 {
		if time.Since(v.last) >= redrawInterval || (l.Done && !wasDone) {
			v.draw()
		}
		return
	}
	switch {
	case l.Done && !wasDone:
		if l.Fetched == 0 {
			fmt.Fprintf(v.w, "%s: already in the store\n", shortDigest(l.Layer))
		} else {
			fmt.Fprintf(v.w, "%s: done, %s\n", shortDigest(l.Layer), bytesText(l.Fetched))
		}
	case fresh:
		fmt.Fprintf(v.w, "%s: layer %d of %d, %s\n", shortDigest(l.Layer), l.Index+1, l.Layers, sizeText(l.Size))
		s.printed = time.Now()
	case !l.Done && time.Since(s.printed) >= plainInterval:
		fmt.Fprintf(v.w, "%s: %s\n", shortDigest(l.Layer), fetchedText(l.Fetched, l.Size))
		s.printed = time.Now()
	}
}

// finish draws the last state, so that a terminal shows where every layer ended.
func (v *pullView) finish() {
	if v.width > 0 && len(v.layers) > 0 {
		v.draw()
	}
}

// draw writes every layer's line over the last drawing.
func (v *pullView) draw() {
	var b strings.Builder
	if v.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", v.drawn)
	}
	for _, s := range v.layers {
		b.WriteString("\r\x1b[2K")
		b.WriteString(v.barLine(s.pullLine))
		b.WriteByte('\n')
	}
	v.drawn = len(v.layers)
	v.last = time.Now()
	_, _ = io.WriteString(v.w, b.String())
}

// barLine is "<digest>  [=====>    ]  1.2 MiB / 3.4 MiB", cut to the terminal's width: a line that wraps
// would throw the redrawing off.
func (v *pullView) barLine(l pullLine) string {
	head := shortDigest(l.Layer)
	var tail string
	switch {
	case l.Done && l.Fetched == 0:
		tail = "already in the store"
	case l.Done:
		tail = "done " + bytesText(l.Fetched)
	default:
		tail = fetchedText(l.Fetched, l.Size)
	}
	line := head + "  " + tail
	// The same width for every layer's bar, so that the bars line up: room is kept for the longest tail
	// ("1023.9 MiB / 1023.9 MiB").
	if barWidth := v.width - len(head) - 23 - 8; barWidth >= 10 && !l.Done && l.Size > 0 {
		barWidth = min(barWidth, 40)
		filled := int(float64(barWidth) * float64(min(l.Fetched, l.Size)) / float64(l.Size))
		bar := strings.Repeat("=", filled)
		if filled < barWidth {
			bar += ">" + strings.Repeat(" ", barWidth-filled-1)
		}
		line = head + "  [" + bar + "]  " + tail
	}
	if v.width > 1 && len(line) > v.width-1 {
		line = line[:v.width-1]
	}
	return line
}

// shortDigest is the first 12 hex digits of a digest, as image tools show layers.
func shortDigest(d string) string {
	_, hex, ok := strings.Cut(d, ":")
	if !ok {
		hex = d
	}
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return oneLine(hex)
}

func fetchedText(fetched, size int64) string {
	if size > 0 {
		return bytesText(fetched) + " / " + bytesText(size)
	}
	return bytesText(fetched)
}

func sizeText(size int64) string {
	if size > 0 {
		return bytesText(size)
	}
	return "size unknown"
}

// bytesText is n in B, KiB, MiB or GiB.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB"} {
		f /= unit
		if f < unit || u == "GiB" {
			return fmt.Sprintf("%.1f %s", f, u)
		}
	}
	return ""
}
