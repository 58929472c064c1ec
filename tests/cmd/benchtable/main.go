// Command benchtable reads the output of `go test -bench` (plain or -json)
// on stdin and prints one table: each figure issue 16 sets a target for,
// beside its baseline from the same run, the ratio, n, p50, p90 and p99 of
// both, the target and whether it is met; then every other figure the
// benchmarks reported. make bench pipes its runs through it.
//
// A figure is a benchmark's <name>-n, <name>-p50-ms, <name>-p90-ms and
// <name>-p99-ms metrics (tests/cmd/benchtable/samples reports them); a
// single value is any other metric (req/s, MB, threads). It exits 1 when the
// input holds no benchmark result at all, 0 otherwise: a target missed is a
// figure, not a failure.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

func main() {
	res, err := parse(os.Stdin)
	if err == nil && len(res.order) == 0 {
		err = errors.New("no benchmark results in the input")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	if err := render(os.Stdout, res); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

// testEvent is the part of a `go test -json` event the table needs.
type testEvent struct {
	Action  string
	Package string
	Output  string
}

// parse reads plain or -json `go test -bench` output. With -json, the
// output events of each package are joined back into that package's text
// first: go test may split one result line over several events.
func parse(r io.Reader) (*results, error) {
	br := bufio.NewReader(r)
	first, err := br.Peek(1)
	if err != nil && err != io.EOF {
		return nil, err
	}
	res := newResults()
	if len(first) == 0 || first[0] != '{' {
		return res, res.readText(br)
	}
	var pkgs []string
	texts := map[string]*bytes.Buffer{}
	dec := json.NewDecoder(br)
	for {
		var ev testEvent
		if err := dec.Decode(&ev); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("reading go test -json output: %w", err)
		}
		if ev.Action != "output" {
			continue
		}
		buf, ok := texts[ev.Package]
		if !ok {
			buf = &bytes.Buffer{}
			texts[ev.Package] = buf
			pkgs = append(pkgs, ev.Package)
		}
		buf.WriteString(ev.Output)
	}
	for _, p := range pkgs {
		if err := res.readText(texts[p]); err != nil {
			return nil, err
		}
	}
	return res, nil
}
