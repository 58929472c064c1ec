package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// lastFrame is the layer lines of the last drawing in a terminal view's output (what follows the last move of
// the cursor up), without their line clearing.
func lastFrame(out string) []string {
	if m := cursorUp.FindAllStringIndex(out, -1); m != nil {
		out = out[m[len(m)-1][1]:]
	}
	var lines []string
	for _, l := range strings.SplitAfter(out, "\n") {
		if l != "" {
			lines = append(lines, strings.TrimSuffix(strings.TrimPrefix(l, "\r\x1b[2K"), "\n"))
		}
	}
	return lines
}

var cursorUp = regexp.MustCompile(`\x1b\[[0-9]+A`)

// One layer's bar on a terminal of a given width: a bar only where there is room for one (at least 10 columns
// of it) and the size is known, full when every byte came, and the line never as wide as the terminal.
func TestPullViewBar(t *testing.T) {
	const digest = "sha256:aaaaaaaaaaaaaaaa"
	tests := []struct {
		name  string
		width int
		line  pullLine
		want  string
	}{
		{name: "narrowest terminal with a bar", width: 53, line: pullLine{Fetched: 500, Size: 1000},
			want: "aaaaaaaaaaaa  [=====>    ]  500 B / 1000 B"},
		{name: "one column short of a bar", width: 52, line: pullLine{Fetched: 500, Size: 1000},
			want: "aaaaaaaaaaaa  500 B / 1000 B"},
		{name: "wide terminal: 40 columns at most", width: 200, line: pullLine{Fetched: 250, Size: 1000},
			want: "aaaaaaaaaaaa  [==========>                             ]  250 B / 1000 B"},
		{name: "every byte fetched, not yet done", width: 53, line: pullLine{Fetched: 1000, Size: 1000},
			want: "aaaaaaaaaaaa  [==========]  1000 B / 1000 B"},
		{name: "more than the size", width: 53, line: pullLine{Fetched: 2000, Size: 1000},
			want: "aaaaaaaaaaaa  [==========]  2.0 KiB / 1000 B"},
		{name: "size unknown", width: 80, line: pullLine{Fetched: 2048},
			want: "aaaaaaaaaaaa  2.0 KiB"},
		{name: "done", width: 80, line: pullLine{Fetched: 2048, Size: 2048, Done: true},
			want: "aaaaaaaaaaaa  done 2.0 KiB"},
		{name: "cut to the terminal", width: 20, line: pullLine{Fetched: 500, Size: 1000},
			want: "aaaaaaaaaaaa  500 B"},
		{name: "as wide as the terminal: cut by one", width: 28, line: pullLine{Fetched: 500, Size: 1000},
			want: "aaaaaaaaaaaa  500 B / 1000 "},
		{name: "one column short of the terminal: whole", width: 29, line: pullLine{Fetched: 500, Size: 1000},
			want: "aaaaaaaaaaaa  500 B / 1000 B"},
		{name: "a terminal of one column: not cut to nothing", width: 1, line: pullLine{Fetched: 500, Size: 1000},
			want: "aaaaaaaaaaaa  500 B / 1000 B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			v := newPullView(&out, tt.width)
			l := tt.line
			l.Status, l.Layer, l.Layers = "pulling", digest, 1
			v.update(l)
			v.finish()
			lines := lastFrame(out.String())
			if len(lines) != 1 || lines[0] != tt.want {
				t.Errorf("got %q, want %q", lines, tt.want)
			}
		})
	}
}

// On a terminal the bars are in the image's order whatever order the daemon announces the layers in; the first
// progress is drawn at once, and the first drawing does not move the cursor up over what was there before it.
func TestPullViewTerminalOrder(t *testing.T) {
	// 80 columns leave 37 for the bar: 80 - 12 (the digest) - 23 (the longest tail) - 8 (the blanks and brackets).
	bar37 := ">" + strings.Repeat(" ", 36)
	var out bytes.Buffer
	v := newPullView(&out, 80)
	v.update(pullLine{Status: "pulling", Layer: "sha256:cccccccccccccccc", Index: 2, Layers: 3, Size: 10})
	if first := out.String(); first != "\r\x1b[2Kcccccccccccc  ["+bar37+"]  0 B / 10 B\n" {
		t.Fatalf("first drawing %q", first)
	}
	v.update(pullLine{Status: "pulling", Layer: "sha256:aaaaaaaaaaaaaaaa", Index: 0, Layers: 3, Size: 10, Done: true})
	v.update(pullLine{Status: "pulling", Layer: "sha256:bbbbbbbbbbbbbbbb", Index: 1, Layers: 3, Size: 10, Done: true})
	v.finish()
	lines := lastFrame(out.String())
	want := []string{"aaaaaaaaaaaa  already in the store", "bbbbbbbbbbbb  already in the store",
		"cccccccccccc  [" + bar37 + "]  0 B / 10 B"}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("last frame %q, want %q (all output %q)", lines, want, out.String())
	}
}

// Not on a terminal (a log, a pipe): plain lines, never a control sequence.
func TestPullViewPlain(t *testing.T) {
	var out bytes.Buffer
	v := newPullView(&out, 0)
	v.update(pullLine{Status: "pulling", Layer: "sha256:bbbbbbbbbbbbbbbb", Index: 1, Layers: 2, Size: 10})
	v.update(pullLine{Status: "pulling", Layer: "sha256:aaaaaaaaaaaaaaaa", Index: 0, Layers: 2})
	v.update(pullLine{Status: "pulling", Layer: "sha256:aaaaaaaaaaaaaaaa", Index: 0, Layers: 2, Fetched: 3 << 20, Done: true})
	v.update(pullLine{Status: "pulling", Layer: "sha256:bbbbbbbbbbbbbbbb", Index: 1, Layers: 2, Size: 10, Done: true})
	v.finish()
	want := "bbbbbbbbbbbb: layer 2 of 2, 10 B\naaaaaaaaaaaa: layer 1 of 2, size unknown\n" +
		"aaaaaaaaaaaa: done, 3.0 MiB\nbbbbbbbbbbbb: already in the store\n"
	if out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
}
