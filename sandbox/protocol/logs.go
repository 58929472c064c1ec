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
	// Take returns at most limit bytes of name and the file's size, which
	// may exceed limit, and frees the name, whatever it held or was: the
	// file is removed, or, when its id is the one the Target lent
	// (Target.LogID), emptied for a later execution to be given. A missing
	// file is an error matching fs.ErrNotExist. A removal may happen
	// after Take returns, so that the execution's answer does not wait;
	// the implementation then reports a failure itself.
	Take(name string, limit int64) (data []byte, size int64, err error)
}

// readLogs takes the execution's log files. The runtime names
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

// readCapped takes at most MaxLogFile bytes of name, appending note when the
// file held more. A file the reader refuses gives no logs: what it points
// at is not the runtime's to show.
func (c *Client) readCapped(files LogFiles, name, note string) string {
	data, size, err := files.Take(name, MaxLogFile)
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
