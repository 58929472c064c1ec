package protocol

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeLogs is a log directory in memory.
type fakeLogs struct {
	files  map[string]string
	refuse map[string]error // Take's error for these names
	taken  []string
}

func (f *fakeLogs) Take(name string, limit int64) ([]byte, int64, error) {
	f.taken = append(f.taken, name)
	if err := f.refuse[name]; err != nil {
		return nil, 0, err
	}
	s, ok := f.files[name]
	if !ok {
		return nil, 0, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	delete(f.files, name)
	data := []byte(s)
	if int64(len(data)) > limit {
		data = data[:limit]
	}
	return data, int64(len(s)), nil
}

func TestExecuteLogFiles(t *testing.T) {
	big := strings.Repeat("x", MaxLogFile+10)
	exact := strings.Repeat("y", MaxLogFile)
	errLink := errors.New("safefs: path goes through a symbolic link")
	tests := []struct {
		name    string
		v       Version
		logID   string // the header's value; "-" sends none
		files   map[string]string
		refuse  map[string]error
		noFiles bool // Target.Logs is nil
		// expectations
		logs, errs string
		read       []string
		warning    string
	}{
		{
			name: "both files", v: V4, logID: "abc",
			files: map[string]string{"abc_logs.log": "hello\n", "abc_errors.log": "boom\n", "other_logs.log": "no"},
			logs:  "hello\n", errs: "boom\n", read: []string{"abc_logs.log", "abc_errors.log"},
		},
		{
			name: "url-encoded id", v: V5, logID: "ab%2Dc_9",
			files: map[string]string{"ab-c_9_logs.log": "l"},
			logs:  "l", read: []string{"ab-c_9_logs.log", "ab-c_9_errors.log"},
		},
		{name: "missing files", v: V5, logID: "abc", read: []string{"abc_logs.log", "abc_errors.log"}},
		{
			name: "refused file", v: V4, logID: "abc",
			files:  map[string]string{"abc_errors.log": "e"},
			refuse: map[string]error{"abc_logs.log": errLink},
			errs:   "e", read: []string{"abc_logs.log", "abc_errors.log"},
			warning: `msg="execution log file refused" file=abc_logs.log err="safefs: path goes through a symbolic link"`,
		},
		{
			name: "oversize", v: V5, logID: "abc",
			files: map[string]string{"abc_logs.log": big, "abc_errors.log": exact},
			logs:  big[:MaxLogFile] + "\nLog file has been truncated to 5.00MB.", errs: exact,
			read: []string{"abc_logs.log", "abc_errors.log"},
		},
		{
			name: "oversize errors", v: V5, logID: "abc",
			files: map[string]string{"abc_errors.log": big},
			errs:  big[:MaxLogFile] + "\nError file has been truncated to 5.00MB.",
			read:  []string{"abc_logs.log", "abc_errors.log"},
		},
		{name: "invalid id", v: V4, logID: "..%2Fetc%2Fpasswd", warning: `msg="runtime sent an invalid log id"`},
		{name: "invalid id dot", v: V4, logID: "a.b", warning: `msg="runtime sent an invalid log id"`},
		{name: "no id", v: V4, logID: "-"},
		{name: "empty id: logging disabled", v: V4, logID: ""},
		{name: "zero id", v: V5, logID: "0", files: map[string]string{"0_logs.log": "l"}},
		{name: "no log directory", v: V4, logID: "abc", noFiles: true},
		{name: "v3 has no files", v: V3, logID: "abc", files: map[string]string{"abc_logs.log": "l"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := runtimeServer(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.logID != "-" {
					w.Header()["X-Open-Runtimes-Log-Id"] = []string{tt.logID}
				}
			})
			c, lb := newClient(t)
			files := &fakeLogs{files: tt.files, refuse: tt.refuse}
			target := Target{Addr: addr, Version: tt.v, Logs: files}
			if tt.noFiles {
				target.Logs = nil
			}
			res, err := c.Execute(context.Background(), target, Request{Logging: true, Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.Logs != tt.logs || res.Errors != tt.errs {
				t.Errorf("logs %.60q errors %.60q, want %.60q %.60q", res.Logs, res.Errors, tt.logs, tt.errs)
			}
			if !slices.Equal(files.taken, tt.read) {
				t.Errorf("took %q, want %q", files.taken, tt.read)
			}
			logged := lb.String()
			if tt.warning == "" && logged != "" {
				t.Errorf("unexpected log: %s", logged)
			}
			if tt.warning != "" && !strings.Contains(logged, "level=WARN "+tt.warning) {
				t.Errorf("log %q lacks %q", logged, tt.warning)
			}
		})
	}
}

// TestLentLogID: the id the daemon lends reaches the runtime only where
// there are log files to write and logging is on; it takes the place of a
// caller's.
func TestLentLogID(t *testing.T) {
	tests := []struct {
		name    string
		v       Version
		lent    string
		logging bool
		caller  string // the caller's x-open-runtimes-log-id, "" none
		want    string // what the runtime sees, "" none
	}{
		{name: "v5", v: V5, lent: "e1a2b3c4-0", logging: true, want: "e1a2b3c4-0"},
		{name: "v4", v: V4, lent: "e1a2b3c4-7", logging: true, want: "e1a2b3c4-7"},
		{name: "none lent", v: V5, logging: true},
		{name: "none lent, the caller's", v: V5, logging: true, caller: "mine", want: "mine"},
		{name: "logging off", v: V5, lent: "e1a2b3c4-0"},
		{name: "v3: logs in headers", v: V3, lent: "e1a2b3c4-0", logging: true},
		{name: "v2", v: V2, lent: "e1a2b3c4-0", logging: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, reqs := runtimeServer(t, nil)
			c, _ := newClient(t)
			var headers map[string]string
			if tt.caller != "" {
				headers = map[string]string{"X-Open-Runtimes-Log-Id": tt.caller}
			}
			target := Target{Addr: addr, Version: tt.v, Logs: &fakeLogs{}, LogID: tt.lent}
			if _, err := c.Execute(context.Background(), target, Request{Logging: tt.logging, Headers: headers, Timeout: time.Second}); err != nil {
				t.Fatal(err)
			}
			if got := (<-reqs).header.Values("x-open-runtimes-log-id"); len(got) > 1 || strings.Join(got, "") != tt.want {
				t.Errorf("the runtime saw log id %q, want %q", got, tt.want)
			}
		})
	}
}
