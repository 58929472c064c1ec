package sandbox

import "strings"

// withWarnings puts the build-cache warnings before the output (after it for
// v2, as the reference does).
func (r *Runtime) withWarnings(spec Spec, entries []LogEntry) []LogEntry {
	r.mu.Lock()
	warnings := append([]LogEntry(nil), r.cacheWarnings...)
	r.mu.Unlock()
	if len(warnings) == 0 {
		return entries
	}
	if spec.Version.WarningsAfterOutput() {
		return append(entries, warnings...)
	}
	return append(warnings, entries...)
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// A rune cut in half at the end becomes invalid bytes, which go.
	return strings.ToValidUTF8(s[:n], "")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
