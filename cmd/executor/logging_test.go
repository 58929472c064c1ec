package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// streamID is f's "DEVICE:INODE", as systemd writes JOURNAL_STREAM.
func streamID(t *testing.T, f *os.File) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// logFile is a real file to log to, removed at the end of the test.
func logFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stderr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func readLines(t *testing.T, f *os.File) []string {
	t.Helper()
	data, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// TestLogHandlerJSON: every line is one JSON object with the time, level and message, and errors under err.
func TestLogHandlerJSON(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(logHandler(logFormatJSON, &buf, slog.LevelDebug, ""))
	log.With("component", "images").Error("image pull failed", "ref", "x/y:z", "err", errors.New("manifest unknown"))
	log.Info("line with\nnewline and \"quotes\"", "n", 3)
	log.Debug("debug")

	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	tests := []struct {
		level, msg string
		attrs      map[string]any
	}{
		{"ERROR", "image pull failed", map[string]any{"component": "images", "ref": "x/y:z", "err": "manifest unknown"}},
		{"INFO", "line with\nnewline and \"quotes\"", map[string]any{"n": float64(3)}},
		{"DEBUG", "debug", nil},
	}
	if len(lines) != len(tests) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(tests), buf.String())
	}
	for i, tt := range tests {
		var rec map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, lines[i])
		}
		if rec["level"] != tt.level || rec["msg"] != tt.msg || rec["time"] == nil {
			t.Errorf("line %d: level %v msg %q time %v, want %s %q", i, rec["level"], rec["msg"], rec["time"], tt.level, tt.msg)
		}
		for k, want := range tt.attrs {
			if rec[k] != want {
				t.Errorf("line %d: %s = %#v, want %#v", i, k, rec[k], want)
			}
		}
	}
}

// TestLogHandlerFormats: the configured format reaches the handler; text stays the default.
func TestLogHandlerFormats(t *testing.T) {
	for _, tt := range []struct {
		format, want string
	}{
		{"text", `level=INFO msg=hello`},
		{"json", `"level":"INFO","msg":"hello"`},
	} {
		t.Run(tt.format, func(t *testing.T) {
			c, err := loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_LOG_FORMAT": tt.format}))
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			slog.New(newLogHandler(c, &buf, new(slog.LevelVar))).Info("hello")
			if !strings.Contains(buf.String(), tt.want) {
				t.Errorf("got %q, want it to contain %q", buf.String(), tt.want)
			}
		})
	}
}

// TestLogHandlerJournalPriority: lines carry sd-daemon(3) priorities only when the writer is the very stream
// JOURNAL_STREAM names.
func TestLogHandlerJournalPriority(t *testing.T) {
	f := logFile(t)
	other := logFile(t)
	tests := []struct {
		name    string
		w       func() io.Writer
		stream  string
		journal bool
	}{
		{"stderr is the journal stream", func() io.Writer { return f }, streamID(t, f), true},
		{"no JOURNAL_STREAM", func() io.Writer { return f }, "", false},
		{"inherited by a process writing elsewhere", func() io.Writer { return f }, streamID(t, other), false},
		{"malformed", func() io.Writer { return f }, strings.Replace(streamID(t, f), ":", "-", 1), false},
		{"not a number", func() io.Writer { return f }, "x:" + strings.Split(streamID(t, f), ":")[1], false},
		{"a writer that is no file", func() io.Writer { return io.MultiWriter(f) }, streamID(t, f), false},
	}
	levels := []struct {
		level  slog.Level
		prefix string
	}{
		{slog.LevelDebug, "<7>"}, {slog.LevelInfo, "<6>"}, {slog.LevelWarn, "<4>"}, {slog.LevelError, "<3>"},
		// Levels between the named ones are never shown as more severe than they are.
		{slog.LevelInfo + 2, "<6>"}, {slog.LevelError + 4, "<3>"},
	}
	for _, format := range []string{logFormatText, logFormatJSON} {
		for _, tt := range tests {
			t.Run(format+"/"+tt.name, func(t *testing.T) {
				if err := f.Truncate(0); err != nil {
					t.Fatal(err)
				}
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					t.Fatal(err)
				}
				log := slog.New(logHandler(format, tt.w(), slog.LevelDebug, tt.stream))
				for _, l := range levels {
					log.Log(t.Context(), l.level, "m", "err", errors.New("e"))
				}
				lines := readLines(t, f)
				if len(lines) != len(levels) {
					t.Fatalf("%d lines, want %d: %q", len(lines), len(levels), lines)
				}
				for i, l := range levels {
					line := lines[i]
					if !tt.journal {
						if strings.HasPrefix(line, "<") {
							t.Errorf("line %d has a priority without journald: %s", i, line)
						}
						continue
					}
					rest, ok := strings.CutPrefix(line, l.prefix)
					if !ok {
						t.Errorf("line %d at %v: want prefix %s: %s", i, l.level, l.prefix, line)
						continue
					}
					if format == logFormatJSON && !json.Valid([]byte(rest)) {
						t.Errorf("line %d after its priority is not JSON: %s", i, rest)
					}
				}
			})
		}
	}
}

// TestLogHandlerJournalDerived: handlers made by With and WithGroup, used concurrently, each write whole lines
// with their own record's priority.
func TestLogHandlerJournalDerived(t *testing.T) {
	f := logFile(t)
	log := slog.New(logHandler(logFormatJSON, f, slog.LevelDebug, streamID(t, f)))
	loggers := []*slog.Logger{log, log.With("component", "api"), log.WithGroup("g").With("k", "v")}
	const perLogger = 200
	var wg sync.WaitGroup
	for i, l := range loggers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range perLogger {
				if n%2 == 0 {
					l.Warn("warn", "logger", i)
				} else {
					l.Debug("debug", "logger", i)
				}
			}
		}()
	}
	wg.Wait()
	lines := readLines(t, f)
	if len(lines) != len(loggers)*perLogger {
		t.Fatalf("%d lines, want %d", len(lines), len(loggers)*perLogger)
	}
	for _, line := range lines {
		var rec map[string]any
		prio, rest := line[:min(3, len(line))], line[min(3, len(line)):]
		if err := json.Unmarshal([]byte(rest), &rec); err != nil {
			t.Fatalf("not a priority and a JSON object: %q", line)
		}
		want := map[string]string{"WARN": "<4>", "DEBUG": "<7>"}[rec["level"].(string)]
		if prio != want {
			t.Fatalf("level %v with priority %s: %s", rec["level"], prio, line)
		}
	}
}

// TestLogHandlerLevelVar: the level is read at every record, so SIGHUP's change of the LevelVar applies at once.
func TestLogHandlerLevelVar(t *testing.T) {
	f := logFile(t)
	level := new(slog.LevelVar)
	level.Set(slog.LevelWarn)
	t.Setenv("JOURNAL_STREAM", streamID(t, f))
	log := slog.New(newLogHandler(&config{LogFormat: logFormatText}, f, level)).With("component", "sandbox")
	log.Info("hidden at warn")
	level.Set(slog.LevelDebug)
	log.Debug("shown at debug")
	level.Set(slog.LevelError)
	log.Warn("hidden at error")
	log.Error("shown at error")

	lines := readLines(t, f)
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "<7>") || !strings.Contains(lines[0], "shown at debug") ||
		!strings.HasPrefix(lines[1], "<3>") || !strings.Contains(lines[1], "shown at error") {
		t.Fatalf("lines %q, want the debug and the error record, with priorities", lines)
	}
}
