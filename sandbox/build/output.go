package build

import (
	"strings"
	"sync"
	"time"
)

// Entry is one chunk of build output, stamped with the time it was read.
type Entry struct {
	Timestamp time.Time
	Content   string
}

// MaxOutput is the reference's cap on build output, in bytes.
const MaxOutput = 1_000_000

const truncatedNotice = "Logs truncated due to size exceeding 5.00MB."

// Output collects a command's output as chunks stamped with the time they
// were read from the pipe, up to MaxOutput bytes. Followers wait on
// changed, which is closed and replaced at every change.
type Output struct {
	mu        sync.Mutex
	entries   []Entry
	size      int
	truncated bool
	finished  bool
	changed   chan struct{}
}

// NewOutput returns an empty output.
func NewOutput() *Output { return &Output{changed: make(chan struct{})} }

// FinishedOutput is the finished output of entries, as Snapshot gave them:
// a build's output kept across a restart of the daemon (live restore).
func FinishedOutput(entries []Entry) *Output {
	o := &Output{changed: make(chan struct{}), finished: true, entries: entries}
	for _, e := range entries {
		o.size += len(e.Content)
	}
	o.truncated = o.size >= MaxOutput
	return o
}

// notify wakes followers; o.mu must be held.
func (o *Output) notify() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// Finish marks the end of the output: followers drain what is left and stop.
func (o *Output) Finish() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.finished {
		o.finished = true
		o.notify()
	}
}

// Since returns the entries from index i on, whether the log is finished,
// and a channel closed at the next change.
func (o *Output) Since(i int) ([]Entry, bool, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []Entry
	if i < len(o.entries) {
		out = make([]Entry, len(o.entries)-i)
		for k, e := range o.entries[i:] {
			out[k] = Entry{Timestamp: e.Timestamp, Content: strings.ToValidUTF8(e.Content, "\uFFFD")}
		}
	}
	return out, o.finished, o.changed
}

// Write appends a chunk read from the build's pipes.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.truncated || len(p) == 0 {
		return len(p), nil
	}
	chunk := p
	if room := MaxOutput - o.size; len(chunk) > room {
		chunk = chunk[:room]
	}
	o.size += len(chunk)
	o.entries = append(o.entries, Entry{Timestamp: time.Now().UTC(), Content: string(chunk)})
	if o.size >= MaxOutput {
		o.truncated = true
		o.entries = append(o.entries, Entry{Timestamp: time.Now().UTC(), Content: truncatedNotice})
	}
	o.notify()
	return len(p), nil
}

// Add appends a line of the executor's own.
func (o *Output) Add(content string) {
	o.mu.Lock()
	o.entries = append(o.entries, Entry{Timestamp: time.Now().UTC(), Content: content})
	o.notify()
	o.mu.Unlock()
}

// Snapshot returns the entries with contents made valid UTF-8.
func (o *Output) Snapshot() []Entry {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]Entry, len(o.entries))
	for i, e := range o.entries {
		out[i] = Entry{Timestamp: e.Timestamp, Content: strings.ToValidUTF8(e.Content, "\uFFFD")}
	}
	return out
}

// Text is the entries' contents, joined.
func Text(entries []Entry) string {
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.Content)
	}
	return b.String()
}
