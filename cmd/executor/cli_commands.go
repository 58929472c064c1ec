package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Time limits of the commands that wait for one answer. A log stream and a pull have none of their own: they
// last as long as the daemon streams, and Ctrl-C ends them.
const (
	listTimeout   = 30 * time.Second
	removeTimeout = 5 * time.Minute // a runtime is stopped (SIGTERM, grace, SIGKILL) before it is gone
)

// runtimeInfo is what runtimes shows of GET /v1/runtimes' objects.
type runtimeInfo struct {
	Name    string  `json:"name"`
	Status  string  `json:"status"`
	Image   string  `json:"image"`
	Created float64 `json:"created"` // Unix seconds
}

func (c *cli) runtimes(ctx context.Context, inv *invocation) int {
	a, err := c.client(inv)
	if err != nil {
		return c.fail(ctx, err)
	}
	lctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	var list []runtimeInfo
	if err := a.getJSON(lctx, "/v1/runtimes", &list); err != nil {
		return c.fail(ctx, err)
	}
	slices.SortStableFunc(list, func(x, y runtimeInfo) int {
		if x.Created != y.Created {
			return cmpFloat(x.Created, y.Created)
		}
		return strings.Compare(x.Name, y.Name)
	})
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tIMAGE\tCREATED")
	for _, r := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.runtimeID(r.Name), oneLine(r.Status), oneLine(r.Image), created(r.Created))
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintf(c.stderr, "executor: %v\n", err)
		return exitAPIError
	}
	return exitOK
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// runtimeID is the id a runtime was created with: its name without this host's name. A name of another
// host's daemon is shown whole.
func (c *cli) runtimeID(name string) string {
	if c.hostname != "" {
		if id, ok := strings.CutPrefix(name, c.hostname+"-"); ok && id != "" {
			return oneLine(id)
		}
	}
	return oneLine(name)
}

// oneLine keeps a value the daemon sent from breaking the table or writing control sequences to a terminal.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

// created is a runtime's creation time, on this host's clock.
func created(unix float64) string {
	if unix <= 0 || math.IsNaN(unix) || math.IsInf(unix, 0) {
		return "-"
	}
	sec, frac := math.Modf(unix)
	return time.Unix(int64(sec), int64(frac*1e9)).Local().Format("2006-01-02 15:04:05")
}

func (c *cli) rm(ctx context.Context, inv *invocation) int {
	a, err := c.client(inv)
	if err != nil {
		return c.fail(ctx, err)
	}
	code := exitOK
	for _, id := range inv.args {
		rctx, cancel := context.WithTimeout(ctx, removeTimeout)
		resp, err := a.do(rctx, http.MethodDelete, "/v1/runtimes/"+url.PathEscape(id), nil, nil, "application/json")
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		if err != nil {
			var unreachable *unreachableError
			if _, stopped := interrupted(ctx); stopped || errors.As(err, &unreachable) {
				// The others would fail the same way.
				return c.fail(ctx, err)
			}
			fmt.Fprintf(c.stderr, "executor: %s: %v\n", oneLine(id), err)
			code = exitAPIError
			continue
		}
		fmt.Fprintln(c.stdout, oneLine(id))
	}
	return code
}

// v5Timestamp is the layout of the time that starts each line of a v5 runtime's log stream.
const v5Timestamp = "2006-01-02T15:04:05.000-07:00"

func (c *cli) logs(ctx context.Context, inv *invocation) int {
	a, err := c.client(inv)
	if err != nil {
		return c.fail(ctx, err)
	}
	id := inv.args[0]
	query := url.Values{"timeout": {strconv.Itoa(inv.timeout)}}
	resp, err := a.do(ctx, http.MethodGet, "/v1/runtimes/"+url.PathEscape(id)+"/logs", query, nil, "text/event-stream")
	if err != nil {
		return c.fail(ctx, err)
	}
	defer resp.Body.Close()
	if err := c.copyLogs(resp.Body, inv.timestamps); err != nil {
		if code, ok := interrupted(ctx); ok {
			return code
		}
		return c.fail(ctx, a.lost(err))
	}
	return exitOK
}

// copyLogs writes the log stream to stdout. A v5 runtime's stream is lines of "<time> <content>", newlines in
// the content written as \n: the content is written as the runtime wrote it, after its time with timestamps.
// Older runtimes stream their raw output, written as it comes. Which one it is shows in the first line.
func (c *cli) copyLogs(body io.Reader, timestamps bool) error {
	br := bufio.NewReaderSize(body, 64<<10)
	timestamped, decided := false, false
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			if !decided {
				ts, _, ok := strings.Cut(line, " ")
				_, perr := time.Parse(v5Timestamp, ts)
				timestamped, decided = ok && perr == nil, true
			}
			if timestamped {
				line = logLine(line, timestamps)
			}
			if _, werr := io.WriteString(c.stdout, line); werr != nil {
				return nil // stdout closed (| head): nothing more to show
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// logLine is one v5 stream line as it is shown.
func logLine(line string, timestamps bool) string {
	ts, content, ok := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
	if !ok {
		return line
	}
	content = strings.ReplaceAll(content, `\n`, "\n")
	if !timestamps {
		return content
	}
	// One time per entry; an entry's lines stay together.
	if !strings.HasSuffix(content, "\n") {
		content += "\n"
	}
	return ts + " " + content
}

// healthInfo is GET /v1/health's answer; usage and runtimes only come with the key.
type healthInfo struct {
	Status   string   `json:"status"`
	Usage    *float64 `json:"usage"`
	Runtimes map[string]struct {
		Usage float64 `json:"usage"`
	} `json:"runtimes"`
}

func (c *cli) health(ctx context.Context, inv *invocation) int {
	a, err := c.client(inv)
	if err != nil {
		return c.fail(ctx, err)
	}
	hctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	var h healthInfo
	if err := a.getJSON(hctx, "/v1/health", &h); err != nil {
		return c.fail(ctx, err)
	}
	if h.Status != "pass" {
		fmt.Fprintf(c.stderr, "executor: the daemon at %s reports %q\n", a.base, oneLine(h.Status))
		return exitAPIError
	}
	fmt.Fprintln(c.stdout, "ok")
	if h.Usage != nil {
		fmt.Fprintf(c.stdout, "cpu: %.1f%% of the host, %d runtimes\n", *h.Usage, len(h.Runtimes))
	}
	return exitOK
}
