package protocol

import (
	"errors"
	"io/fs"
)

// LogFiles is a runtime's log directory as the daemon reads it. The runtime
// writes there, so it can plant anything under any name: a link to a host
// file, a FIFO, a huge sparse file. An implementation must read only regular
// files reached without a link (the sandbox's is backed by safefs.Dir) and
// say so with an error otherwise. Names are relative to the directory
// ("<id>_logs.log").
type LogFiles interface {
	// ReadFile returns at most limit bytes of name and the file's size,
	// which may exceed limit. A missing file is an error matching
	// fs.ErrNotExist.
	ReadFile(name string, limit int64) (data []byte, size int64, err error)
	// Remove removes name (a link itself, never its target). It may do so
	// after it returns, so that the execution's answer does not wait; it
	// then reports a failure itself.
	Remove(name string) error
}

// readLogs reads and removes the execution's log files. The runtime names
// them with the id it answered, which is restricted to [A-Za-z0-9_-] so
// that it cannot name a file outside its logs directory.
func (c *Client) readLogs(files LogFiles, id string) (logs, errs string) {
	if !validLogID(id) {
		c.log().Warn("runtime sent an invalid log id")
		return "", ""
	}
	if files == nil {
		return "", ""
	}
	logs = c.readCapped(files, id+"_logs.log", LogsTruncatedNote)
	errs = c.readCapped(files, id+"_errors.log", ErrorsTruncatedNote)
	return logs, errs
}

func validLogID(id string) bool {
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// readCapped reads at most MaxLogFile bytes of name, appending note when the
// file held more, and removes it. A file the reader refuses gives no logs:
// what it points at is not the runtime's to show.
func (c *Client) readCapped(files LogFiles, name, note string) string {
	data, size, err := files.ReadFile(name, MaxLogFile)
	if rerr := files.Remove(name); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		c.log().Warn("cannot remove execution log file", "file", name, "err", rerr)
	}
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.log().Warn("execution log file refused", "file", name, "err", err)
		}
		return ""
	}
	if size > MaxLogFile {
		return string(data) + note
	}
	return string(data)
}
